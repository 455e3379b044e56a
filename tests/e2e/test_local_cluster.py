"""The local cluster of `make k8s-up` (docs/deploy.md "Local cluster"): API server, node, CRDs, webhook.

Needs the cluster running; `make e2e` starts it and runs only this tier (`make test` leaves it
out). The tests use kubectl; one starts `clickrec-ingest` from the dev overlay and deletes it again,
one runs a pod in `clickrec` and deletes it; the dev overlay's standing objects stay applied.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.support.cluster import NAMESPACE, kubectl, kubectl_json, render

# Built by k8s/local/node.sh: the static kubectl as an image, for checks from inside the cluster.
KUBECTL_IMAGE = "clickrec.local/kubectl:v1.34.4"


def test_the_api_server_is_ready_and_serves_the_pinned_version() -> None:
    assert kubectl("get", "--raw", "/readyz").stdout == "ok"
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == version["clientVersion"]["gitVersion"] == "v1.34.4"


def test_one_node_is_ready() -> None:
    nodes = kubectl_json("get", "nodes")["items"]
    assert len(nodes) == 1
    conditions = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}
    assert conditions["Ready"] == "True"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_operator_crds_accept_every_object_of_the_overlay(overlay: str) -> None:
    result = kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-",
                     stdin=render(overlay), check=False)
    assert result.returncode == 0, result.stderr
    accepted = {line.split()[0] for line in result.stdout.splitlines() if line.endswith("(server dry run)")}
    for job in ("ingest", "train", "publish", "pipeline", "stream"):
        assert f"sparkapplication.sparkoperator.k8s.io/clickrec-{job}" in accepted
    assert "scheduledsparkapplication.sparkoperator.k8s.io/clickrec-pipeline-nightly" in accepted


def test_the_webhook_gives_the_driver_pod_what_the_manifest_declares() -> None:
    """securityContext, secret references, envFrom, the conf mount and the account: webhook-only fields."""
    manifests = render("dev")
    kubectl("apply", "-l", "clickrec.dev/launch!=on-demand", "-f", "-", stdin=manifests)
    kubectl("-n", NAMESPACE, "delete", "sparkapplication", "clickrec-ingest", "--ignore-not-found", "--wait")
    kubectl("apply", "-l", "app.kubernetes.io/component=ingest,clickrec.dev/launch=on-demand", "-f", "-",
            stdin=manifests)
    try:
        deadline = time.monotonic() + 120
        while True:
            got = kubectl("-n", NAMESPACE, "get", "pod", "clickrec-ingest-driver", "-o", "json", check=False)
            if got.returncode == 0:
                pod = json.loads(got.stdout)
                break
            assert time.monotonic() < deadline, "the operator made no driver pod within 120 s"
            time.sleep(2)
        labels = pod["metadata"]["labels"]
        assert labels["sparkoperator.k8s.io/mutated-by-spark-operator"] == "true"
        spec = pod["spec"]
        assert spec["serviceAccountName"] == "clickrec-spark-driver"
        driver = next(c for c in spec["containers"] if c["name"] == "spark-kubernetes-driver")
        context = driver["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"], context["runAsNonRoot"]) == (185, 185, True)
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
                      for e in driver.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
        assert secret_env == {"AWS_ACCESS_KEY_ID": "clickrec-s3", "AWS_SECRET_ACCESS_KEY": "clickrec-s3"}
        assert {"secretRef": {"name": "clickrec-mlflow", "optional": True}} in driver["envFrom"]
        mounts = {m["mountPath"]: m["name"] for m in driver["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes[mounts["/etc/clickrec"]]["configMap"]["name"].startswith("clickrec-conf-")
    finally:
        kubectl("-n", NAMESPACE, "delete", "sparkapplication", "clickrec-ingest", "--ignore-not-found",
                "--wait", check=False)


def test_a_pod_reaches_the_api_server_as_the_spark_driver_account() -> None:
    """What a Spark driver in a pod needs first: the API server at the `kubernetes` Service's endpoint
    (no kube-proxy here), its ServiceAccount token accepted, and the Role letting it create executors."""
    endpoints = kubectl_json("-n", "default", "get", "endpointslice", "kubernetes")
    address = endpoints["endpoints"][0]["addresses"][0]
    port = endpoints["ports"][0]["port"]
    secrets = "/var/run/secrets/kubernetes.io/serviceaccount"
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"https://{address}:{port}",
                                               "certificate-authority": f"{secrets}/ca.crt"}}],
        "users": [{"name": "u", "user": {"tokenFile": f"{secrets}/token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }
    name = "clickrec-e2e-api-check"
    objects = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NAMESPACE},
         "data": {"kubeconfig": json.dumps(config)}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE},
         "spec": {"restartPolicy": "Never", "serviceAccountName": "clickrec-spark-driver",
                  "volumes": [{"name": "kubeconfig", "configMap": {"name": name}}],
                  "containers": [{"name": "kubectl", "image": KUBECTL_IMAGE, "imagePullPolicy": "Never",
                                  "volumeMounts": [{"name": "kubeconfig", "mountPath": "/etc/check"}],
                                  "args": ["--kubeconfig", "/etc/check/kubeconfig", "--request-timeout", "10s",
                                           "auth", "can-i", "create", "pods"]}]}},
    ]
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    kubectl("delete", "-f", "-", "--ignore-not-found", "--wait", stdin=manifest)
    kubectl("apply", "-f", "-", stdin=manifest)
    try:
        deadline = time.monotonic() + 90
        while True:
            phase = kubectl("-n", NAMESPACE, "get", "pod", name, "-o", "jsonpath={.status.phase}").stdout
            if phase in {"Succeeded", "Failed"}:
                break
            assert time.monotonic() < deadline, f"the check pod is still {phase!r} after 90 s"
            time.sleep(2)
        log = kubectl("-n", NAMESPACE, "logs", name, check=False)
        assert (phase, log.stdout.strip()) == ("Succeeded", "yes"), log.stdout + log.stderr
    finally:
        kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", stdin=manifest, check=False)
