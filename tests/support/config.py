"""Configs for tests: local[2], few shuffle partitions, UI off, everything under a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from clickrec.config import ClickrecConfig, build_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_config(tmp: Path, **sections: dict) -> ClickrecConfig:
    """A config for tests: local[2], few partitions, lake and MLflow under `tmp`."""
    data: dict = {
        "spark": {
            "master": "local[2]",
            "app_name": "clickrec-tests",
            "driver_memory": "3g",
            "shuffle_partitions": 2,
            "ui_enabled": False,
            "log_level": "ERROR",
            "checkpoint_dir": str(tmp / "checkpoints"),
            # Scratch (blockmgr-*, spark-*) under the test's folder, which pytest rotates:
            # a job the tests kill cannot clean up after itself.
            "conf": {"spark.local.dir": str(tmp / "spark-local")},
        },
        "lake": {"root": str(tmp / "lake")},
        "mlflow": {
            "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
            "artifact_location": str(tmp / "mlartifacts"),
        },
    }
    for name, values in sections.items():
        section = data.setdefault(name, {})
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(section.get(key), dict):
                section[key] = {**section[key], **value}
            else:
                section[key] = value
    return build_config(data)


def write_config_file(config: ClickrecConfig, path: Path) -> Path:
    """The config as YAML, for `clickrec ... --config` in a subprocess."""
    data: dict[str, Any] = json.loads(config.model_dump_json())
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
