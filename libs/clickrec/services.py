"""Real local services on 127.0.0.1: Kafka (KRaft), MinIO and an MLflow tracking server.

The same start functions serve `clickrec services up` (detached, state in `.clickrec/services`)
and the pytest fixtures (one of each per test run). Each waits for readiness with a timeout and
fails with the log's tail. `down` stops only the processes `up` recorded, by process group, and
checks each pid's start time first so that a recycled pid is never signalled.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clickrec import paths
from clickrec.errors import ServiceError, SetupError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SERVICE_NAMES = ("kafka", "minio", "mlflow")
MLFLOW_BUCKET = "mlflow"
LAKE_BUCKET = "clickrec"
READY_TIMEOUT_S = 90.0


@dataclass
class ServiceProcess:
    """A started service: its process group, ports and log file."""

    name: str
    pid: int
    start_ticks: int
    ports: dict[str, int]
    url: str
    log_path: str
    data_dir: str
    env: dict[str, str] = field(default_factory=dict)

    def alive(self) -> bool:
        """True while the recorded process (same pid and start time) still runs."""
        return _start_ticks(self.pid) == self.start_ticks

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after `timeout` seconds."""
        if not self.alive():
            _reap(self.pid)
            return
        _signal_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(self.pid)
            if not self.alive() and not group_members(self.pid):
                return
            time.sleep(0.2)
        _signal_group(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (self.alive() or group_members(self.pid)):
            _reap(self.pid)
            time.sleep(0.1)


# --- process helpers ------------------------------------------------------------------------


def _start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22), None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie is as good as gone
        return None
    return int(fields[19])


def group_members(pgid: int) -> list[int]:
    """Pids of live processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def free_port(host: str = HOST) -> int:
    """A port on `host` (127.0.0.1 unless told) that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(port: int, what: str, host: str = HOST) -> None:
    """Fail clearly when `port` on `host` (127.0.0.1 unless told) is taken.

    Bound as the servers bind (SO_REUSEADDR): connections of a stopped server left in
    TIME_WAIT do not take the port from its restart, a listening server does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServiceError(f"{what}: port {port} on {host} is taken ({exc.strerror})") from None


def log_tail(path: str | Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _spawn(name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "ab") as out:
        try:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                start_new_session=True,  # own process group: `down` stops it and its children
                close_fds=True,
            )
        except FileNotFoundError as exc:
            raise ServiceError(f"{name}: cannot run {argv[0]}: {exc}") from exc
    return proc.pid


def _wait_ready(
    name: str, pid: int, log_path: Path, probe: Callable[[], bool], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if _start_ticks(pid) is None:
            raise ServiceError(f"{name} exited before it was ready; log {log_path}:\n{log_tail(log_path)}")
        try:
            if probe():
                return
        except OSError:
            pass
        time.sleep(0.3)
    _signal_group(pid, signal.SIGKILL)
    raise ServiceError(
        f"{name} was not ready after {timeout:.0f}s; log {log_path}:\n{log_tail(log_path)}"
    )


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _tcp_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


# --- Kafka --------------------------------------------------------------------------------------


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise ServiceError("kafka: java not found on PATH; Java 17 is a prerequisite (see README)")
    return java


def kafka_cluster_id() -> str:
    """A random KRaft cluster id (base64url of 16 random bytes, as kafka-storage random-uuid).

    Like Kafka's Uuid.randomUuid, never one starting with '-': kafka-storage's argument parser
    would take it for an option ("--cluster-id: expected one argument"), 1 time in 64.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def formatted_cluster_id(logs_dir: Path) -> str | None:
    """The cluster id that Kafka's storage in `logs_dir` was formatted with (None: not formatted).

    A broker only starts on storage formatted with its own cluster id, so a restart on the same
    folder (`services up` after `services down`) formats with this one, keeping the topics.
    """
    try:
        text = (logs_dir / "meta.properties").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "cluster.id" and value.strip():
            return value.strip()
    return None


def kafka_properties(data_dir: Path, port: int, controller_port: int, host: str = HOST) -> str:
    """server.properties for a single-node KRaft broker+controller: the broker listens on (and
    advertises) `host`, the controller on loopback."""
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{HOST}:{controller_port}",
            f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{HOST}:{controller_port}",
            f"advertised.listeners=PLAINTEXT://{host}:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data_dir / 'logs'}",
            "num.partitions=1",
            "auto.create.topics.enable=true",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=168",
            "",
        ]
    )


LOG4J2 = """\
status = error
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRefs = stdout
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


def start_kafka(
    base_dir: Path, port: int | None = None, timeout: float = READY_TIMEOUT_S, host: str = HOST
) -> ServiceProcess:
    """Format (once: a restart reuses the storage's cluster id) and start a single-node KRaft
    Kafka from the jars cached by setup, its broker on `host`."""
    jars = paths.jars_dir("kafka")
    if not any(jars.glob("kafka_2.13-*.jar")):
        raise SetupError(f"kafka: broker jars not found in {jars}: run `make setup`")
    java = _java()
    port = port or free_port(host)
    check_port_free(port, "kafka", host)
    controller_port = free_port()
    data_dir = base_dir / "kafka"
    data_dir.mkdir(parents=True, exist_ok=True)
    props = data_dir / "server.properties"
    props.write_text(kafka_properties(data_dir, port, controller_port, host))
    log4j = data_dir / "log4j2.properties"
    log4j.write_text(LOG4J2)
    log_path = data_dir / "kafka.log"
    cp = f"{jars}/*"
    jvm = ["-Xms256m", "-Xmx768m", f"-Dlog4j2.configurationFile={log4j}", "-Djava.awt.headless=true"]
    cluster_id = formatted_cluster_id(data_dir / "logs") or kafka_cluster_id()
    fmt = subprocess.run(
        [java, *jvm, "-cp", cp, "kafka.tools.StorageTool", "format", "--ignore-formatted",
         "-t", cluster_id, "-c", str(props)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if fmt.returncode != 0:
        raise ServiceError(f"kafka: storage format failed:\n{fmt.stdout[-2000:]}{fmt.stderr[-2000:]}")
    pid = _spawn("kafka", [java, *jvm, "-cp", cp, "kafka.Kafka", str(props)], log_path)

    def ready() -> bool:
        if not _tcp_open(port, host):
            return False
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=f"{host}:{port}", request_timeout_ms=3000)
        try:
            admin.list_topics()
            return True
        finally:
            admin.close()

    try:
        _wait_ready("kafka", pid, log_path, lambda: _quiet(ready), timeout)
    except ServiceError:
        _signal_group(pid, signal.SIGKILL)
        raise
    return ServiceProcess(
        name="kafka",
        pid=pid,
        start_ticks=_start_ticks(pid) or 0,
        ports={"broker": port, "controller": controller_port},
        url=f"{host}:{port}",
        log_path=str(log_path),
        data_dir=str(data_dir),
    )


def _quiet(probe: Callable[[], bool]) -> bool:
    try:
        return probe()
    except Exception:
        return False


# --- MinIO --------------------------------------------------------------------------------------


def minio_binary() -> Path:
    """Path of the MinIO server built at setup; SetupError when it is missing."""
    binary = paths.bin_dir() / "minio"
    if not binary.is_file():
        raise SetupError(f"minio: server binary not found at {binary}: run `make setup` (needs Go)")
    return binary


def start_minio(
    base_dir: Path,
    port: int | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    buckets: Iterable[str] = (MLFLOW_BUCKET, LAKE_BUCKET),
    timeout: float = READY_TIMEOUT_S,
    host: str = HOST,
) -> ServiceProcess:
    """Start a MinIO server on `host` with fresh random credentials and create `buckets`."""
    binary = minio_binary()
    port = port or free_port(host)
    check_port_free(port, "minio", host)
    console_port = free_port()
    access_key = access_key or "clickrec-" + secrets.token_hex(4)
    secret_key = secret_key or secrets.token_urlsafe(24)
    data_dir = base_dir / "minio"
    (data_dir / "data").mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "minio.log"
    env = {
        "MINIO_ROOT_USER": access_key,
        "MINIO_ROOT_PASSWORD": secret_key,
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
        "MINIO_CI_CD": "1",
    }
    pid = _spawn(
        "minio",
        [str(binary), "server", str(data_dir / "data"), "--quiet", "--address", f"{host}:{port}",
         "--console-address", f"{HOST}:{console_port}"],
        log_path,
        env,
    )
    url = f"http://{host}:{port}"
    try:
        _wait_ready("minio", pid, log_path, lambda: _http_ok(f"{url}/minio/health/ready"), timeout)
        from minio import Minio

        client = Minio(f"{host}:{port}", access_key=access_key, secret_key=secret_key, secure=False)
        for bucket in buckets:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
    except Exception:
        _signal_group(pid, signal.SIGKILL)
        raise
    return ServiceProcess(
        name="minio",
        pid=pid,
        start_ticks=_start_ticks(pid) or 0,
        ports={"api": port, "console": console_port},
        url=url,
        log_path=str(log_path),
        data_dir=str(data_dir),
        env={"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key},
    )


# --- MLflow -------------------------------------------------------------------------------------


def start_mlflow(
    base_dir: Path,
    minio: ServiceProcess,
    port: int | None = None,
    timeout: float = READY_TIMEOUT_S,
    host: str = HOST,
) -> ServiceProcess:
    """Start `mlflow server` on `host`: SQLite backend store, artifacts proxied to MinIO's mlflow bucket."""
    port = port or free_port(host)
    check_port_free(port, "mlflow", host)
    data_dir = base_dir / "mlflow"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "mlflow.log"
    env = {
        **minio.env,
        "MLFLOW_S3_ENDPOINT_URL": minio.url,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_DISABLE_TELEMETRY": "true",  # a local server reports nothing out
    }
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{data_dir / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/artifacts",
        "--host", host, "--port", str(port), "--workers", "1",
    ]
    pid = _spawn("mlflow", argv, log_path, env)
    url = f"http://{host}:{port}"
    _wait_ready("mlflow", pid, log_path, lambda: _http_ok(f"{url}/health"), timeout)
    return ServiceProcess(
        name="mlflow",
        pid=pid,
        start_ticks=_start_ticks(pid) or 0,
        ports={"http": port},
        url=url,
        log_path=str(log_path),
        data_dir=str(data_dir),
    )


# --- `clickrec services up|down|status` ---------------------------------------------------------


def services_dir() -> Path:
    """Folder of the services started by `clickrec services up`."""
    return paths.state_dir() / "services"


def state_file() -> Path:
    return services_dir() / "state.json"


def env_file() -> Path:
    """Shell file with the variables conf/stack.yaml reads (mode 600: it holds credentials)."""
    return services_dir() / "services.env"


def read_state() -> dict[str, ServiceProcess]:
    """The services recorded by `up` (empty when none)."""
    path = state_file()
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text())
    return {name: ServiceProcess(**svc) for name, svc in raw.items()}


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read, from its first byte (it holds MinIO's keys)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    tmp.replace(path)


def _write_state(state: dict[str, ServiceProcess]) -> None:
    services_dir().mkdir(parents=True, exist_ok=True)
    write_private(state_file(), json.dumps({n: asdict(s) for n, s in state.items()}, indent=2))
    write_private(env_file(), env_lines(state) + "\n")


def env_lines(state: dict[str, ServiceProcess]) -> str:
    """`export` lines for conf/stack.yaml's ${...} references."""
    lines = []
    if "kafka" in state:
        lines.append(f"export CLICKREC_KAFKA_BOOTSTRAP={state['kafka'].url}")
    if "minio" in state:
        lines.append(f"export CLICKREC_S3_ENDPOINT={state['minio'].url}")
        for key, value in state["minio"].env.items():
            lines.append(f"export {key}={value}")
    if "mlflow" in state:
        lines.append(f"export CLICKREC_MLFLOW_URI={state['mlflow'].url}")
    return "\n".join(lines)


def public_state(state: dict[str, ServiceProcess]) -> dict[str, Any]:
    """State without credentials, for JSON summaries."""
    return {
        "services": {
            n: {"pid": s.pid, "url": s.url, "ports": s.ports, "log": s.log_path, "running": s.alive()}
            for n, s in state.items()
        },
        "env_file": str(env_file()),
    }


def up(only: Iterable[str] | None = None) -> dict[str, ServiceProcess]:
    """Start the services not already running; return the whole recorded state."""
    wanted = list(only or SERVICE_NAMES)
    unknown = [w for w in wanted if w not in SERVICE_NAMES]
    if unknown:
        raise ServiceError(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICE_NAMES)}")
    if "mlflow" in wanted and "minio" not in wanted:
        wanted.insert(0, "minio")  # the MLflow server keeps its artifacts on MinIO
    state = {n: s for n, s in read_state().items() if s.alive()}
    base = services_dir()
    try:
        for name in SERVICE_NAMES:
            if name not in wanted or name in state:
                continue
            log.info("starting %s", name)
            if name == "kafka":
                state[name] = start_kafka(base)
            elif name == "minio":
                state[name] = start_minio(base)
            else:
                state[name] = start_mlflow(base, state["minio"])
            _write_state(state)
            log.info("%s ready at %s", name, state[name].url)
    finally:
        _write_state(state)
    return state


def down() -> list[str]:
    """Stop every service `up` recorded; return the names stopped."""
    state = read_state()
    stopped = []
    for name in reversed(SERVICE_NAMES):
        svc = state.get(name)
        if svc is None:
            continue
        log.info("stopping %s (pid %d)", name, svc.pid)
        svc.stop()
        stopped.append(name)
    if state_file().exists():
        state_file().unlink()
    if env_file().exists():
        env_file().unlink()
    return stopped


def status() -> dict[str, Any]:
    """Which recorded services are running, with their URLs."""
    state = read_state()
    out = public_state(state)
    out["services"] = {
        n: out["services"].get(n, {"running": False}) for n in SERVICE_NAMES
    }
    return out
