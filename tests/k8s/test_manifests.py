"""The spark-operator manifests: schemas, and what the base promises every rendering keeps.

Rendered with the kustomize that `make setup` builds (offline); SparkApplication and
ScheduledSparkApplication are checked against the operator's v1beta2 CRD schemas from
../shared/k8s-schemas, the core objects against Kubernetes' own schemas (kubernetes-validate).
"""

from __future__ import annotations

import re
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
import yaml
from croniter import croniter

from tests.support.k8s import (
    BASE_DIR,
    CORE_KINDS,
    CRD_FILES,
    OPERATOR_DIR,
    OVERLAYS_DIR,
    REPO_ROOT,
    convert_crd_schema,
    core_errors,
    crd_errors,
    kustomize_build,
    overlay_dirs,
    pinned,
    project_version,
    renderings,
    source_documents,
)

RENDERINGS = renderings()
DEFAULTS = yaml.safe_load((BASE_DIR / "defaults.yaml").read_text(encoding="utf-8"))["spec"]
BATCH_JOBS = {"clickrec-ingest", "clickrec-train", "clickrec-publish", "clickrec-pipeline"}
STREAM_JOB = "clickrec-stream"
SCHEDULE = "clickrec-pipeline-nightly"
CONF_MOUNT = "/etc/clickrec"


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def app_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every SparkApplication spec, plus the schedule's template under the schedule's name."""
    specs = {name: o["spec"] for name, o in by_kind(objects, "SparkApplication").items()}
    for name, o in by_kind(objects, "ScheduledSparkApplication").items():
        specs[name] = o["spec"]["template"]
    return specs


@pytest.fixture(scope="module", params=sorted(RENDERINGS))
def rendering(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, kustomize_build(RENDERINGS[request.param])


# --- schemas -------------------------------------------------------------------------------------


def test_the_renderings_are_the_base_and_two_overlays() -> None:
    assert {p.name for p in overlay_dirs()} == {"dev", "prod"}


def test_every_rendered_object_is_valid(rendering: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = rendering
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["ConfigMap", "Role", "RoleBinding", "ServiceAccount", "ServiceAccount"]
        + ["SparkApplication"] * 5
        + ["ScheduledSparkApplication"]
    ), f"{name}: unexpected set of objects {kinds}"
    errors = {}
    for obj in objects:
        if obj["kind"] in CRD_FILES:
            found = crd_errors(obj)
        else:
            assert obj["kind"] in CORE_KINDS, f"{name}: {obj['kind']} has no schema check here"
            found = core_errors(obj)
        if found:
            errors[f"{obj['kind']}/{obj['metadata']['name']}"] = found
    assert not errors, f"{name}: {errors}"


def test_source_files_parse_and_their_fields_exist_in_the_crd() -> None:
    """The base's per-job files are partial (kustomize adds the shared fields), so requiredness
    is left to the rendered check; every field they do write must exist with the right type."""
    seen = 0
    for path, doc in source_documents():
        if path.name == "kustomization.yaml" or path.name == "kustomizeconfig.yaml":
            continue
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
        if doc["kind"] in CRD_FILES:
            assert crd_errors(doc, partial=True) == [], path
            seen += 1
    assert seen == 6


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s.update(type="Pyhton"), "type"),
        (lambda s: s.pop("sparkVersion"), "sparkVersion"),
        (lambda s: s["restartPolicy"].update(onFailureRetries="2"), "onFailureRetries"),
        (lambda s: s["driver"].update(securityContex={"runAsNonRoot": True}), "securityContex"),
        (lambda s: s["monitoring"]["prometheus"].update(port=80), "port"),
        (lambda s: s["executor"].update(instances=2**40), "instances"),
    ],
    ids=["bad-enum", "missing-required", "wrong-type", "misspelt-field", "below-minimum", "int32"],
)
def test_the_crd_check_rejects_broken_applications(mutate: Any, expected: str) -> None:
    (app,) = [o for o in kustomize_build(BASE_DIR) if o["metadata"]["name"] == "clickrec-train"]
    assert crd_errors(app) == []
    mutate(app["spec"])
    errors = crd_errors(app)
    assert errors and any(expected in e for e in errors), errors


def test_the_core_check_rejects_a_broken_role() -> None:
    (role,) = [o for o in kustomize_build(BASE_DIR) if o["kind"] == "Role"]
    assert core_errors(role) == []
    role["rules"][0]["resourcez"] = role["rules"][0].pop("resources")
    assert any("resourcez" in e for e in core_errors(role))


def test_int_or_string_and_preserve_unknown_fields_are_converted() -> None:
    converted = convert_crd_schema(
        {
            "type": "object",
            "properties": {
                "q": {"x-kubernetes-int-or-string": True},
                "free": {
                    "type": "object",
                    "properties": {},
                    "x-kubernetes-preserve-unknown-fields": True,
                },
                "t": {"type": "string", "nullable": True},
            },
        }
    )
    assert converted["additionalProperties"] is False
    assert converted["properties"]["q"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert "additionalProperties" not in converted["properties"]["free"]
    assert converted["properties"]["t"]["type"] == ["string", "null"]


# --- principle 12: shared things written once ----------------------------------------------------


def _keys_in_sources(key: str, root: Path = OPERATOR_DIR) -> list[Path]:
    """One entry per YAML line that sets `key`, in any source file under `root`."""
    pattern = re.compile(rf"^\s*-?\s*{re.escape(key)}:", re.MULTILINE)
    return [
        p
        for p in sorted(root.rglob("*.yaml"))
        for _ in pattern.finditer(p.read_text(encoding="utf-8"))
    ]


@pytest.mark.parametrize(
    ("key", "times"),
    [
        ("securityContext", 1),
        ("sparkVersion", 1),
        ("image", 1),
        ("monitoring", 1),
        ("sparkConf", 1),
        ("env", 1),
        ("envFrom", 1),
        ("configMaps", 1),
        ("serviceAccount", 2),  # the driver's and the executors' (different accounts)
    ],
)
def test_shared_fields_are_written_once(key: str, times: int) -> None:
    assert _keys_in_sources(key) == [BASE_DIR / "defaults.yaml"] * times


def test_no_namespace_is_baked_into_the_base() -> None:
    assert _keys_in_sources("namespace", BASE_DIR) == []
    for obj in kustomize_build(BASE_DIR):
        assert "namespace" not in obj["metadata"], obj["metadata"]["name"]


def test_image_tag_and_spark_version_match_the_project() -> None:
    assert DEFAULTS["image"] == f"clickrec:{project_version()}"
    assert DEFAULTS["sparkVersion"] == pinned("pyspark") == "4.2.0"


# --- what every rendering keeps ------------------------------------------------------------------


def test_every_application_carries_the_shared_fields(
    rendering: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = rendering
    specs = app_specs(objects)
    assert set(specs) == BATCH_JOBS | {STREAM_JOB, SCHEDULE}
    tag = DEFAULTS["image"].split(":")[1]
    for app, spec in specs.items():
        where = f"{name} {app}"
        assert spec["image"].rsplit(":", 1)[1] == tag, where
        assert spec["image"].rsplit("/", 1)[-1].split(":")[0] == "clickrec", where
        assert spec["sparkVersion"] == DEFAULTS["sparkVersion"], where
        assert (spec["type"], spec["mode"]) == ("Python", "cluster"), where
        assert spec["monitoring"] == DEFAULTS["monitoring"], where
        assert spec["sparkConf"] == DEFAULTS["sparkConf"], where
        assert (
            spec["monitoring"]["exposeDriverMetrics"]
            and spec["monitoring"]["exposeExecutorMetrics"]
        )
        for role in ("driver", "executor"):
            pod = spec[role]
            assert pod["securityContext"] == DEFAULTS["pod"]["securityContext"], f"{where} {role}"
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] != 0
            assert pod["securityContext"]["allowPrivilegeEscalation"] is False
            assert pod["env"] == DEFAULTS["pod"]["env"], f"{where} {role}"
            assert pod["envFrom"] == DEFAULTS["pod"]["envFrom"], f"{where} {role}"
            assert pod["serviceAccount"] == DEFAULTS[role]["serviceAccount"], f"{where} {role}"
            # Requests and limits: CPU request and limit, memory (request = limit in Spark).
            for field in ("cores", "coreRequest", "coreLimit", "memory", "memoryOverhead"):
                assert pod.get(field) not in (None, ""), f"{where} {role}.{field}"
        assert spec["executor"]["instances"] >= 1


def test_credentials_come_only_from_secret_references(
    rendering: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = rendering
    for app, spec in app_specs(objects).items():
        for role in ("driver", "executor"):
            env = {e["name"]: e for e in spec[role]["env"]}
            for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                assert "value" not in env[var], f"{name} {app} {role} {var}"
                assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "clickrec-s3", "key": var}
            assert spec[role]["envFrom"] == [
                {"secretRef": {"name": "clickrec-mlflow", "optional": True}}
            ]
        for key in (*spec.get("sparkConf", {}), *spec.get("hadoopConf", {})):
            assert not re.search(r"(?i)access\.key|secret|password|token", key), (
                f"{name} {app} {key}"
            )


def test_conf_k8s_yaml_is_delivered_by_the_configmap(
    rendering: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = rendering
    (configmap,) = by_kind(objects, "ConfigMap").values()
    assert configmap["metadata"]["name"].startswith("clickrec-conf")
    assert configmap["data"]["k8s.yaml"] == (REPO_ROOT / "conf" / "k8s.yaml").read_text(encoding="utf-8")
    for app, spec in app_specs(objects).items():
        for role in ("driver", "executor"):
            assert spec[role]["configMaps"] == [
                {"name": configmap["metadata"]["name"], "path": CONF_MOUNT}
            ], f"{name} {app} {role}"
        args = spec["arguments"]
        assert args[args.index("--config") + 1] == f"{CONF_MOUNT}/k8s.yaml", f"{name} {app}"


def test_every_file_conf_k8s_yaml_names_is_in_the_configmap(
    rendering: tuple[str, list[dict[str, Any]]],
) -> None:
    # The image has no conf/ folder: a suite path must point into the mounted ConfigMap, and
    # the ConfigMap must hold the repository's suite there.
    from clickrec.config import load_config

    name, objects = rendering
    (configmap,) = by_kind(objects, "ConfigMap").values()
    ingest = load_config(REPO_ROOT / "conf" / "k8s.yaml").ingest
    for key in ("events_suite", "ratings_suite"):
        path = getattr(ingest, key)
        assert path.startswith(f"{CONF_MOUNT}/"), f"{name}: ingest.{key} = {path} is not under {CONF_MOUNT}"
        file = path.removeprefix(f"{CONF_MOUNT}/")
        assert configmap["data"].get(file) == (REPO_ROOT / "conf" / "expectations" / file).read_text(
            encoding="utf-8"
        ), f"{name}: ConfigMap {configmap['metadata']['name']} does not hold {file}"
    assert set(configmap["data"]) == {"k8s.yaml", "clickstream_events.json", "ratings.json"}


def test_restart_policies(rendering: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = rendering
    specs = app_specs(objects)
    for app in BATCH_JOBS | {SCHEDULE}:
        policy = specs[app]["restartPolicy"]
        assert policy["type"] == "OnFailure", f"{name} {app}"
        assert policy["onFailureRetries"] >= 1 and policy["onSubmissionFailureRetries"] >= 1
        assert policy["onFailureRetryInterval"] >= 1
    assert specs[STREAM_JOB]["restartPolicy"]["type"] == "Always"


def test_the_stream_checkpoints_on_s3a() -> None:
    from clickrec.config import load_config

    (stream,) = [o for o in kustomize_build(BASE_DIR) if o["metadata"]["name"] == STREAM_JOB]
    args = stream["spec"]["arguments"]
    overrides = [args[i + 1] for i, a in enumerate(args) if a in ("--set", "-s")]
    config = load_config(REPO_ROOT / "conf" / "k8s.yaml", overrides)
    from clickrec.stream import checkpoint_path

    assert checkpoint_path(config).startswith("s3a://")  # under the lake, which outlives the pod
    assert "--available-now" not in args and "--max-seconds" not in args  # long-running


# sparkConf keys the operator's validating webhook refuses (v2.5.2,
# internal/webhook/sparkconf_validator.go): set through CRD fields, or by the operator itself.
OPERATOR_DENIED_SPARK_CONF = {
    "spark.master", "spark.kubernetes.driver.master",
    "spark.kubernetes.container.image", "spark.kubernetes.driver.container.image",
    "spark.kubernetes.executor.container.image",
    "spark.kubernetes.authenticate.driver.serviceAccountName",
    "spark.kubernetes.authenticate.executor.serviceAccountName",
    "spark.kubernetes.authenticate.oauthTokenFile", "spark.kubernetes.authenticate.oauthToken",
    "spark.kubernetes.authenticate.driver.oauthTokenFile", "spark.kubernetes.authenticate.driver.oauthToken",
    "spark.kubernetes.authenticate.executor.oauthTokenFile", "spark.kubernetes.authenticate.executor.oauthToken",
}


def test_no_spark_conf_key_the_operators_webhook_refuses(rendering: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = rendering
    for app, spec in app_specs(objects).items():
        conf = spec.get("sparkConf", {})
        assert not OPERATOR_DENIED_SPARK_CONF & set(conf), f"{name} {app}"
        assert conf.get("spark.kubernetes.namespace") in (None, "clickrec"), f"{name} {app}"


def test_the_stream_driver_has_time_to_stop_gracefully(rendering: tuple[str, list[dict[str, Any]]]) -> None:
    """Deleting the stream's pod gives it terminationGracePeriodSeconds before SIGKILL: more than
    the stop timeout its config gives the running batch (the kubelet's default is 30 s)."""
    from clickrec.config import load_config

    name, objects = rendering
    grace = app_specs(objects)[STREAM_JOB]["driver"].get("terminationGracePeriodSeconds", 30)
    stop_timeout = load_config(REPO_ROOT / "conf" / "k8s.yaml").stream.stop_timeout_seconds
    assert grace > stop_timeout + 10, f"{name}: {grace} s of grace for a {stop_timeout} s stop"


def test_prod_runs_the_stream_beside_the_nightly_pipeline_with_safe_commits() -> None:
    """The stream and the active schedule are rendered together, and the config they share
    commits with put-if-absent writes (docs/concurrency.md), not a single-writer mode."""
    from clickrec.config import load_config

    objects = kustomize_build(OVERLAYS_DIR / "prod")
    assert STREAM_JOB in by_kind(objects, "SparkApplication")
    assert not by_kind(objects, "ScheduledSparkApplication")[SCHEDULE]["spec"].get("suspend")
    assert load_config(REPO_ROOT / "conf" / "k8s.yaml").s3.commit == "conditional_put"


def test_the_nightly_schedule(rendering: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = rendering
    schedule = by_kind(objects, "ScheduledSparkApplication")[SCHEDULE]["spec"]
    assert croniter.is_valid(schedule["schedule"]) and len(schedule["schedule"].split()) == 5
    zoneinfo.ZoneInfo(schedule["timeZone"])
    assert schedule["concurrencyPolicy"] == "Forbid"
    pipeline = by_kind(objects, "SparkApplication")["clickrec-pipeline"]["spec"]
    assert schedule["template"] == pipeline, f"{name}: the nightly run differs from the pipeline"


def test_namespaces_in_overlays() -> None:
    for overlay in overlay_dirs():
        objects = kustomize_build(overlay)
        namespaces = {o["metadata"].get("namespace") for o in objects}
        assert len(namespaces) == 1 and None not in namespaces, overlay
        (namespace,) = namespaces
        assert namespace != "default"
        (binding,) = by_kind(objects, "RoleBinding").values()
        assert [s["namespace"] for s in binding["subjects"]] == [namespace]


def test_rbac_is_least_privilege(rendering: tuple[str, list[dict[str, Any]]]) -> None:
    _name, objects = rendering
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (role,) = by_kind(objects, "Role").values()
    allowed = {
        "pods": {"get", "list", "watch", "create", "patch", "delete", "deletecollection"},
        "configmaps": {"get", "list", "create", "delete", "deletecollection"},
        "services": {"get", "list", "delete", "deletecollection"},
    }
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""], rule
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert "resourceNames" not in rule or rule["resourceNames"]
        for resource in rule["resources"]:
            assert set(rule["verbs"]) <= allowed.get(resource, set()), (resource, rule["verbs"])
    (binding,) = by_kind(objects, "RoleBinding").values()
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    accounts = by_kind(objects, "ServiceAccount")
    driver_sa, executor_sa = (
        DEFAULTS["driver"]["serviceAccount"],
        DEFAULTS["executor"]["serviceAccount"],
    )
    assert [s["name"] for s in binding["subjects"]] == [driver_sa]
    assert set(accounts) == {driver_sa, executor_sa}
    assert accounts[executor_sa]["automountServiceAccountToken"] is False


def test_overlays_differ_from_the_base_only_where_they_say(
    rendering: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = rendering
    defaults_objects = [o for o in objects if o["kind"] == "SparkJobDefaults"]
    assert defaults_objects == [], "the local-config defaults object must not be emitted"
    if name == "overlays/dev":
        schedule = by_kind(objects, "ScheduledSparkApplication")[SCHEDULE]["spec"]
        assert schedule["suspend"] is True
    if name == "overlays/prod":
        specs = app_specs(objects)
        assert not by_kind(objects, "ScheduledSparkApplication")[SCHEDULE]["spec"].get("suspend")
        assert all(s["image"].startswith("registry.example.com/clickrec:") for s in specs.values())


def test_only_applications_are_started_on_demand(
    rendering: tuple[str, list[dict[str, Any]]],
) -> None:
    """docs/deploy.md applies `-l 'clickrec.dev/launch!=on-demand'` first, then each job."""
    name, objects = rendering
    for obj in objects:
        launch = obj["metadata"].get("labels", {}).get("clickrec.dev/launch")
        expected = "on-demand" if obj["kind"] == "SparkApplication" else None
        assert launch == expected, f"{name} {obj['kind']}/{obj['metadata']['name']}"
    components = {
        o["metadata"]["labels"]["app.kubernetes.io/component"]
        for o in objects
        if o["kind"] == "SparkApplication"
    }
    assert components == {"ingest", "train", "publish", "pipeline", "stream"}
