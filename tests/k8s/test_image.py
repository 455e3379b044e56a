"""The image definition agrees with the manifests, and `make image` fails clearly without Docker."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import yaml

from tests.support.k8s import BASE_DIR, DOCKERFILE, REPO_ROOT, dockerfile_instructions, pinned

DEFAULTS = yaml.safe_load((BASE_DIR / "defaults.yaml").read_text(encoding="utf-8"))["spec"]


def _copies() -> dict[str, str]:
    """COPY source -> destination (stage copies with --from excluded)."""
    out = {}
    for word, args in dockerfile_instructions():
        if word == "COPY" and "--from=" not in args:
            *sources, dest = [a for a in args.split() if not a.startswith("--")]
            for source in sources:
                out[source] = dest
    return out


def test_the_runtime_is_apache_spark_of_the_manifests_version() -> None:
    args = dict(a.split("=", 1) for w, a in dockerfile_instructions() if w == "ARG" and "=" in a)
    assert re.fullmatch(
        rf"apache/spark:{re.escape(DEFAULTS['sparkVersion'])}-scala2\.13-java17-python3-ubuntu",
        args["SPARK_IMAGE"],
    )
    assert DEFAULTS["sparkVersion"] == pinned("pyspark")
    froms = [a for w, a in dockerfile_instructions() if w == "FROM"]
    assert froms[-1] == "${SPARK_IMAGE}", "the last stage (the image) must be the Spark image"


def test_the_jars_and_the_jmx_agent_are_baked_in() -> None:
    copies = _copies()
    assert copies[".cache/jars/spark/*.jar"] == "/opt/spark/jars/"
    jmx = DEFAULTS["monitoring"]["prometheus"]["jmxExporterJar"]
    assert copies[".cache/jars/k8s/jmx_prometheus_javaagent.jar"] == jmx
    # k8s/image/pom.xml puts the agent where the Dockerfile takes it.
    pom = (REPO_ROOT / "k8s/image/pom.xml").read_text(encoding="utf-8")
    assert "<destFileName>jmx_prometheus_javaagent.jar</destFileName>" in pom
    assert "<outputDirectory>${jars.dir}/k8s</outputDirectory>" in pom


def test_the_project_is_installed_as_a_wheel_for_the_spark_user() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "pip wheel --no-deps" in text and "/tmp/wheels/*.whl" in text
    assert "/opt/clickrec/venv/bin/python" in text
    users = [a for w, a in dockerfile_instructions() if w == "USER"]
    assert users[-1] == str(DEFAULTS["pod"]["securityContext"]["runAsUser"]) != "0"
    env = " ".join(a for w, a in dockerfile_instructions() if w == "ENV")
    assert "PYSPARK_PYTHON=/opt/clickrec/venv/bin/python" in env


def test_the_build_context_sends_only_what_the_dockerfile_copies() -> None:
    text = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "exclude everything first, then name what the build needs"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for source in _copies():
        top = source.split("*")[0].rstrip("/")
        assert any(top == inc or top.startswith(inc + "/") for inc in included), source


def test_make_image_without_a_docker_engine_says_so(tmp_path: Path) -> None:
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "DOCKER": str(fake)}
    result = subprocess.run(
        ["make", "-s", "image"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "no Docker engine available" in result.stderr
    assert "nothing was built" in result.stderr


def test_make_image_without_docker_at_all_says_so() -> None:
    env = {**os.environ, "DOCKER": "clickrec-no-such-docker"}
    result = subprocess.run(
        ["make", "-s", "image"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "no Docker engine available" in result.stderr
