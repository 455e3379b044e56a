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


def test_up_status_down_leaves_nothing(tmp_path: Path) -> None:
    up = _run(["up"], tmp_path)
    pids = {name: svc["pid"] for name, svc in up["services"].items()}
    assert set(pids) == {"kafka", "minio", "mlflow"}
    assert all(svc["running"] for svc in up["services"].values())
    env_text = Path(up["env_file"]).read_text()
    assert "CLICKREC_KAFKA_BOOTSTRAP=127.0.0.1:" in env_text and "AWS_SECRET_ACCESS_KEY=" in env_text
    assert oct(Path(up["env_file"]).stat().st_mode & 0o777) == "0o600"

    status = _run(["status"], tmp_path)
    assert all(status["services"][n]["running"] for n in pids)

    down = _run(["down"], tmp_path)
    assert sorted(down["stopped"]) == ["kafka", "minio", "mlflow"]
    for name, pid in pids.items():
        assert group_members(pid) == [], f"{name} left processes behind"
    status = _run(["status"], tmp_path)
    assert not any(s["running"] for s in status["services"].values())
