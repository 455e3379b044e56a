"""The one MLflow module: every call to MLflow goes through a `Tracking` object.

A job builds one `Tracking` from its config (`Tracking(config.mlflow)`) and hands it to the
steps that log, register or load models. It holds the resolved tracking and registry URIs,
the experiment and the registered model's name. Registry and run look-ups go through its own
`MlflowClient` with those URIs; MLflow's fluent API (runs, model logging and loading), which
reads process-wide URIs, is pointed at them by the object itself before each such call.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clickrec.choices import ALIASES
from clickrec.config import MlflowConfig
from clickrec.errors import (
    ChampionUnavailableError,
    MlflowUnavailableError,
    ModelUnreadableError,
    ModelVersionNotFoundError,
    ServiceError,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

# MLflow reads its HTTP client's settings from these variables on every request
# (mlflow.utils.rest_utils.http_request), so a Tracking sets them from its config (one job, one
# Tracking) before it calls MLflow. The SIGTERM handler's calls get one short try each.
HTTP_TIMEOUT_VAR = "MLFLOW_HTTP_REQUEST_TIMEOUT"
HTTP_MAX_RETRIES_VAR = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
HTTP_BACKOFF_FACTOR_VAR = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
SIGTERM_HTTP = {HTTP_TIMEOUT_VAR: "3", HTTP_MAX_RETRIES_VAR: "0", HTTP_BACKOFF_FACTOR_VAR: "0"}

# MLflow 3 sends usage telemetry by default, fetching its config from the internet on first
# use. Jobs talk only to the services they are configured for (and run offline), so it is off
# unless the user's environment says otherwise. Set before MLflow is imported, below.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# The MLflow UI (3.x) opens an experiment on the tab its kind says: without this tag on an
# experiment with no runs yet it guesses GenAI and opens on the traces overview.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def _resolve_uri(uri: str) -> str:
    """Make a relative sqlite:/// path absolute so jobs work from any directory."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = Path(uri[len(prefix) :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return uri


def _is_absent(exc: Exception) -> bool:
    """True when an MLflow registry error says the model or the alias does not exist.

    The registry answers RESOURCE_DOES_NOT_EXIST for an unknown model and
    INVALID_PARAMETER_VALUE "Registered model alias ... not found." for an unset alias; a
    connection or server failure says neither.
    """
    code, text = getattr(exc, "error_code", ""), str(exc).lower()
    return code == "RESOURCE_DOES_NOT_EXIST" or (code == "INVALID_PARAMETER_VALUE" and "alias" in text
                                                  and "not found" in text)


# Status codes of a server that failed to answer for now (a restart, an overload, a proxy
# whose store is down), as opposed to a 4xx about the request itself.
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_TRANSIENT_ERROR_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "INTERNAL_ERROR"})
_BOTO_TRANSIENT = frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                             "ConnectionClosedError"})


def _is_transient(exc: BaseException) -> bool:
    """True when `exc`, or an exception it was raised from, says MLflow's server or artifact
    store did not answer: no connection, a timeout, a 5xx or 429 after MLflow's retries.

    A file or version that is really gone (a 404, FileNotFoundError, "No such artifact") and
    any other error are not transient. MLflow wraps a failed request in an MlflowException
    raised while handling the requests error, so the whole __cause__/__context__ chain counts.
    """
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        if _transient_link(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _transient_link(exc: BaseException) -> bool:
    import requests
    from mlflow.exceptions import RestException

    if isinstance(exc, requests.HTTPError):
        return exc.response is not None and exc.response.status_code in _TRANSIENT_STATUS
    if isinstance(exc, RestException):
        return exc.error_code in _TRANSIENT_ERROR_CODES or exc.get_http_status_code() in _TRANSIENT_STATUS
    if type(exc).__name__ in _BOTO_TRANSIENT and type(exc).__module__.startswith("botocore"):
        return True
    return isinstance(exc, requests.ConnectionError | requests.Timeout | requests.exceptions.RetryError
                      | requests.exceptions.ChunkedEncodingError | ConnectionError | TimeoutError)


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


def run_name(job: str, *words: str, at: datetime | None = None) -> str:
    """A run name that tells runs apart in the MLflow UI's list, e.g.
    `train clickrec-als stratified_random-20261207-161500` (UTC)."""
    stamp = (at or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{' '.join([job, *words])}-{stamp}"


def grid_point_name(point: dict[str, Any]) -> str:
    """A child run's name: its grid point, e.g. `rank=32 reg=0.05 alpha=10`."""
    short = {"regParam": "reg", "reg_param": "reg", "maxIter": "iter", "max_iter": "iter"}
    return " ".join(f"{short.get(k, k)}={v:g}" if isinstance(v, float) else f"{short.get(k, k)}={v}"
                    for k, v in point.items())


class Tracking:
    """MLflow for one config: its tracking and registry stores, experiment and registered model."""

    def __init__(self, settings: MlflowConfig, *, stream: bool = False) -> None:
        """`stream`: the stream's MLflow, with the tighter mlflow.stream_http_* settings."""
        self.settings = settings
        self.tracking_uri = _resolve_uri(settings.tracking_uri)
        self.registry_uri = _resolve_uri(settings.registry_uri) if settings.registry_uri else None
        self.model_name = settings.model_name
        self._client: MlflowClient | None = None
        timeout = settings.stream_http_timeout_seconds if stream else settings.http_timeout_seconds
        retries = settings.stream_http_max_retries if stream else settings.http_max_retries
        self.http_env = {HTTP_TIMEOUT_VAR: str(timeout), HTTP_MAX_RETRIES_VAR: str(retries),
                         HTTP_BACKOFF_FACTOR_VAR: str(settings.http_backoff_factor)}
        self._apply_http()

    def _apply_http(self) -> None:
        """Set MLflow's HTTP timeout and retries (process-wide variables, read per request) to
        this object's: a test process holds several Trackings in turn."""
        os.environ.update(self.http_env)

    @property
    def client(self) -> MlflowClient:
        self._apply_http()
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri,
                                         registry_uri=self.registry_uri or self.tracking_uri)
        return self._client

    def _use(self) -> None:
        """Point MLflow's fluent API (process-wide URIs) at this object's stores."""
        import mlflow

        self._apply_http()
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri or self.tracking_uri)

    def _unavailable(self, exc: BaseException, doing: str = "") -> MlflowUnavailableError:
        return MlflowUnavailableError(self.settings.tracking_uri, exc, doing=doing)

    # --- experiment and registry ------------------------------------------------------------

    def ensure_experiment(self) -> str:
        """The experiment id, creating it (with the configured artifact location) if needed.

        Tagged as a model-training experiment, so that the MLflow UI opens it on its runs.
        """
        settings = self.settings
        exp = self.client.get_experiment_by_name(settings.experiment)
        if exp is not None:
            exp_id = str(exp.experiment_id)
            if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                self.client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return exp_id
        location = settings.artifact_location
        tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        if location and not settings.tracking_uri.startswith(("http://", "https://", "databricks")):
            if "://" not in location:
                location = Path(location).resolve().as_uri()
            return str(self.client.create_experiment(settings.experiment, artifact_location=location, tags=tags))
        return str(self.client.create_experiment(settings.experiment, tags=tags))

    def alias_versions(self) -> dict[str, int | None]:
        """Model versions behind each alias of the registered model (None when unset).

        Raises MlflowUnavailableError (a ServiceError) when the registry cannot answer.
        """
        from mlflow.exceptions import MlflowException

        out: dict[str, int | None] = {}
        for alias in ALIASES:
            try:
                out[alias] = int(self.client.get_model_version_by_alias(self.model_name, alias).version)
            except MlflowException as exc:
                if not _is_absent(exc):  # an unreachable or failing registry is not "no champion"
                    raise self._unavailable(exc) from exc
                out[alias] = None
        return out

    def set_alias(self, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(self.model_name, alias, str(version))

    def resolve_model_version(self, *, alias: str | None = None, version: int | None = None) -> dict[str, Any]:
        """Name, version, run id and recorded input table versions of a registered model version.

        Give `version` (a rollback) or `alias` (default champion); the input versions come from
        the training run's `input.<table>.version` tags, else from the model's metadata, else
        are absent. Raises ModelVersionNotFoundError when the registry has no such alias or
        version, MlflowUnavailableError when it cannot answer.
        """
        from mlflow.exceptions import MlflowException

        alias = alias or "champion"
        try:
            if version is not None:
                mv = self.client.get_model_version(self.model_name, str(version))
            else:
                mv = self.client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException as exc:
            if not _is_absent(exc):  # an unreachable or failing registry is not "no such model"
                raise self._unavailable(exc) from exc
            raise ModelVersionNotFoundError(self.model_name, self.settings.tracking_uri,
                                            alias=alias, version=version) from exc
        inputs: dict[str, int] = {}
        if mv.run_id:
            try:
                tags = self.client.get_run(mv.run_id).data.tags
            except MlflowException as exc:
                if _is_transient(exc):  # not "a run without tags": the input versions would be lost
                    raise self._unavailable(exc) from exc
                tags = {}
            inputs = _input_versions(tags)
        if not inputs:
            try:
                import mlflow.models

                self._use()
                meta = mlflow.models.get_model_info(f"models:/{self.model_name}/{mv.version}").metadata or {}
            except (MlflowException, OSError) as exc:
                if _is_transient(exc):
                    raise self._unavailable(exc) from exc
                meta = {}
            inputs = _input_versions({k: str(v) for k, v in meta.items()})
        return {"model_name": self.model_name, "model_version": int(mv.version), "run_id": mv.run_id,
                "input_versions": inputs}

    def run_params(self, run_id: str) -> dict[str, str]:
        """The params logged on a run (empty when the run is gone): the stream reads regParam/alpha here.

        A registry that cannot be reached raises (MlflowUnavailableError) instead of looking
        like a run without params.
        """
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_run(run_id).data.params)
        except MlflowException as exc:
            if not _is_absent(exc):
                raise self._unavailable(exc) from exc
            return {}

    # --- loading models ---------------------------------------------------------------------

    def load_model_version(self, version: int) -> Any:
        """The ALSModel of registered version `version`.

        ModelUnreadableError (a NotFoundError) when the version or its files are gone or cannot
        be read; MlflowUnavailableError (a ServiceError) when the registry or the artifact store
        fails to answer (no connection, a timeout, a 5xx), and StorageUnavailableError when the
        files' store fails under Spark: both worth trying again.
        """
        import mlflow.spark

        uri = f"models:/{self.model_name}/{version}"
        self._use()
        try:
            model = mlflow.spark.load_model(uri)
        except Exception as exc:  # MLflow, requests, Spark and file-system errors alike
            raise self._load_failure(exc, uri) or ModelUnreadableError(uri, exc) from exc
        stages = getattr(model, "stages", None)
        return stages[-1] if stages else model

    def load_alias_model(self, alias: str) -> Any | None:
        """The ALSModel behind `alias`, or None when the alias is unset.

        Raises ChampionUnavailableError when the alias is set but its model is gone or cannot
        be read: a champion that cannot be scored is not "no champion" (train then does not
        promote). A registry or store that fails to answer for now raises MlflowUnavailableError
        or StorageUnavailableError (ServiceErrors, exit 4) instead: a blip is not a verdict on
        the champion.
        """
        import mlflow.spark

        version = self.alias_versions().get(alias)
        if version is None:
            return None
        uri = f"models:/{self.model_name}@{alias}"
        self._use()
        try:
            model = mlflow.spark.load_model(uri)
        except Exception as exc:  # MLflow, requests, Spark and file-system errors alike
            raise self._load_failure(exc, uri) or ChampionUnavailableError(
                self.model_name, alias, version, exc) from exc
        stages = getattr(model, "stages", None)
        return stages[-1] if stages else model

    def _load_failure(self, exc: Exception, uri: str) -> ServiceError | None:
        """The ServiceError a failed model load is (MLflow or the store did not answer), or None
        when the model itself is gone or unreadable."""
        if _is_transient(exc):
            return self._unavailable(exc, f"cannot load {uri}")
        from clickrec.io.failures import storage_error

        return storage_error(exc)  # S3A/Spark I/O under the load (a missing file is not one)

    # --- training runs ----------------------------------------------------------------------

    def start_parent_run(self, run_name: str, tags: dict[str, str]) -> Any:
        """Start the parent run of a training (a context manager, like mlflow.start_run)."""
        import mlflow

        exp_id = self.ensure_experiment()
        self._use()
        return mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags)

    def log_grid(
        self,
        points: list[dict[str, Any]],
        means: list[float],
        stds: list[float],
        metric: str,
        fixed_params: dict[str, Any],
    ) -> list[str]:
        """One nested child run per grid point, named after it, with its params and validation metric; run ids."""
        import mlflow

        parent = mlflow.active_run()
        if parent is None:
            raise RuntimeError("log_grid needs an active parent run")
        ids = []
        for point, mean, std in zip(points, means, stds, strict=True):
            # The child must name the parent's experiment: nested runs otherwise land in the default one.
            with mlflow.start_run(run_name=grid_point_name(point), nested=True,
                                  experiment_id=parent.info.experiment_id) as child:
                mlflow.log_params({**fixed_params, **point})
                mlflow.log_metrics({f"cv_{metric}": mean, f"cv_{metric}_std": std})
                ids.append(child.info.run_id)
        return ids

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        mlflow.log_params(params)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        import mlflow

        mlflow.log_metrics(metrics)

    def set_tags(self, tags: dict[str, Any]) -> None:
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_figure(self, figure: Any, name: str) -> None:
        """Log a matplotlib figure as a PNG artifact under plots/."""
        import matplotlib.pyplot as plt
        import mlflow

        mlflow.log_figure(figure, f"plots/{name}")
        plt.close(figure)

    def log_input_tables(self, tables: dict[str, tuple[str, int]]) -> None:
        """Record each input table's path and Delta version (tags, plus mlflow inputs) for time travel."""
        import mlflow
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]  # made at import time

        for name, (path, version) in tables.items():
            mlflow.set_tag(f"input.{name}.path", path)
            mlflow.set_tag(f"input.{name}.version", str(version))
            source = LocalArtifactDatasetSource(path) if "://" not in path else None
            if source is not None:
                # concrete at runtime; the type stubs see Dataset.profile as abstract
                dataset = MetaDataset(source=source, name=f"{name}@v{version}", digest=f"v{version}")  # type: ignore[abstract]
                mlflow.log_input(dataset, context="training", tags={"delta_version": str(version)})

    def log_spark_model(self, model: Any, metadata: dict[str, Any]) -> int:
        """Log the fitted ALSModel as an MLflow Spark model and register it; return the version."""
        import mlflow.spark
        import pyspark

        self._use()
        info = mlflow.spark.log_model(
            model,
            artifact_path="model",
            registered_model_name=self.model_name,
            metadata={k: str(v) for k, v in metadata.items()},
            # Given explicitly, MLflow skips inferring them, which starts a second Spark JVM in a
            # subprocess just to load the model and list its imports.
            pip_requirements=[f"pyspark=={pyspark.__version__}"],
        )
        version = info.registered_model_version
        if version is None:
            raise RuntimeError("MLflow did not return a registered model version")
        return int(version)


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
    os.environ.update(SIGTERM_HTTP)  # the process leaves at once: one short try per call
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        for run_id in ids:
            client.set_terminated(run_id, "KILLED")
            killed.append(run_id)
    except Exception as exc:  # the process is leaving anyway; say why the run stays RUNNING
        print(f"could not mark MLflow run(s) {ids} KILLED: {exc}", file=sys.stderr, flush=True)
    return killed
