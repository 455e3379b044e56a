"""The CLI's contract: --help, a JSON summary as the last stdout line, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def clickrec(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clickrec.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
    )


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_status_on_empty_lake(tmp_path: Path) -> None:
    result = clickrec(
        "status", "--config", "conf/local.yaml",
        "--set", f"lake.root={tmp_path / 'lake'}",
        "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    assert summary["ok"] is True
    tables = {t["table"]: t for t in summary["tables"]}
    assert set(tables) >= {"bronze/events", "bronze/quarantine", "silver/interactions",
                           "silver/user_index", "silver/item_index", "gold/recommendations",
                           "gold/popular_items"}
    assert all(t["exists"] is False and t["version"] is None for t in tables.values())
    assert summary["models"]["champion"] is None
    assert not (tmp_path / "mlflow.db").exists()  # status creates nothing


def test_status_with_repo_default_config() -> None:
    """The README's `clickrec status --config conf/local.yaml` runs as written."""
    result = clickrec("status", "--config", "conf/local.yaml")
    assert result.returncode == 0, result.stderr
    assert last_json(result.stdout)["command"] == "status"


def test_bad_config_key_exits_non_zero_naming_it() -> None:
    result = clickrec("status", "--set", "lake.rooot=/tmp/x")
    assert result.returncode == 2
    assert "lake.rooot" in result.stderr
    summary = last_json(result.stdout)
    assert summary["ok"] is False and "lake.rooot" in summary["error"]


def test_missing_config_file_is_clear() -> None:
    result = clickrec("status", "--config", "conf/missing.yaml")
    assert result.returncode == 2
    assert "conf/missing.yaml not found" in result.stderr


@pytest.mark.parametrize("command", [[], ["status"], ["services"], ["services", "up"],
                                     ["services", "down"], ["services", "status"]])
def test_help(command: list[str]) -> None:
    result = clickrec(*command, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout
