"""No literal secret anywhere under k8s/ (nor in the deploy guide): only Secret references."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.support.k8s import K8S_DIR, REPO_ROOT, copy_tree, find_literal_secrets


def test_no_literal_secret_under_k8s() -> None:
    assert find_literal_secrets(K8S_DIR) == []


def test_no_literal_secret_in_the_deploy_guide(tmp_path: Path) -> None:
    guide = tmp_path / "docs"
    guide.mkdir()
    (guide / "deploy.md").write_text((REPO_ROOT / "docs" / "deploy.md").read_text(encoding="utf-8"))
    assert find_literal_secrets(guide) == []


def _edit_yaml(path: Path, edit: Callable[[dict], None]) -> None:
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    edit(docs[0])
    path.write_text(yaml.safe_dump_all(docs), encoding="utf-8")


def _plant_env_literal(root: Path) -> None:
    _edit_yaml(
        root / "spark-operator/base/defaults.yaml",
        lambda d: d["spec"]["pod"]["env"].append(
            {"name": "MLFLOW_TRACKING_PASSWORD", "value": "hunter2-is-not-a-password"}
        ),
    )


def _plant_spark_conf(root: Path) -> None:
    _edit_yaml(
        root / "spark-operator/base/apps/ingest.yaml",
        lambda d: (
            d["spec"]
            .setdefault("sparkConf", {})
            .update({"spark.hadoop.fs.s3a.secret.key": "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"})
        ),
    )


def _plant_secret_object(root: Path) -> None:
    (root / "spark-operator/base/s3-secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: clickrec-s3\n"
        "stringData:\n  AWS_ACCESS_KEY_ID: clickrec\n",
        encoding="utf-8",
    )


def _plant_access_key_in_dockerfile(root: Path) -> None:
    path = root / "image/Dockerfile"
    path.write_text(path.read_text() + "\nENV AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n")


def _plant_password_in_overlay(root: Path) -> None:
    path = root / "spark-operator/overlays/prod/kustomization.yaml"
    path.write_text(path.read_text() + "\n# mlflow_password = s3cr3t-Pa55w0rd-2026\n")


@pytest.mark.parametrize(
    "plant",
    [
        _plant_env_literal,
        _plant_spark_conf,
        _plant_secret_object,
        _plant_access_key_in_dockerfile,
        _plant_password_in_overlay,
    ],
)
def test_the_scanner_finds_a_planted_secret(tmp_path: Path, plant: Callable[[Path], None]) -> None:
    root = copy_tree(K8S_DIR, tmp_path / "k8s")
    assert find_literal_secrets(root) == []
    plant(root)
    findings = find_literal_secrets(root)
    assert findings, f"{plant.__name__} went unnoticed"
