"""Shared fixtures: one Spark session per run, a fresh lake per test, real services per run.

Only fixtures and hooks live here; helpers the tests import are in tests/support/.

Services (Kafka, MinIO, MLflow server) start lazily, once per test run, on free 127.0.0.1
ports, only when a test asks for them, and stop at the end of the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Plain asserts in the shared helpers report their values like the tests' own asserts.
pytest.register_assert_rewrite("tests.support")

from clickrec.config import ClickrecConfig  # noqa: E402
from clickrec.services import ServiceProcess, start_kafka, start_minio, start_mlflow  # noqa: E402
from tests.support.cli import run_cli  # noqa: E402
from tests.support.config import REPO_ROOT, make_config  # noqa: E402


def pytest_report_header(config: pytest.Config) -> str:
    """Free disk where the run writes: a nearly full disk fails services in confusing ways."""
    import shutil
    import tempfile

    free = {str(p): shutil.disk_usage(p).free / 1024**3 for p in (Path(tempfile.gettempdir()), REPO_ROOT)}
    return "free disk: " + ", ".join(f"{p} {gib:.1f} GiB" for p, gib in free.items())


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`clickrec ARGS` in this process (on the run's Spark session), from `cwd` (the repository)."""

    def run(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
        monkeypatch.chdir(cwd)
        return run_cli(list(args), capsys)

    return run


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def spark(session_tmp: Path):  # type: ignore[no-untyped-def]
    """The one Delta-enabled Spark session of the run, from the project's factory."""
    from clickrec.spark import build_spark_session

    session = build_spark_session(make_config(session_tmp))
    yield session
    session.stop()


@pytest.fixture()
def config(tmp_path: Path) -> ClickrecConfig:
    """A fresh lake (and SQLite MLflow store) for one test."""
    return make_config(tmp_path)


@pytest.fixture(scope="session")
def services_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def kafka_service(services_base: Path) -> Iterator[ServiceProcess]:
    svc = start_kafka(services_base)
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def minio_service(services_base: Path) -> Iterator[ServiceProcess]:
    svc = start_minio(services_base)
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def mlflow_service(services_base: Path, minio_service: ServiceProcess) -> Iterator[ServiceProcess]:
    svc = start_mlflow(services_base, minio_service)
    yield svc
    svc.stop()


@pytest.fixture()
def minio_env(minio_service: ServiceProcess, monkeypatch: pytest.MonkeyPatch) -> ServiceProcess:
    """Put the MinIO credentials in the environment, as a user's shell would have them."""
    for key, value in minio_service.env.items():
        monkeypatch.setenv(key, value)
    return minio_service


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder, so `-m unit` etc. select them without a marker on every test."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO_ROOT / "tests").parts
        if parts and parts[0] in {"unit", "integration", "services", "k8s", "e2e"}:
            item.add_marker(parts[0])


os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with pytest's own exit status once everything is reported and torn down.

    delta-rs' native runtime (used by the JVM-free serving reader) can abort the interpreter at
    teardown ("terminate called without an active exception") after the run has finished; that
    must not turn a reported result into exit code 134.
    """
    if _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
