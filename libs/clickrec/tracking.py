"""The one MLflow module: every call to MLflow goes through here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clickrec.config import ClickrecConfig

ALIASES = ("champion", "challenger")


def _resolve_uri(uri: str) -> str:
    """Make a relative sqlite:/// path absolute so jobs work from any directory."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = Path(uri[len(prefix) :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return uri


def configure(config: ClickrecConfig) -> None:
    """Point the mlflow client at the configured tracking and registry stores."""
    import mlflow

    mlflow.set_tracking_uri(_resolve_uri(config.mlflow.tracking_uri))
    if config.mlflow.registry_uri:
        mlflow.set_registry_uri(_resolve_uri(config.mlflow.registry_uri))


def ensure_experiment(config: ClickrecConfig) -> str:
    """Return the experiment id, creating it (with the configured artifact location) if needed."""
    import mlflow

    configure(config)
    exp = mlflow.get_experiment_by_name(config.mlflow.experiment)
    if exp is not None:
        return str(exp.experiment_id)
    location = config.mlflow.artifact_location
    uri = config.mlflow.tracking_uri
    if location and not uri.startswith(("http://", "https://", "databricks")):
        if "://" not in location:
            location = Path(location).resolve().as_uri()
        return str(mlflow.create_experiment(config.mlflow.experiment, artifact_location=location))
    return str(mlflow.create_experiment(config.mlflow.experiment))


def alias_versions(config: ClickrecConfig) -> dict[str, Any]:
    """Model versions behind each alias of the registered model (None when unset)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    configure(config)
    client = MlflowClient()
    out: dict[str, Any] = {}
    for alias in ALIASES:
        try:
            mv = client.get_model_version_by_alias(config.mlflow.model_name, alias)
            out[alias] = int(mv.version)
        except MlflowException:
            out[alias] = None
    return out
