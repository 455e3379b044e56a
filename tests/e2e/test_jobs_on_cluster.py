"""clickrec's SparkApplications on the local cluster, end to end (docs/deploy.md "Local cluster").

The operator runs the dev overlay's applications, through the test overlay of
tests/support/cluster.py, in the project image that `make k8s-image` put into the node. The data
is on MinIO, the runs in an MLflow server, the stream reads Kafka: all three run on this host at
the pods' bridge address, started here. The assertions read the tables (delta-rs on MinIO),
MLflow and the Kubernetes API, not logs.

The tests run in file order and build on each other: the pipeline trains the champion the
stream folds events into.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from clickrec import columns as C
from clickrec.config import ClickrecConfig, build_config
from clickrec.generate import generate_clickstream
from clickrec.io.lake import Lake
from clickrec.replay import replay
from clickrec.services import LAKE_BUCKET, ServiceProcess, start_kafka, start_minio, start_mlflow
from clickrec.stream import checkpoint_path
from tests.support.cluster import (
    IMAGE_PREFIX,
    KUBECONFIG,
    KUBECTL,
    NAMESPACE,
    E2EOverlay,
    api_server_url,
    app_status,
    delete_app,
    driver_pod,
    kubectl,
    lib_setting,
    node_images,
    select,
    wait_for_state,
    wait_until,
)
from tests.support.config import REPO_ROOT
from tests.support.services import objects

PIPELINE = "clickrec-pipeline"
STREAM = "clickrec-stream"
# Rows of the generated clickstream: the pipeline's input, then what replay sends the stream.
BATCH_EVENTS = 4000
STREAM_EVENTS = 2000
RESTART_EVENTS = 600
PROBE_USER = "e2e-probe-user"
FAILED = {"FAILED", "SUBMISSION_FAILED"}
RUN_TIMEOUT_S = 1200


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("e2e")
    images = node_images()
    if not any(name.startswith(IMAGE_PREFIX) for name in images):
        pytest.fail(f"the node has no {IMAGE_PREFIX}<version> image: run `make k8s-image` (make e2e does)")
    for kind in ("scheduledsparkapplication", "sparkapplication"):  # a clean namespace
        kubectl("-n", NAMESPACE, "delete", kind, "--all", "--wait", timeout=300)
    gateway = lib_setting("POD_GATEWAY")
    started: list[ServiceProcess] = []
    patch = pytest.MonkeyPatch()
    try:
        minio = start_minio(base, host=gateway)
        started.append(minio)
        kafka = start_kafka(base, host=gateway)
        started.append(kafka)
        mlflow = start_mlflow(base, minio, host=gateway)
        started.append(mlflow)
        for key, value in minio.env.items():
            patch.setenv(key, value)
        overlay = E2EOverlay.write(base / "overlay", kafka=kafka, minio=minio, mlflow=mlflow,
                                   api_server=api_server_url())
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": "clickrec-s3", "namespace": NAMESPACE}, "stringData": minio.env}
        kubectl("apply", "-f", "-", stdin=json.dumps(secret))  # docs/deploy.md step 4, from stdin
        overlay.apply("clickrec.dev/launch!=on-demand")
        config = host_config(base, overlay)
        (batch, stream, restart), distinct = split_clickstream(base)
        from minio import Minio

        Minio(minio.url.removeprefix("http://"), access_key=minio.env["AWS_ACCESS_KEY_ID"],
              secret_key=minio.env["AWS_SECRET_ACCESS_KEY"], secure=False
              ).fput_object(LAKE_BUCKET, "raw/clickstream/events.csv", str(batch))
        yield {"overlay": overlay, "config": config, "minio": minio, "mlflow": mlflow, "base": base,
               "stream_file": stream, "restart_file": restart, "distinct": distinct}
    finally:
        for kind in ("scheduledsparkapplication", "sparkapplication"):
            kubectl("-n", NAMESPACE, "delete", kind, "--all", "--wait", timeout=300, check=False)
        for service in reversed(started):
            service.stop()
        patch.undo()


def host_config(base: Path, overlay: E2EOverlay) -> ClickrecConfig:
    """The pods' config, read on this host: the same lake, topics and MLflow server."""
    conf = yaml.safe_load((overlay.folder / "k8s.yaml").read_text())
    conf["ingest"]["events_suite"] = str(REPO_ROOT / "conf" / "expectations" / "clickstream_events.json")
    conf["ingest"]["ratings_suite"] = str(REPO_ROOT / "conf" / "expectations" / "ratings.json")
    (base / "host.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    return build_config(conf)


def split_clickstream(base: Path) -> tuple[tuple[Path, Path, Path], tuple[int, int, int]]:
    """One generated clickstream cut in three: the pipeline's input, the stream's 2,000 events
    (the most active user among them renamed PROBE_USER, a user the model has never seen), and
    the events sent around the stream's restart. With the files, how many distinct events the
    lake holds after the first part, the first two and all three: an event is its row, and the
    generator repeats a few rows (bronze keeps one of each; ingest counts the others as
    duplicates)."""
    source = base / "clickstream.csv"
    generate_clickstream(source, events=BATCH_EVENTS + STREAM_EVENTS + RESTART_EVENTS, seed=21)
    with source.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = list(reader.fieldnames or []), list(reader)
    assert len(rows) == BATCH_EVENTS + STREAM_EVENTS + RESTART_EVENTS
    parts = rows[:BATCH_EVENTS], rows[BATCH_EVENTS:BATCH_EVENTS + STREAM_EVENTS], rows[BATCH_EVENTS + STREAM_EVENTS:]
    counts: dict[str, int] = {}
    for row in parts[1]:
        counts[row[C.USER_ID]] = counts.get(row[C.USER_ID], 0) + 1
    probe = max(sorted(counts), key=lambda user: counts[user])
    for row in parts[1]:
        if row[C.USER_ID] == probe:
            row[C.USER_ID] = PROBE_USER
    paths = base / "batch.csv", base / "stream.csv", base / "restart.csv"
    for path, part in zip(paths, parts, strict=True):
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(part)
    seen: set[tuple[str, ...]] = set()
    distinct = []
    for part in parts:
        seen.update(tuple(row[f] for f in fields) for row in part)
        distinct.append(len(seen))
    return paths, (distinct[0], distinct[1], distinct[2])


# --- reading the lake and MLflow ------------------------------------------------------------------


def table_rows(config: ClickrecConfig, table: str, columns: list[str] | None = None) -> list[dict[str, Any]]:
    dt = Lake.from_config(config).open(table)
    return [] if dt is None else dt.to_pyarrow_table(columns=columns).to_pylist()


def count(config: ClickrecConfig, table: str) -> int:
    dt = Lake.from_config(config).open(table)
    return 0 if dt is None else dt.to_pyarrow_dataset().count_rows()


def gold_by_user(config: ClickrecConfig, variant: str = "champion") -> dict[str, dict[str, Any]]:
    rows = [r for r in table_rows(config, C.GOLD_RECOMMENDATIONS) if r[C.VARIANT] == variant]
    by_user = {r[C.USER_ID]: r for r in rows}
    assert len(by_user) == len(rows), "gold holds a user twice for one variant"
    return by_user


def mlflow_runs(world: dict[str, Any]) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=world["mlflow"].url)
    experiment = client.get_experiment_by_name(world["config"].mlflow.experiment)
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def champion(world: dict[str, Any]) -> Any:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=world["mlflow"].url, registry_uri=world["mlflow"].url)
    return client.get_model_version_by_alias(world["config"].mlflow.model_name, "champion")


def recommend_cli(world: dict[str, Any], user: str) -> list[str]:
    """`clickrec recommend` on this host, against gold on MinIO: the item ids it prints."""
    out = subprocess.run(
        [sys.executable, "-m", "clickrec.cli", "recommend", "--config", str(world["base"] / "host.yaml"),
         "--user", user], capture_output=True, text=True, check=True, timeout=120, cwd=REPO_ROOT,
    ).stdout
    body = json.loads(out)
    return [item[C.ITEM_ID] for item in body[C.ITEMS]]


def run_pipeline_to_completion(world: dict[str, Any]) -> dict[str, Any]:
    delete_app("sparkapplication", PIPELINE)
    world["overlay"].start("pipeline")
    wait_for_state(PIPELINE, {"COMPLETED"}, RUN_TIMEOUT_S, fail_on=FAILED)
    return app_status(PIPELINE)


# --- the tests ------------------------------------------------------------------------------------


def test_the_pipeline_completes_and_gold_holds_lists_that_recommend_reads(world: dict[str, Any]) -> None:
    config = world["config"]
    status = run_pipeline_to_completion(world)
    assert status["executionAttempts"] == 1
    # every input event is in bronze or in the quarantine, once
    assert count(config, C.BRONZE_EVENTS) + count(config, C.BRONZE_QUARANTINE) == world["distinct"][0]
    users = {r[C.SOURCE_ID] for r in table_rows(config, C.SILVER_USER_INDEX, [C.SOURCE_ID])}
    gold = gold_by_user(config)
    assert set(gold) == users
    for row in gold.values():
        assert row[C.SOURCE] == C.SOURCE_BATCH and len(row[C.ITEMS]) == config.publish.n
    user = sorted(gold)[0]
    assert recommend_cli(world, user) == [item[C.ITEM_ID] for item in gold[user][C.ITEMS]]
    # the run is in MLflow, finished, and its model is the champion whose lists gold holds
    version = champion(world)
    run = next(r for r in mlflow_runs(world) if r.info.run_id == version.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics
    assert {str(r[C.MODEL_VERSION]) for r in gold.values()} == {str(version.version)}


def test_a_deleted_driver_pod_is_retried_and_the_pipeline_ends_consistent(world: dict[str, Any]) -> None:
    """restartPolicy OnFailure (2 retries, 120 s apart): the run whose driver was deleted fails,
    the operator submits it again, and the tables end as one clean run leaves them."""
    config = world["config"]
    bronze, silver = count(config, C.BRONZE_EVENTS), count(config, C.SILVER_INTERACTIONS)
    runs_before = {r.info.run_id for r in mlflow_runs(world)}
    delete_app("sparkapplication", PIPELINE)
    world["overlay"].start("pipeline")

    def running_a_while() -> bool:
        pod = driver_pod(PIPELINE)
        statuses = (pod or {}).get("status", {}).get("containerStatuses", [])
        started = [s["state"]["running"]["startedAt"] for s in statuses if "running" in s.get("state", {})]
        if not started:
            return False
        # past the Spark session's start: the job is reading, writing or training
        return pod is not None and pod_age_seconds(pod) > 45

    wait_until("the pipeline's driver running for 45 s", running_a_while, 600)
    kubectl("-n", NAMESPACE, "delete", "pod", f"{PIPELINE}-driver", "--wait=false")
    wait_for_state(PIPELINE, {"COMPLETED"}, RUN_TIMEOUT_S + 300)
    status = app_status(PIPELINE)
    assert status["executionAttempts"] >= 2, status
    # the same input again: nothing added twice, the serving table one row per user and variant
    assert count(config, C.BRONZE_EVENTS) == bronze
    assert count(config, C.SILVER_INTERACTIONS) == silver
    gold_by_user(config, "champion")
    gold_by_user(config, "challenger")
    new_runs = [r for r in mlflow_runs(world) if r.info.run_id not in runs_before]
    assert new_runs and all(r.info.status != "RUNNING" for r in new_runs), [r.info.status for r in new_runs]
    assert any(r.info.status == "FINISHED" for r in new_runs)


def pod_age_seconds(pod: dict[str, Any]) -> float:
    from datetime import UTC, datetime

    created = datetime.fromisoformat(pod["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    return (datetime.now(UTC) - created).total_seconds()


def test_the_nightly_schedule_fires_and_its_run_completes(world: dict[str, Any]) -> None:
    """The dev overlay's ScheduledSparkApplication, renamed, unsuspended and due every minute;
    suspended again once it fired, so it fires once."""
    schedule = select(world["overlay"].manifests(), "ScheduledSparkApplication", "clickrec-pipeline-nightly")
    name = "clickrec-e2e-every-minute"
    schedule["metadata"]["name"] = name
    schedule["spec"].update({"schedule": "* * * * *", "suspend": False})
    manifest = json.dumps(schedule)
    delete_app("sparkapplication", PIPELINE)  # one pipeline at a time on two cores
    kubectl("apply", "-f", "-", stdin=manifest)
    try:
        run = wait_until("the schedule's first run", lambda: kubectl(
            "-n", NAMESPACE, "get", "scheduledsparkapplication", name,
            "-o", "jsonpath={.status.lastRunName}").stdout, 150)
        kubectl("-n", NAMESPACE, "patch", "scheduledsparkapplication", name, "--type", "merge",
                "-p", '{"spec": {"suspend": true}}')
        wait_for_state(run, {"COMPLETED"}, RUN_TIMEOUT_S, fail_on=FAILED)
        app = json.loads(kubectl("-n", NAMESPACE, "get", "sparkapplication", run, "-o", "json").stdout)
        assert app["metadata"]["labels"]["sparkoperator.k8s.io/scheduled-app-name"] == name
        runs = kubectl("-n", NAMESPACE, "get", "sparkapplication", "-l",
                       f"sparkoperator.k8s.io/scheduled-app-name={name}", "-o", "name").stdout.split()
        assert runs == [f"sparkapplication.sparkoperator.k8s.io/{run}"]
    finally:
        delete_app("scheduledsparkapplication", name)


def test_the_stream_folds_replayed_events_into_gold(world: dict[str, Any]) -> None:
    config = world["config"]
    assert PROBE_USER not in gold_by_user(config)
    world["overlay"].start("stream")
    wait_for_state(STREAM, {"RUNNING"}, 600, fail_on=FAILED)
    assert replay(config, input_path=str(world["stream_file"]), rate=0)["sent"] == STREAM_EVENTS
    wait_until("the replayed events in bronze", lambda: count(config, C.BRONZE_EVENTS)
               + count(config, C.BRONZE_QUARANTINE) >= world["distinct"][1], 600)
    probe = wait_until("the probe user's list in gold", lambda: gold_by_user(config).get(PROBE_USER), 300)
    assert probe[C.SOURCE] == C.SOURCE_STREAM and len(probe[C.ITEMS]) == config.publish.n
    assert recommend_cli(world, PROBE_USER) == [item[C.ITEM_ID] for item in probe[C.ITEMS]]
    assert app_status(STREAM)["applicationState"]["state"] == "RUNNING"


class PodWatch:
    """`kubectl get pod -w -o json` in the background: every state the pod went through."""

    def __init__(self, name: str) -> None:
        self.proc = subprocess.Popen(
            [str(KUBECTL), "--kubeconfig", str(KUBECONFIG), "-n", NAMESPACE, "get", "pod", name,
             "-w", "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.text = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.text += line

    def stop(self) -> list[dict[str, Any]]:
        self.proc.terminate()
        self.reader.join(10)
        decoder, objs, at = json.JSONDecoder(), [], 0
        while at < len(self.text):
            if self.text[at].isspace():
                at += 1
                continue
            obj, at = decoder.raw_decode(self.text, at)
            objs.append(obj)
        return objs


def driver_exit_codes(states: list[dict[str, Any]]) -> set[int]:
    return {s["state"]["terminated"]["exitCode"] for pod in states
            for s in pod.get("status", {}).get("containerStatuses", [])
            if s["name"] == "spark-kubernetes-driver" and "terminated" in s.get("state", {})}


def test_deleting_the_stream_stops_it_gracefully_and_a_new_one_resumes(world: dict[str, Any]) -> None:
    """Deleting the application deletes its driver pod: SIGTERM, the running batch ends, the
    query stops, exit 0, with offsets and commits of the checkpoint in step. A new application
    resumes from that checkpoint: every event once, none lost."""
    config = world["config"]
    watch = PodWatch(f"{STREAM}-driver")
    # events in flight while the driver stops, and events sent while no stream runs
    rows = list(csv.DictReader(world["restart_file"].open(newline="")))
    first, second = world["base"] / "restart-1.csv", world["base"] / "restart-2.csv"
    for path, part in ((first, rows[: len(rows) // 2]), (second, rows[len(rows) // 2 :])):
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(part)
    replay(config, input_path=str(first), rate=0)
    delete_app("sparkapplication", STREAM)
    wait_until("the stream's driver pod gone", lambda: driver_pod(STREAM) is None, 300)
    codes = driver_exit_codes(watch.stop())
    assert codes == {0}, f"the driver's exit codes: {codes} (0: stopped gracefully; 137: killed)"
    checkpoint = checkpoint_path(config).removeprefix(f"s3a://{LAKE_BUCKET}/")
    names = objects(world["minio"], checkpoint + "/")
    offsets = {int(Path(n).name) for n in names if "/offsets/" in n and Path(n).name.isdigit()}
    commits = {int(Path(n).name) for n in names if "/commits/" in n and Path(n).name.isdigit()}
    assert offsets and max(offsets) == max(commits), (sorted(offsets)[-3:], sorted(commits)[-3:])

    replay(config, input_path=str(second), rate=0)
    world["overlay"].start("stream")
    wait_for_state(STREAM, {"RUNNING"}, 600, fail_on=FAILED)
    total = world["distinct"][2]
    wait_until("every event in bronze or the quarantine", lambda: count(config, C.BRONZE_EVENTS)
               + count(config, C.BRONZE_QUARANTINE) >= total, 600)
    ids = [r[C.EVENT_ID] for r in table_rows(config, C.BRONZE_EVENTS, [C.EVENT_ID])]
    assert len(ids) == len(set(ids)), "an event is in bronze twice"
    assert len(ids) + count(config, C.BRONZE_QUARANTINE) == total
    delete_app("sparkapplication", STREAM)
