"""Offline checks for k8s/: rendering with kustomize, CRD and core schemas, a secret scanner.

Everything here works without a cluster or a network: kustomize is the binary `make setup`
builds into .cache/bin, the spark-operator CRDs come from ../shared/k8s-schemas, and the
Kubernetes core schemas from the `kubernetes-validate` wheel (a dev dependency).
"""

from __future__ import annotations

import configparser
import copy
import functools
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "k8s"
OPERATOR_DIR = K8S_DIR / "spark-operator"
BASE_DIR = OPERATOR_DIR / "base"
OVERLAYS_DIR = OPERATOR_DIR / "overlays"
DOCKERFILE = K8S_DIR / "image" / "Dockerfile"
KUSTOMIZE = REPO_ROOT / ".cache" / "bin" / "kustomize"
SCHEMAS_DIR = Path(
    os.environ.get("CLICKREC_K8S_SCHEMAS_DIR", str(REPO_ROOT.parent / "shared" / "k8s-schemas"))
)
CRD_FILES = {
    "SparkApplication": "sparkoperator.k8s.io_sparkapplications.yaml",
    "ScheduledSparkApplication": "sparkoperator.k8s.io_scheduledsparkapplications.yaml",
}
CRD_API_VERSION = "sparkoperator.k8s.io/v1beta2"
# The Kubernetes minor version whose core schemas the RBAC and ConfigMap objects must satisfy.
KUBERNETES_VERSION = "1.34"
CORE_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ConfigMap")

# Subcommands the manifests name that the CLI does not have yet (none today: a manifest for a
# planned job goes here until its subcommand exists).
PENDING_SUBCOMMANDS: set[str] = set()
# jobs/<job>.py files the manifests name that are not in the tree yet.
PENDING_JOB_FILES: set[str] = set()


class SetupMissing(RuntimeError):
    """A cache that `make setup` makes (kustomize) or a shared file (the CRDs) is missing."""


# --- rendering -----------------------------------------------------------------------------------


def kustomize_binary() -> Path:
    """The pinned kustomize from `make setup`; never downloaded at test time."""
    if not os.access(KUSTOMIZE, os.X_OK):
        raise SetupMissing(f"{KUSTOMIZE} not found: run `make setup` (it builds kustomize once)")
    return KUSTOMIZE


@functools.cache
def _build(path: str) -> str:
    result = subprocess.run(
        [str(kustomize_binary()), "build", path],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"kustomize build {path} failed:\n{result.stderr}")
    return result.stdout


def kustomize_build(path: Path) -> list[dict[str, Any]]:
    """Render a kustomization folder into its objects (a fresh copy on every call)."""
    return [d for d in yaml.safe_load_all(_build(str(path))) if d]


def overlay_dirs() -> list[Path]:
    return sorted(p for p in OVERLAYS_DIR.iterdir() if (p / "kustomization.yaml").is_file())


def renderings() -> dict[str, Path]:
    """Every folder users may build: the base and each overlay."""
    return {"base": BASE_DIR, **{f"overlays/{p.name}": p for p in overlay_dirs()}}


def source_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every YAML document of the manifests' source files (not kustomizations)."""
    for path in sorted(OPERATOR_DIR.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                yield path, doc


# --- CRD schemas ---------------------------------------------------------------------------------

INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
# The CRDs leave `metadata` as a bare object; the API server applies ObjectMeta's rules.
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": DNS_SUBDOMAIN},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
        "generateName": {"type": "string"},
    },
    "additionalProperties": False,
}


def convert_crd_schema(node: Any) -> Any:
    """Turn a CRD's structural openAPIV3Schema into a JSON Schema that is as strict as the server.

    - An object with `properties` and no `additionalProperties` gets `additionalProperties:
      false` unless it has `x-kubernetes-preserve-unknown-fields`: the API server prunes unknown
      fields silently, so a misspelt field would be lost; here it is an error.
    - `x-kubernetes-int-or-string` becomes anyOf integer/string (kept when already there).
    - `nullable: true` adds "null" to the type.
    - `x-kubernetes-list-type: set` becomes uniqueItems; `map` lists keep their keys for the
      `x-kubernetes-list-map-keys` check of `crd_validator`.
    """
    if isinstance(node, list):
        return [convert_crd_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: convert_crd_schema(v) for k, v in node.items() if k != "description"}
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _list_map_keys(validator: Any, keys: list[str], instance: Any, schema: dict) -> Iterator[Any]:
    if not validator.is_type(instance, "array"):
        return
    seen: set[tuple[Any, ...]] = set()
    for item in instance:
        if isinstance(item, dict):
            key = tuple(repr(item.get(k)) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(f"duplicate entry for list-map keys {keys}: {key}")
            seen.add(key)


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker()
    for name, (low, high) in INT_RANGES.items():
        checker.checks(name)(lambda v, lo=low, hi=high: not isinstance(v, int) or lo <= v <= hi)
    return checker


CrdValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {"x-kubernetes-list-map-keys": _list_map_keys}
)


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The converted v1beta2 schema of a spark-operator kind, from ../shared/k8s-schemas."""
    path = SCHEMAS_DIR / CRD_FILES[kind]
    if not path.is_file():
        raise SetupMissing(
            f"{path} not found: the spark-operator CRDs live in ../shared/k8s-schemas "
            "(or set CLICKREC_K8S_SCHEMAS_DIR)"
        )
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta2"]
    schema = convert_crd_schema(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = OBJECT_META
    schema["properties"]["apiVersion"] = {"const": CRD_API_VERSION}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return schema


def crd_errors(obj: dict[str, Any], *, partial: bool = False) -> list[str]:
    """Schema errors of one SparkApplication / ScheduledSparkApplication ([] when valid).

    `partial` drops every `required` (for the base's per-job source files, which kustomize
    completes with the shared defaults): field names and types are still checked.
    """
    schema = crd_schema(obj.get("kind", ""))
    if partial:
        schema = _without_required(copy.deepcopy(schema))
    validator = CrdValidator(schema, format_checker=_format_checker())
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    ]


def _without_required(node: Any) -> Any:
    if isinstance(node, dict):
        node.pop("required", None)
        for value in node.values():
            _without_required(value)
    elif isinstance(node, list):
        for value in node:
            _without_required(value)
    return node


# --- core schemas --------------------------------------------------------------------------------


def core_errors(obj: dict[str, Any]) -> list[str]:
    """Errors of a core object against Kubernetes' strict JSON schema (kubernetes-validate)."""
    from kubernetes_validate import utils as kv

    try:
        kv.validate(obj, KUBERNETES_VERSION, strict=True)
    except kv.ValidationError as exc:
        return [f"{'/'.join(str(p) for p in exc.path)}: {exc.message}"]
    return []


# --- literal secrets -----------------------------------------------------------------------------

SECRET_NAME = re.compile(
    r"(?i)(secret|passw(or)?d|token|credential|api[_.-]?key|access[_.-]?key|private[_.-]?key)"
)
# Keys whose values name a mechanism or a Secret object, not a secret.
SECRET_NAME_ALLOWED = re.compile(
    r"(?i)(provider|secretref|secretkeyref|secret[_-]?name|existing[_-]?secret|tokenfile)$"
)
TEXT_PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "JSON web token": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\."),
}
# KEY=value / KEY: value with a secret-looking KEY and a long literal value (not a
# placeholder like <secret-key>, ${VAR} or $(command)).
SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b(?P<key>[A-Z0-9_.-]*(secret|password|passwd|token|access[_.-]?key)[A-Z0-9_.-]*)"
    r"\s*[=:]\s*[\"']?(?!\$\{|<|\$\()[A-Za-z0-9/+=_.-]{12,}"
)


@dataclass(frozen=True)
class Finding:
    path: Path
    where: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}: {self.where}: {self.why}"


def _walk_yaml(node: Any, where: str) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield where, key, value
            yield from _walk_yaml(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk_yaml(value, f"{where}[{i}]")


def _yaml_findings(path: Path, doc: Any) -> Iterator[Finding]:
    if (
        isinstance(doc, dict)
        and doc.get("kind") == "Secret"
        and (doc.get("data") or doc.get("stringData"))
    ):
        yield Finding(
            path, "Secret", "a Secret with data: create Secrets out of band (docs/deploy.md)"
        )
    for where, key, value in _walk_yaml(doc, ""):
        # env entries: {name: SOME_SECRET, value: literal} instead of valueFrom.
        if key == "name" and isinstance(value, str) and SECRET_NAME.search(value):
            parent = _lookup(doc, where)
            if isinstance(parent, dict) and parent.get("value") not in (None, ""):
                yield Finding(
                    path, f"{where}.value", f"literal value for {value}; use valueFrom.secretKeyRef"
                )
        # config maps (sparkConf, hadoopConf, ...): "...secret.key": "literal".
        if (
            isinstance(key, str)
            and isinstance(value, (str, int))
            and not isinstance(value, bool)
            and str(value).strip()
            and SECRET_NAME.search(key)
            and not SECRET_NAME_ALLOWED.search(key)
            and key not in {"name", "key"}
        ):
            yield Finding(path, f"{where}.{key}", "a secret-looking key with a literal value")


def _lookup(doc: Any, where: str) -> Any:
    node = doc
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", where):
        name, index = part
        node = node[int(index)] if index else node.get(name) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def find_literal_secrets(root: Path) -> list[Finding]:
    """Every literal secret under `root`: Secret objects with data, env/conf literals, key text.

    A secret may only be referenced (secretKeyRef, envFrom.secretRef); placeholders such as
    `<secret-key>` and `${VAR}` are not secrets.
    """
    findings: list[Finding] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for why, pattern in TEXT_PATTERNS.items():
                if pattern.search(line):
                    findings.append(Finding(path, f"line {lineno}", why))
            for match in SECRET_ASSIGNMENT.finditer(line):
                if not SECRET_NAME_ALLOWED.search(match["key"]):
                    findings.append(Finding(path, f"line {lineno}", "secret assignment"))
        if path.suffix in {".yaml", ".yml"}:
            try:
                docs = list(yaml.safe_load_all(text))
            except yaml.YAMLError:
                continue
            for doc in docs:
                findings.extend(_yaml_findings(path, doc))
    return findings


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- the project's own facts ---------------------------------------------------------------------


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "setup.cfg", encoding="utf-8")
    return parser


def project_version() -> str:
    return setup_cfg()["metadata"]["version"].strip()


def pinned(package: str) -> str:
    for line in setup_cfg()["options"]["install_requires"].splitlines():
        name, _, version = line.strip().partition("==")
        if name == package:
            return version
    raise KeyError(package)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of k8s/image/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


IMAGE_DIR = K8S_DIR / "image"
INSTALL_SH = IMAGE_DIR / "install.sh"
ENTRYPOINT_SH = IMAGE_DIR / "entrypoint.sh"


def image_config() -> dict[str, Any]:
    """The Dockerfile's ENV, USER, WORKDIR, ENTRYPOINT as k8s/image/image_config.py reads them
    (the values the OCI build gives its image too)."""
    spec = importlib.util.spec_from_file_location("clickrec_image_config", IMAGE_DIR / "image_config.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.image_config()


def image_jobs_dir() -> PurePosixPath:
    """Where k8s/image/install.sh copies jobs/: $CLICKREC_HOME/jobs, CLICKREC_HOME from the
    Dockerfile's ENV."""
    text = INSTALL_SH.read_text(encoding="utf-8")
    copies = re.findall(r'^cp -r "\$CONTEXT"/jobs/\. "\$CLICKREC_HOME/jobs/"$', text, re.MULTILINE)
    assert len(copies) == 1, "k8s/image/install.sh must copy jobs/ to $CLICKREC_HOME/jobs once"
    return PurePosixPath(image_config()["env"]["CLICKREC_HOME"]) / "jobs"


def job_of(spec: dict[str, Any]) -> str:
    """The job a spec runs: local://<image jobs dir>/<job>.py -> <job>."""
    url = spec["mainApplicationFile"]
    assert url.startswith("local://"), f"{url}: the file must be in the image (local://)"
    path = PurePosixPath(url.removeprefix("local://"))
    assert path.parent == image_jobs_dir(), f"{url}: not where the image puts jobs/"
    assert path.suffix == ".py"
    return path.stem
