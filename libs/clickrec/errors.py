"""Exception classes. The CLI turns each into a clear message and a non-zero exit code."""

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


class TableNotFoundError(NotFoundError):
    """A Delta table asked for does not exist (yet); the message names the table, where it was
    looked for and, when given, the command that creates it."""

    def __init__(self, table: str, path: str, *, hint: str | None = None) -> None:
        self.table, self.path, self.hint = table, path, hint
        super().__init__(f"table {table} not found at {path}" + (f": {hint}" if hint else ""))
