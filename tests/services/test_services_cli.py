"""`clickrec services up|status|down` as a user runs them, and nothing of ours left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from clickrec.services import group_members

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], state: Path) -> dict:
    env = {**os.environ, "CLICKREC_STATE": str(state)}
    result = subprocess.run([sys.executable, "-m", "clickrec.cli", "services", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=400, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_up_status_down_leaves_nothing_and_up_again(tmp_path: Path) -> None:
    """up, status, down; then a second `up` in the same checkout starts on the state the first
    left (Kafka's storage keeps the cluster id it was formatted with), topics included."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    up = _run(["up"], tmp_path)
    pids = {name: svc["pid"] for name, svc in up["services"].items()}
    assert set(pids) == {"kafka", "minio", "mlflow"}
    assert all(svc["running"] for svc in up["services"].values())
    env_text = Path(up["env_file"]).read_text()
    assert "CLICKREC_KAFKA_BOOTSTRAP=127.0.0.1:" in env_text and "AWS_SECRET_ACCESS_KEY=" in env_text
    assert oct(Path(up["env_file"]).stat().st_mode & 0o777) == "0o600"
    admin = KafkaAdminClient(bootstrap_servers=up["services"]["kafka"]["url"])
    try:
        admin.create_topics([NewTopic("kept-across-restarts", num_partitions=1, replication_factor=1)])
    finally:
        admin.close()

    status = _run(["status"], tmp_path)
    assert all(status["services"][n]["running"] for n in pids)

    down = _run(["down"], tmp_path)
    assert sorted(down["stopped"]) == ["kafka", "minio", "mlflow"]
    for name, pid in pids.items():
        assert group_members(pid) == [], f"{name} left processes behind"
    status = _run(["status"], tmp_path)
    assert not any(s["running"] for s in status["services"].values())

    again = _run(["up"], tmp_path)
    assert all(svc["running"] for svc in again["services"].values()), again
    admin = KafkaAdminClient(bootstrap_servers=again["services"]["kafka"]["url"])
    try:
        assert "kept-across-restarts" in admin.list_topics()
    finally:
        admin.close()
    down = _run(["down"], tmp_path)
    assert sorted(down["stopped"]) == ["kafka", "minio", "mlflow"]
    for name, svc in again["services"].items():
        assert group_members(svc["pid"]) == [], f"{name} left processes behind"
