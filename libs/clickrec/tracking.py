"""The one MLflow module: every call to MLflow goes through here."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from clickrec.config import ClickrecConfig
from clickrec.errors import first_line

ALIASES = ("champion", "challenger")

# MLflow 3 sends usage telemetry by default, fetching its config from the internet on first
# use. Jobs talk only to the services they are configured for (and run offline), so it is off
# unless the user's environment says otherwise. Set before MLflow is imported, below.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


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
    """Model versions behind each alias of the registered model (None when unset).

    Raises ServiceError when the registry cannot answer.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from clickrec.errors import ServiceError

    configure(config)
    client = MlflowClient()
    out: dict[str, Any] = {}
    for alias in ALIASES:
        try:
            mv = client.get_model_version_by_alias(config.mlflow.model_name, alias)
            out[alias] = int(mv.version)
        except MlflowException as exc:
            if not _is_absent(exc):  # an unreachable or failing registry is not "no champion"
                raise ServiceError(f"MLflow at {config.mlflow.tracking_uri}: {first_line(exc)}") from exc
            out[alias] = None
    return out


def _is_absent(exc: Exception) -> bool:
    """True when an MLflow registry error says the model or the alias does not exist.

    The registry answers RESOURCE_DOES_NOT_EXIST for an unknown model and
    INVALID_PARAMETER_VALUE "Registered model alias ... not found." for an unset alias; a
    connection or server failure says neither.
    """
    code, text = getattr(exc, "error_code", ""), str(exc).lower()
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "alias" in text
                                                  and "not found" in text)


# --- training runs --------------------------------------------------------------------------


def start_parent_run(config: ClickrecConfig, run_name: str, tags: dict[str, str]) -> Any:
    """Start the parent run of a training (a context manager, like mlflow.start_run)."""
    import mlflow

    exp_id = ensure_experiment(config)
    return mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags)


def kill_active_runs() -> list[str]:
    """Mark this thread's active MLflow run, and its parent, KILLED; their ids. Never raises.

    For a SIGTERM handler: a client with explicit URIs (the registry is not used), so that
    nothing asks the Spark session for settings over py4j in the middle of another call.
    """
    import mlflow
    from mlflow import MlflowClient

    run = mlflow.active_run()
    if run is None:
        return []
    uri = mlflow.get_tracking_uri()
    ids = [run.info.run_id]
    parent = run.data.tags.get("mlflow.parentRunId")
    if parent:
        ids.append(parent)
    killed = []
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        for run_id in ids:
            client.set_terminated(run_id, "KILLED")
            killed.append(run_id)
    except Exception as exc:  # the process is leaving anyway; say why the run stays RUNNING
        print(f"could not mark MLflow run(s) {ids} KILLED: {exc}", file=sys.stderr, flush=True)
    return killed


def log_grid(
    points: list[dict[str, Any]],
    means: list[float],
    stds: list[float],
    metric: str,
    fixed_params: dict[str, Any],
) -> list[str]:
    """One nested child run per grid point with its params and validation metric; run ids."""
    import mlflow

    parent = mlflow.active_run()
    if parent is None:
        raise RuntimeError("log_grid needs an active parent run")
    ids = []
    for i, (point, mean, std) in enumerate(zip(points, means, stds, strict=True)):
        # The child must name the parent's experiment: nested runs otherwise land in the default one.
        with mlflow.start_run(run_name=f"grid-{i:02d}", nested=True,
                              experiment_id=parent.info.experiment_id) as child:
            mlflow.log_params({**fixed_params, **point})
            mlflow.log_metrics({f"cv_{metric}": mean, f"cv_{metric}_std": std})
            ids.append(child.info.run_id)
    return ids


def log_params(params: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params(params)


def log_metrics(metrics: dict[str, float]) -> None:
    import mlflow

    mlflow.log_metrics(metrics)


def set_tags(tags: dict[str, Any]) -> None:
    import mlflow

    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_figure(figure: Any, name: str) -> None:
    """Log a matplotlib figure as a PNG artifact under plots/."""
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(figure, f"plots/{name}")
    plt.close(figure)


def log_dict(data: dict[str, Any], name: str) -> None:
    import mlflow

    mlflow.log_dict(data, name)


def log_input_tables(tables: dict[str, tuple[str, int]]) -> None:
    """Record each input table's path and Delta version (tags, plus mlflow inputs) for time travel."""
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    for name, (path, version) in tables.items():
        mlflow.set_tag(f"input.{name}.path", path)
        mlflow.set_tag(f"input.{name}.version", str(version))
        source = LocalArtifactDatasetSource(path) if "://" not in path else None
        if source is not None:
            dataset = MetaDataset(source=source, name=f"{name}@v{version}", digest=f"v{version}")
            mlflow.log_input(dataset, context="training", tags={"delta_version": str(version)})


def log_spark_model(model: Any, config: ClickrecConfig, metadata: dict[str, Any]) -> int:
    """Log the fitted ALSModel as an MLflow Spark model and register it; return the version."""
    import mlflow.spark
    import pyspark

    info = mlflow.spark.log_model(
        model,
        artifact_path="model",
        registered_model_name=config.mlflow.model_name,
        metadata={k: str(v) for k, v in metadata.items()},
        # Given explicitly, MLflow skips inferring them, which starts a second Spark JVM in a
        # subprocess just to load the model and list its imports.
        pip_requirements=[f"pyspark=={pyspark.__version__}"],
    )
    version = info.registered_model_version
    if version is None:
        raise RuntimeError("MLflow did not return a registered model version")
    return int(version)


def set_alias(config: ClickrecConfig, alias: str, version: int) -> None:
    from mlflow import MlflowClient

    configure(config)
    MlflowClient().set_registered_model_alias(config.mlflow.model_name, alias, str(version))


def load_alias_model(config: ClickrecConfig, alias: str) -> Any | None:
    """The ALSModel behind `alias`, or None when the alias is unset.

    Raises ChampionUnavailableError when the alias is set but its model cannot be loaded: a
    champion that cannot be scored is not "no champion" (train then does not promote).
    """
    import mlflow.spark

    from clickrec.errors import ChampionUnavailableError

    configure(config)
    version = alias_versions(config).get(alias)
    if version is None:
        return None
    try:
        model = mlflow.spark.load_model(f"models:/{config.mlflow.model_name}@{alias}")
    except Exception as exc:  # MLflow, Spark and file-system errors alike
        raise ChampionUnavailableError(
            f"{config.mlflow.model_name}@{alias} (v{version}) cannot be loaded: {first_line(exc)}"
        ) from exc
    stages = getattr(model, "stages", None)
    return stages[-1] if stages else model


# --- publishing -----------------------------------------------------------------------------


def resolve_model_version(config: ClickrecConfig, *, alias: str | None = None,
                          version: int | None = None) -> dict[str, Any]:
    """Name, version, run id and recorded input table versions of a registered model version.

    Give `version` (a rollback) or `alias`; the input versions come from the training run's
    `input.<table>.version` tags, else from the model's metadata, else are absent. Raises
    NotFoundError naming the alias or version when the registry has none.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from clickrec.errors import NotFoundError, ServiceError

    configure(config)
    client = MlflowClient()
    name = config.mlflow.model_name
    try:
        if version is not None:
            mv = client.get_model_version(name, str(version))
        else:
            mv = client.get_model_version_by_alias(name, alias or "champion")
    except MlflowException as exc:
        if not _is_absent(exc):  # an unreachable or failing registry is not "no such model"
            raise ServiceError(f"MLflow registry at {config.mlflow.tracking_uri}: {first_line(exc)}") from exc
        what = f"version {version}" if version is not None else f"alias '{alias or 'champion'}'"
        raise NotFoundError(
            f"registered model '{name}' has no {what} in {config.mlflow.tracking_uri} "
            "(run `clickrec train` first, or pick --model-version from the registry)"
        ) from exc
    inputs: dict[str, int] = {}
    if mv.run_id:
        try:
            tags = client.get_run(mv.run_id).data.tags
        except MlflowException:
            tags = {}
        inputs = _input_versions(tags)
    if not inputs:
        try:
            import mlflow.models

            meta = mlflow.models.get_model_info(f"models:/{name}/{mv.version}").metadata or {}
        except (MlflowException, OSError):
            meta = {}
        inputs = _input_versions({k: str(v) for k, v in meta.items()})
    return {"model_name": name, "model_version": int(mv.version), "run_id": mv.run_id,
            "input_versions": inputs}


def _input_versions(tags: dict[str, str]) -> dict[str, int]:
    """{table: version} from `input.<table>.version` keys."""
    out = {}
    for key, value in tags.items():
        if key.startswith("input.") and key.endswith(".version"):
            try:
                out[key[len("input.") : -len(".version")]] = int(value)
            except ValueError:
                continue
    return out


def load_model_version(config: ClickrecConfig, version: int) -> Any:
    """The ALSModel of registered version `version`.

    NotFoundError when the version or its files are gone; ServiceError when the registry or
    the artifact store fails to answer (a restart, a 5xx), which is worth trying again.
    """
    import mlflow.spark
    from mlflow.exceptions import MlflowException

    from clickrec.errors import NotFoundError, ServiceError

    configure(config)
    uri = f"models:/{config.mlflow.model_name}/{version}"
    try:
        model = mlflow.spark.load_model(uri)
    except MlflowException as exc:
        if not _is_absent(exc):
            raise ServiceError(f"cannot load {uri} from MLflow at {config.mlflow.tracking_uri}: "
                               f"{first_line(exc)}") from exc
        raise NotFoundError(f"cannot load {uri}: {exc}") from exc
    except OSError as exc:
        raise NotFoundError(f"cannot load {uri}: {exc}") from exc
    stages = getattr(model, "stages", None)
    return stages[-1] if stages else model


# --- streaming fold-in ------------------------------------------------------------------------


def run_params(config: ClickrecConfig, run_id: str) -> dict[str, str]:
    """The params logged on a run (empty when the run is gone): the stream reads regParam/alpha here.

    A registry that cannot be reached raises (ServiceError) instead of looking like a run
    without params.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from clickrec.errors import ServiceError

    configure(config)
    try:
        return dict(MlflowClient().get_run(run_id).data.params)
    except MlflowException as exc:
        if not _is_absent(exc):
            raise ServiceError(f"MLflow at {config.mlflow.tracking_uri}: {first_line(exc)}") from exc
        return {}
