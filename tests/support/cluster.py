"""The e2e tier's side of the local cluster (`make k8s-up`): kubectl, the test overlay, the services.

The jobs run as SparkApplications from the dev overlay of docs/deploy.md, through a test overlay
(`E2EOverlay`) that adds only what this cluster needs and says why. Kafka, MinIO and the MLflow
server run on this host at the pods' bridge address (k8s/local/lib.sh POD_GATEWAY): there is no
in-cluster Kafka, MinIO or MLflow here, and no cluster DNS to name them by.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from clickrec.services import ServiceProcess
from tests.support.k8s import KUSTOMIZE, OVERLAYS_DIR, REPO_ROOT

KUBECTL = REPO_ROOT / ".cache" / "k8s" / "bin" / "kubectl"
KUBECONFIG = REPO_ROOT / ".clickrec" / "k8s" / "admin.kubeconfig"
LIB_SH = REPO_ROOT / "k8s" / "local" / "lib.sh"
NAMESPACE = "clickrec"
# The name k8s/local/load-image.sh gives the image the manifests call clickrec:<version>.
IMAGE_PREFIX = "docker.io/library/clickrec:"

T = TypeVar("T")


def kubectl(*args: str, stdin: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """kubectl against the local cluster; with `check`, a failure is an error naming its stderr."""
    result = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(KUBECONFIG), *args],
        input=stdin, capture_output=True, text=True, check=False, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def render(overlay: str | Path) -> str:
    """`kustomize build` of an overlay: a name under k8s/spark-operator/overlays, or a folder."""
    folder = overlay if isinstance(overlay, Path) else OVERLAYS_DIR / overlay
    return subprocess.run(
        [str(KUSTOMIZE), "build", str(folder)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout


def lib_setting(name: str) -> str:
    """A setting of k8s/local/lib.sh (its default), e.g. POD_GATEWAY or APISERVER_PORT."""
    text = LIB_SH.read_text()
    match = re.search(rf"^{name}=(?:\$\{{[A-Za-z0-9_]+:-)?([^}}\s]+)\}}?$", text, re.MULTILINE)
    if match is None:
        raise KeyError(f"{name} is not set in {LIB_SH}")
    return match.group(1)


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, every: float = 3.0) -> T:
    """probe()'s first truthy result; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(every)


# --- SparkApplications ---------------------------------------------------------------------------


def app_status(name: str) -> dict[str, Any]:
    """The SparkApplication's status ({} until the operator wrote one, or when it is gone)."""
    got = kubectl("-n", NAMESPACE, "get", "sparkapplication", name, "-o", "json", check=False)
    if got.returncode != 0:
        return {}
    status: dict[str, Any] = json.loads(got.stdout).get("status", {})
    return status


def app_state(name: str) -> str:
    return str(app_status(name).get("applicationState", {}).get("state", ""))


def wait_for_state(name: str, wanted: set[str], timeout: float, *, fail_on: set[str] | None = None) -> str:
    """Wait until the application is in one of `wanted`; fail early on one of `fail_on`."""
    fail_on = fail_on or set()

    def probe() -> str | None:
        state = app_state(name)
        assert state not in fail_on, f"{name} is {state}: {app_status(name)} ({driver_log_tail(name)})"
        return state if state in wanted else None

    return wait_until(f"{name} in {sorted(wanted)}", probe, timeout)


def driver_pod(name: str) -> dict[str, Any] | None:
    got = kubectl("-n", NAMESPACE, "get", "pod", f"{name}-driver", "-o", "json", check=False)
    return json.loads(got.stdout) if got.returncode == 0 else None


def driver_log_tail(name: str, lines: int = 40) -> str:
    """The driver's last log lines, for failure messages only (assertions read tables)."""
    got = kubectl("-n", NAMESPACE, "logs", f"{name}-driver", f"--tail={lines}", check=False)
    return got.stdout or got.stderr


def delete_app(kind: str, name: str, *, wait: bool = True) -> None:
    kubectl("-n", NAMESPACE, "delete", kind, name, "--ignore-not-found", f"--wait={str(wait).lower()}",
            timeout=300)


def select(manifests: str, kind: str, name: str) -> dict[str, Any]:
    """One object of a rendered overlay."""
    for doc in yaml.safe_load_all(manifests):
        if doc and doc["kind"] == kind and doc["metadata"]["name"] == name:
            return dict(doc)
    raise KeyError(f"no {kind} {name} in the rendered overlay")


# --- the test overlay ----------------------------------------------------------------------------


@dataclass(frozen=True)
class E2EOverlay:
    """A kustomize overlay over k8s/spark-operator/overlays/dev for this cluster, in `folder`.

    What it adds, and why:
    - conf/k8s.yaml's endpoints (s3.endpoint, kafka.bootstrap_servers, mlflow.tracking_uri)
      point at the services on the bridge address: on a cloud cluster they are in-cluster
      Services with DNS names, here they are processes on the host and there is no cluster DNS.
    - train.grid / num_folds / parallelism / num_blocks are cut to one small grid point: two
      cores run the control plane, the operator, the driver and the executor; a full grid would
      take the e2e tier past its time budget without exercising anything more of the cluster.
      train.promote=always: such a model on a few thousand events need not beat popularity,
      which `auto` requires of a first champion, and the stream folds into the champion.
    - driver.kubernetesMaster: the API server at this host's address. The driver's default,
      https://kubernetes.default.svc, needs cluster DNS and kube-proxy. (The operator's webhook
      refuses the same setting as sparkConf `spark.kubernetes.driver.master`: "managed by the
      operator"; the CRD field is how it takes it.)
    - spark.kubernetes.executor.useDriverPodIP: executors reach the driver at its pod IP, not
      at its headless Service's DNS name (no cluster DNS).
    """

    folder: Path

    @classmethod
    def write(cls, folder: Path, *, kafka: ServiceProcess, minio: ServiceProcess, mlflow: ServiceProcess,
              api_server: str) -> E2EOverlay:
        folder.mkdir(parents=True, exist_ok=True)
        conf = yaml.safe_load((REPO_ROOT / "conf" / "k8s.yaml").read_text())
        conf["s3"]["endpoint"] = minio.url
        conf["kafka"]["bootstrap_servers"] = kafka.url
        conf["mlflow"]["tracking_uri"] = mlflow.url
        conf["spark"]["shuffle_partitions"] = 4
        conf["train"].update({"num_folds": 2, "parallelism": 1, "num_blocks": 2, "promote": "always",
                              "grid": {"rank": [8], "reg_param": [0.1], "alpha": [1.0], "max_iter": [5]}})
        (folder / "k8s.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
        patch_app = [
            {"op": "add", "path": "/spec/driver/kubernetesMaster", "value": api_server},
            {"op": "add", "path": "/spec/sparkConf/spark.kubernetes.executor.useDriverPodIP", "value": "true"},
        ]
        patch_schedule = [{**p, "path": "/spec/template" + p["path"].removeprefix("/spec")} for p in patch_app]
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            # kustomize takes another kustomization only by a relative path
            "resources": [os.path.relpath(OVERLAYS_DIR / "dev", folder)],
            "configMapGenerator": [{"name": "clickrec-conf", "namespace": NAMESPACE, "behavior": "merge",
                                    "files": ["k8s.yaml"]}],
            "patches": [
                {"target": {"kind": "SparkApplication"}, "patch": json.dumps(patch_app)},
                {"target": {"kind": "ScheduledSparkApplication"}, "patch": json.dumps(patch_schedule)},
            ],
        }
        (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        return cls(folder)

    def manifests(self) -> str:
        return render(self.folder)

    def apply(self, selector: str) -> None:
        kubectl("apply", "-l", selector, "-f", "-", stdin=self.manifests())

    def start(self, component: str) -> None:
        """Create an on-demand SparkApplication (docs/deploy.md: `kubectl apply -l ...`)."""
        self.apply(f"app.kubernetes.io/component={component},clickrec.dev/launch=on-demand")


def node_images() -> set[str]:
    """Image names the node reports (what the kubelet can start without pulling)."""
    node = kubectl_json("get", "nodes")["items"][0]
    return {name for image in node["status"].get("images") or [] for name in image.get("names") or []}


def api_server_url() -> str:
    """The API server at the address pods reach it on: the `kubernetes` Service's endpoint."""
    endpoints = kubectl_json("-n", "default", "get", "endpointslice", "kubernetes")
    return f"https://{endpoints['endpoints'][0]['addresses'][0]}:{endpoints['ports'][0]['port']}"
