"""The image recipe agrees with the manifests, both builders use it, and the entrypoint starts
what the spark-operator's pods expect.

Nothing here needs a built image, Docker or root: the recipe files are read, the entrypoint runs
against a fake Spark, and `make image` only decides which builder it would use. The one test
that reads a built OCI archive is skipped, saying so, when `make image` has not made one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tarfile
import time
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.support.k8s import (
    BASE_DIR,
    DOCKERFILE,
    ENTRYPOINT_SH,
    IMAGE_DIR,
    INSTALL_SH,
    REPO_ROOT,
    dockerfile_instructions,
    image_config,
    pinned,
    project_version,
    setup_cfg,
)

DEFAULTS = yaml.safe_load((BASE_DIR / "defaults.yaml").read_text(encoding="utf-8"))["spec"]
INSTALL = INSTALL_SH.read_text(encoding="utf-8")
BUILD = (IMAGE_DIR / "build.sh").read_text(encoding="utf-8")
BUILD_OCI = (IMAGE_DIR / "build-oci.sh").read_text(encoding="utf-8")
CONFIG = image_config()
ENV = CONFIG["env"]


# --- one recipe, one config -------------------------------------------------------------------


def test_the_dockerfile_only_runs_the_one_recipe_on_debian_bookworm() -> None:
    words = [w for w, _ in dockerfile_instructions()]
    assert [a for w, a in dockerfile_instructions() if w == "FROM"] == ["debian:bookworm-slim"]
    assert set(words) <= {"FROM", "ENV", "RUN", "USER", "WORKDIR", "ENTRYPOINT"}, words
    assert "COPY" not in words, "a COPY layer would keep the context's 1.4 GB in the image"
    runs = [a.split() for w, a in dockerfile_instructions() if w == "RUN"]
    assert runs == [[
        "--mount=type=bind,source=.cache/image/context,target=/tmp/clickrec-image",
        "bash", "/tmp/clickrec-image/install.sh", "/tmp/clickrec-image",
    ]]
    assert DOCKERFILE.read_text(encoding="utf-8").startswith("# syntax=docker/dockerfile:1\n")


def test_the_oci_build_runs_the_same_recipe_with_the_dockerfiles_config() -> None:
    # install.sh from the staged context, in the chroot, with the Dockerfile's ENV...
    assert 'image_config.py env' in BUILD_OCI
    assert re.search(
        r'chroot "\$ROOTFS" /usr/bin/env -i HOME=/root "\$\{image_env\[@\]\}" \\\n'
        r"\s+bash /tmp/clickrec-image/install.sh /tmp/clickrec-image\n",
        BUILD_OCI,
    )
    assert 'cp -r "$CONTEXT" "$ROOTFS/tmp/clickrec-image"' in BUILD_OCI
    # ...and the image config from the same file, with the env cleared first.
    assert 'image_config.py umoci' in BUILD_OCI
    assert re.search(r'umoci config .*--clear=config\.env .*"\$\{flags\[@\]\}"', BUILD_OCI, re.S)
    # build.sh stages the context once, for either builder, from the files in k8s/image/.
    assert "cp k8s/image/install.sh k8s/image/entrypoint.sh \"$CONTEXT/\"" in BUILD
    assert BUILD.index('rm -rf "$CONTEXT"') < BUILD.index('"$DOCKER" build')
    assert BUILD.index('rm -rf "$CONTEXT"') < BUILD.index("bash k8s/image/build-oci.sh")


def test_image_config_reads_the_final_stage_and_the_umoci_flags_match() -> None:
    assert CONFIG["user"] == "185"
    assert CONFIG["workdir"] == "/opt/spark/work-dir"
    assert CONFIG["entrypoint"] == ["/opt/clickrec/entrypoint.sh"]
    result = subprocess.run(
        ["python3", str(IMAGE_DIR / "image_config.py"), "umoci"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    flags = result.stdout.splitlines()
    assert "--config.user=185" in flags
    assert "--config.workingdir=/opt/spark/work-dir" in flags
    assert "--config.entrypoint=/opt/clickrec/entrypoint.sh" in flags
    assert [f for f in flags if f.startswith("--config.env=")] == [
        f"--config.env={k}={v}" for k, v in ENV.items()
    ]


def test_image_config_refuses_what_it_cannot_copy_faithfully() -> None:
    spec = __import__("importlib.util").util.spec_from_file_location(
        "image_config_under_test", IMAGE_DIR / "image_config.py"
    )
    module = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(module)
    two_stages = "FROM a AS x\nENV A=1\nUSER 7\nFROM b\nENV B=2\nENTRYPOINT [\"/e\"]\n"
    assert module.image_config(two_stages) == {
        "env": {"B": "2"}, "user": "0", "workdir": "/", "entrypoint": ["/e"], "cmd": []
    }
    with pytest.raises(ValueError, match="literal"):
        module.image_config("FROM b\nENV PATH=/x:${PATH}\n")
    with pytest.raises(ValueError, match="JSON"):
        module.image_config('FROM b\nENTRYPOINT "/e"\n')


# --- what the manifests and conf/k8s.yaml expect of the image ----------------------------------


def test_spark_is_the_pinned_pyspark_of_the_manifests_version_in_spark_home() -> None:
    assert DEFAULTS["sparkVersion"] == pinned("pyspark")
    assert ENV["SPARK_HOME"] == "/opt/spark"
    # Spark is the pyspark wheel's distribution, linked at SPARK_HOME; no other Spark is fetched.
    assert 'ln -sfn "$site" "$SPARK_HOME"' in INSTALL
    assert "/opt/spark/bin" in ENV["PATH"].split(":")


def test_python_and_java_are_the_project_ones() -> None:
    # Debian bookworm's Python is 3.11, what python_requires allows.
    assert setup_cfg()["options"]["python_requires"].strip() == ">=3.11,<3.12"
    apt = re.search(r"apt-get install [^\n]*\\\n([^\n]*)", INSTALL).group(1).split()
    assert {"openjdk-17-jre-headless", "python3.11", "python3.11-venv"} <= set(apt)
    assert 'python3.11 -m venv "$VENV"' in INSTALL and "VENV=$CLICKREC_HOME/venv" in INSTALL
    venv_python = f"{ENV['CLICKREC_HOME']}/venv/bin/python"
    assert ENV["PYSPARK_PYTHON"] == ENV["PYSPARK_DRIVER_PYTHON"] == venv_python
    assert ENV["PATH"].split(":")[0] == f"{ENV['CLICKREC_HOME']}/venv/bin"


def test_the_packages_are_the_pins_of_make_setup_from_staged_wheels_only() -> None:
    assert re.search(
        r'pip install .*--no-index \\\n\s+--find-links "\$CONTEXT/wheels" '
        r'--constraint "\$CONTEXT/constraints.txt" clickrec\n',
        INSTALL,
    )
    assert "pip list --format=freeze --exclude-editable" in BUILD
    assert '--constraint "$CONTEXT/constraints.txt"' in BUILD


def test_executors_get_native_blas() -> None:
    apt = re.search(r"apt-get install [^\n]*\\\n([^\n]*)", INSTALL).group(1).split()
    # libopenblas0 makes OpenBLAS Debian's libblas.so.3 / liblapack.so.3, the names netlib loads.
    assert "libopenblas0" in apt


def test_the_jars_and_the_jmx_agent_are_baked_in() -> None:
    assert 'cp "$CONTEXT"/jars/spark/*.jar "$SPARK_HOME/jars/"' in INSTALL
    assert 'cp .cache/jars/spark/*.jar "$CONTEXT/jars/spark/"' in BUILD
    jmx = DEFAULTS["monitoring"]["prometheus"]["jmxExporterJar"]
    assert jmx == f"{ENV['SPARK_HOME']}/monitoring/jmx_prometheus_javaagent.jar"
    assert '"$SPARK_HOME/monitoring/jmx_prometheus_javaagent.jar"' in INSTALL
    # k8s/image/pom.xml puts the agent where build.sh stages it from, outside .cache/jars.
    pom = (IMAGE_DIR / "pom.xml").read_text(encoding="utf-8")
    assert "<destFileName>jmx_prometheus_javaagent.jar</destFileName>" in pom
    assert "<image.jars.dir>${project.basedir}/../../.cache/image/jars</image.jars.dir>" in pom
    assert "cp .cache/image/jars/jmx_prometheus_javaagent.jar \"$CONTEXT/jars/\"" in BUILD
    # Jars on Spark's classpath: the k8s config loads none itself.
    k8s_conf = yaml.safe_load((REPO_ROOT / "conf/k8s.yaml").read_text(encoding="utf-8"))
    assert k8s_conf["spark"]["jars_dir"] is None


def test_the_user_is_the_manifests_non_root_uid() -> None:
    uid = DEFAULTS["pod"]["securityContext"]["runAsUser"]
    assert CONFIG["user"] == str(uid) != "0"
    assert f"SPARK_UID={uid}" in INSTALL
    assert DEFAULTS["pod"]["securityContext"]["runAsGroup"] == uid  # groupadd --gid $SPARK_UID
    assert PurePosixPath(CONFIG["workdir"]) == PurePosixPath(ENV["SPARK_HOME"]) / "work-dir"
    assert 'chown "$SPARK_UID:$SPARK_UID" "$SPARK_HOME/work-dir"' in INSTALL


def test_the_build_context_sends_only_the_staged_context() -> None:
    text = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "exclude everything first, then name what the build needs"
    assert [line for line in lines if line.startswith("!")] == ["!.cache/image/context/"]


# --- the entrypoint ---------------------------------------------------------------------------


@pytest.fixture
def fake_spark(tmp_path: Path) -> dict[str, str]:
    """SPARK_HOME with a spark-submit, a JAVA_HOME with a java, and a tini on PATH that all
    print their arguments as one JSON list (tini then runs the rest)."""
    record = (
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        "print(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]))\n"
    )
    tini = (
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        "print(json.dumps(['tini'] + sys.argv[1:3]), flush=True)\n"
        "assert sys.argv[1:3] == ['-s', '--'], sys.argv\n"
        "os.execvp(sys.argv[3], sys.argv[3:])\n"
    )
    for path, text in (
        (tmp_path / "spark/bin/spark-submit", record),
        (tmp_path / "java/bin/java", record),
        (tmp_path / "bin/tini", tini),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
    return {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
        "SPARK_HOME": str(tmp_path / "spark"),
        "JAVA_HOME": str(tmp_path / "java"),
    }


def _entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ENTRYPOINT_SH), *args], env=env, capture_output=True, text=True, timeout=30
    )


def test_the_driver_runs_spark_submit_in_client_mode_with_its_arguments(
    fake_spark: dict[str, str],
) -> None:
    # The argument shape Spark's Kubernetes client gives a driver pod of a PySpark application.
    args = [
        "--properties-file", "/opt/spark/conf/spark.properties",
        "--class", "org.apache.spark.deploy.PythonRunner",
        "local:///opt/clickrec/jobs/pipeline.py",
        "--config", "/etc/clickrec/k8s.yaml", "--note", "two words",
    ]
    env = {**fake_spark, "SPARK_DRIVER_BIND_ADDRESS": "10.1.2.3"}
    result = _entrypoint(env, "driver", *args)
    assert result.returncode == 0, result.stderr
    tini, submit = (json.loads(line) for line in result.stdout.splitlines())
    assert tini == ["tini", "-s", "--"]
    assert submit == [
        "spark-submit", "--conf", "spark.driver.bindAddress=10.1.2.3",
        "--deploy-mode", "client", *args,
    ]


# spark-submit's JVM of a PySpark driver: starts the Python driver as its child and exits with
# its status; it notes a SIGTERM of its own in jvm.log (Spark would stop the SparkContext there).
FAKE_JVM = """#!/usr/bin/env python3
import os, signal, subprocess, sys
out = os.environ["FAKE_OUT"]
def noted(signum, frame):
    open(os.path.join(out, "jvm.log"), "a").write("TERM\\n")
signal.signal(signal.SIGTERM, noted)
child = subprocess.Popen([sys.executable, "-c", os.environ["FAKE_DRIVER"]])
sys.exit(child.wait())
"""
# The Python driver: on SIGTERM it notes it, then exits with FAKE_TERM_STATUS (clickrec's
# stream exits 0 after stopping its query; a batch job exits 143).
FAKE_DRIVER = """
import os, signal, sys, time
out = os.environ["FAKE_OUT"]
def stop(signum, frame):
    open(os.path.join(out, "driver.log"), "a").write("TERM\\n")
    sys.exit(int(os.environ["FAKE_TERM_STATUS"]))
signal.signal(signal.SIGTERM, stop)
open(os.path.join(out, "ready"), "w").close()
time.sleep(60)
sys.exit(3)
"""


@pytest.mark.parametrize("term_status", [0, 143])
def test_sigterm_reaches_the_python_driver_not_spark_submits_jvm(
    fake_spark: dict[str, str], tmp_path: Path, term_status: int
) -> None:
    """The kubelet's SIGTERM to a driver pod: the Python driver gets it and its exit status is the
    pod's; the JVM gets none, so the SparkContext outlives the driver's graceful stop."""
    submit = Path(fake_spark["SPARK_HOME"]) / "bin" / "spark-submit"
    submit.write_text(FAKE_JVM)
    out = tmp_path / "out"
    out.mkdir()
    env = {**fake_spark, "SPARK_DRIVER_BIND_ADDRESS": "10.1.2.3", "FAKE_OUT": str(out),
           "FAKE_DRIVER": FAKE_DRIVER, "FAKE_TERM_STATUS": str(term_status), "TINI_KILL_PROCESS_GROUP": "1"}
    proc = subprocess.Popen(["bash", str(ENTRYPOINT_SH), "driver", "local:///opt/clickrec/jobs/stream.py"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (out / "ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == term_status
    finally:
        proc.kill()
    assert (out / "driver.log").read_text() == "TERM\n"
    assert not (out / "jvm.log").exists()


def test_the_executor_runs_the_kubernetes_executor_backend(fake_spark: dict[str, str]) -> None:
    env = {
        **fake_spark,
        "SPARK_EXECUTOR_MEMORY": "2g",
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@driver-svc:7078",
        "SPARK_EXECUTOR_ID": "3",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_APPLICATION_ID": "spark-0123",
        "SPARK_EXECUTOR_POD_IP": "10.1.2.4",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_EXECUTOR_POD_NAME": "clickrec-pipeline-exec-3",
        # Numeric order, not text order: 0, 2, 10.
        "SPARK_JAVA_OPT_10": "-Dspark.driver.port=7078",
        "SPARK_JAVA_OPT_0": "-Djava.net.preferIPv6Addresses=false",
        "SPARK_JAVA_OPT_2": "-javaagent:/opt/spark/monitoring/jmx_prometheus_javaagent.jar=8090:/etc/metrics/conf/prometheus.yaml",
        "SPARK_JAVA_OPT_X": "-Dnot.an.option=1",
    }
    result = _entrypoint(env, "executor")
    assert result.returncode == 0, result.stderr
    java = json.loads(result.stdout.splitlines()[1])
    spark = fake_spark["SPARK_HOME"]
    assert java == [
        "java",
        env["SPARK_JAVA_OPT_0"], env["SPARK_JAVA_OPT_2"], env["SPARK_JAVA_OPT_10"],
        "-Xms2g", "-Xmx2g",
        "-cp", f"{spark}/conf:{spark}/jars/*",
        "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend",
        "--driver-url", env["SPARK_DRIVER_URL"],
        "--executor-id", "3",
        "--cores", "2",
        "--app-id", "spark-0123",
        "--hostname", "10.1.2.4",
        "--resourceProfileId", "0",
        "--podName", "clickrec-pipeline-exec-3",
    ]


def test_an_executor_without_its_pod_variables_fails_and_names_one(
    fake_spark: dict[str, str],
) -> None:
    result = _entrypoint({**fake_spark, "SPARK_EXECUTOR_MEMORY": "1g"}, "executor")
    assert result.returncode == 2
    assert "SPARK_DRIVER_URL is not set" in result.stderr
    assert result.stdout == ""


def test_other_commands_run_as_given_and_no_command_is_an_error(
    fake_spark: dict[str, str],
) -> None:
    result = _entrypoint(fake_spark, "echo", "hello", "world")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == "hello world"
    result = _entrypoint(fake_spark)
    assert result.returncode == 2 and "no command" in result.stderr


# --- make image ---------------------------------------------------------------------------------


def _make_image(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        ["make", "-s", "image"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def _fake_docker(tmp_path: Path, answers: bool) -> str:
    fake = tmp_path / "docker"
    body = "exit 0" if answers else "echo 'Cannot connect to the Docker daemon' >&2; exit 1"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    return str(fake)


def test_make_image_picks_docker_when_an_engine_answers_else_the_oci_archive(
    tmp_path: Path,
) -> None:
    plan = {"IMAGE_PLAN_ONLY": "1"}
    answers = _make_image({**plan, "DOCKER": _fake_docker(tmp_path, answers=True)})
    assert answers.returncode == 0 and answers.stdout == "builder: docker\n", answers.stderr
    silent = _make_image({**plan, "DOCKER": _fake_docker(tmp_path, answers=False)})
    assert silent.returncode == 0 and silent.stdout == "builder: oci\n", silent.stderr
    assert "building the OCI archive instead" in silent.stderr
    missing = _make_image({**plan, "DOCKER": "clickrec-no-such-docker"})
    assert missing.stdout == "builder: oci\n"
    explicit = _make_image({**plan, "BUILDER": "oci", "DOCKER": _fake_docker(tmp_path, True)})
    assert explicit.stdout == "builder: oci\n"


def test_make_image_with_docker_asked_for_and_no_engine_says_so(tmp_path: Path) -> None:
    for docker in (_fake_docker(tmp_path, answers=False), "clickrec-no-such-docker"):
        result = _make_image({"BUILDER": "docker", "DOCKER": docker})
        assert result.returncode != 0 and "Error 3" in result.stderr, result.stderr  # make: 2
        assert "no Docker engine available" in result.stderr
        assert "nothing was built" in result.stderr
        assert "BUILDER=oci" in result.stderr


def test_make_image_rejects_an_unknown_builder() -> None:
    result = _make_image({"BUILDER": "podman"})
    assert result.returncode != 0
    assert "BUILDER must be auto, docker or oci" in result.stderr


# --- a built archive (only after `make image BUILDER=oci`) ------------------------------------

ARCHIVE = REPO_ROOT / ".cache" / "image" / f"clickrec-{project_version()}.oci.tar"


@pytest.mark.skipif(
    not ARCHIVE.exists(), reason=f"no {ARCHIVE.name}: `make image BUILDER=oci` has not built one"
)
def test_the_oci_archive_carries_the_dockerfiles_config_and_the_manifests_name() -> None:
    with tarfile.open(ARCHIVE) as tar:
        index = json.load(tar.extractfile("index.json"))

        def blob(digest: str) -> dict:
            return json.load(tar.extractfile("blobs/" + digest.replace(":", "/")))

        (entry,) = index["manifests"]
        assert entry["annotations"]["io.containerd.image.name"] == (
            f"docker.io/library/{DEFAULTS['image']}"
        )
        config = blob(blob(entry["digest"])["config"]["digest"])
    assert config["os"] == "linux"
    assert config["config"]["User"] == CONFIG["user"]
    assert config["config"]["WorkingDir"] == CONFIG["workdir"]
    assert config["config"]["Entrypoint"] == CONFIG["entrypoint"]
    assert config["config"]["Env"] == [f"{k}={v}" for k, v in ENV.items()]
