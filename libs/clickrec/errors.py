"""Exception classes. The CLI turns each into a clear message and a non-zero exit code.

The exit code comes from the base class (ConfigError and InputError 2, SetupError 3,
ServiceError 4, NotFoundError 5, ConcurrentWriteError 6); the JSON summary names the class
itself (`error_type`). A message raised from more than one place has its own subclass that
builds it from structured arguments, so each such message is written once.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of `exc`'s message (its type name when the message is empty), for one-line reports."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ClickrecError(Exception):
    """Base class for every error clickrec reports to its user."""

    exit_code = 1


class ConfigError(ClickrecError):
    """A config file, key or value is wrong; the message names the key."""

    exit_code = 2


class SetupError(ClickrecError):
    """Something `make setup` provides (venv, jars, service binaries) is missing."""

    exit_code = 3


class ServiceError(ClickrecError):
    """A local service (Kafka, MinIO, MLflow) could not be started, reached or stopped."""

    exit_code = 4


class NotFoundError(ClickrecError):
    """A model alias or version, a table or a variant asked for does not exist; the message names it."""

    exit_code = 5


class NotPublishedError(NotFoundError):
    """Gold has nothing to answer with yet (no table, or lists without their popular row):
    temporary, so the HTTP API says 503, not 404."""


class InputError(ClickrecError):
    """Input data or a command-line argument cannot be used; the message names it."""

    exit_code = 2


class ConcurrentWriteError(ClickrecError):
    """Concurrent writers kept winning the commit race on a table; a rerun is safe."""

    exit_code = 6


class ChampionUnavailableError(ClickrecError):
    """The registry names a champion whose model cannot be loaded (artifacts gone or unreadable)."""

    exit_code = 5

    def __init__(self, model_name: str, alias: str, version: int, cause: BaseException) -> None:
        self.model_name, self.alias, self.version = model_name, alias, version
        super().__init__(f"{model_name}@{alias} (v{version}) cannot be loaded: {first_line(cause)}")


# --- messages raised from more than one place: one class each, built from its arguments ---


class ConfigKeyError(ConfigError):
    """A config key's value cannot be used: `config key '<key>': <problem>`."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"config key '{key}': {problem}")


class IdsKeptCollidingError(ConcurrentWriteError):
    """Concurrent writers kept taking the new dense ids of an id index first."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path}: new ids kept colliding with a concurrent writer's; rerun the job")


class MlflowUnavailableError(ServiceError):
    """The MLflow tracking server or registry did not answer (a restart, a 5xx, no connection);
    worth trying again, unlike a model or alias that does not exist."""

    def __init__(self, tracking_uri: str, cause: BaseException, *, doing: str = "") -> None:
        self.tracking_uri = tracking_uri
        super().__init__(f"MLflow at {tracking_uri}: {doing + ': ' if doing else ''}{first_line(cause)}")


class StorageUnavailableError(ServiceError):
    """The lake's store (S3/MinIO over S3A or delta-rs, or the local disk) failed an I/O call:
    refused, timed out, unknown host; worth trying again, unlike a bug. The message is the
    store's own, which names the path and endpoint (clickrec.io.failures)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"storage I/O failed (worth retrying once the store answers): {detail}")


class ModelVersionNotFoundError(NotFoundError):
    """The registered model has no such alias or version."""

    def __init__(self, model_name: str, tracking_uri: str, *, alias: str | None = None,
                 version: int | None = None) -> None:
        self.model_name, self.alias, self.version = model_name, alias, version
        what = f"version {version}" if version is not None else f"alias '{alias}'"
        super().__init__(f"registered model '{model_name}' has no {what} in {tracking_uri} "
                         "(run `clickrec train` first, or pick --model-version from the registry)")


class ModelUnreadableError(NotFoundError):
    """A registered model version's files are gone or cannot be read."""

    def __init__(self, model_uri: str, cause: BaseException) -> None:
        self.model_uri = model_uri
        super().__init__(f"cannot load {model_uri}: {cause}")


class TableNotFoundError(NotFoundError):
    """A Delta table asked for does not exist (yet); the message names the table, where it was
    looked for and, when given, the command that creates it."""

    def __init__(self, table: str, path: str, *, hint: str | None = None) -> None:
        self.table, self.path, self.hint = table, path, hint
        super().__init__(f"table {table} not found at {path}" + (f": {hint}" if hint else ""))


class LeaseWaitTimeoutError(ServiceError):
    """A writer waited longer than allowed for another writer's lease on a table to end."""

    def __init__(self, resources: list[str], holders: list[str], waited_seconds: float) -> None:
        self.resources, self.holders, self.waited_seconds = resources, holders, waited_seconds
        super().__init__(
            f"waited {waited_seconds:.0f} s for {', '.join(holders)} to release {', '.join(resources)}; "
            "giving up (a holder that died stops blocking when its lease expires; "
            "stream.lease_wait_seconds sets the wait)"
        )


class LeaseWaitStopped(ClickrecError):
    """A wait for a lease ended because the waiting job was told to stop (SIGTERM)."""

    def __init__(self, resources: list[str]) -> None:
        self.resources = resources
        super().__init__(f"stopped while waiting for the leases on {', '.join(resources)}")


class SingleWriterError(ConcurrentWriteError):
    """s3.commit is single_writer and another writer (the stream) is live on the lake."""

    def __init__(self, job: str, holders: list[str]) -> None:
        self.job, self.holders = job, holders
        super().__init__(
            f"{job} refuses to start: s3.commit is single_writer and {', '.join(holders)} is writing to "
            "the lake (its heartbeat is live); stop the stream first, or use s3.commit: conditional_put "
            "on a store with conditional writes (AWS S3, MinIO), where both run together safely"
        )


class SnapshotReloadError(ServiceError):
    """The service could not bring its in-memory snapshot to the serving tables' newest versions;
    it keeps serving the snapshot it has, counts the failure and tries again at the next poll."""

    def __init__(self, table: str, versions: str, cause: BaseException) -> None:
        self.table, self.versions = table, versions
        super().__init__(f"reloading {table} at {versions} failed: {first_line(cause)}")
