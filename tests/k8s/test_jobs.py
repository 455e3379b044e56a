"""Each SparkApplication runs a file the image really has, with arguments its job accepts.

The image copies jobs/ to the folder its install recipe (k8s/image/install.sh) names; every mainApplicationFile must be
`local://<that folder>/<job>.py` for a thin jobs/<job>.py, and the manifest's arguments must
parse with that job's parser (the `clickrec` typer app; jobs/<job>.py calls the same one).
Jobs whose subcommand is not in the CLI yet are listed in PENDING_SUBCOMMANDS (tests/support/k8s.py):
the test that compares it with the CLI fails as soon as one lands (remove it there then) or a manifest names a
job that does not exist.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

import pytest
import typer.main

from tests.support.k8s import (
    PENDING_JOB_FILES,
    PENDING_SUBCOMMANDS,
    REPO_ROOT,
    job_of,
    kustomize_build,
    renderings,
)

JOBS_DIR = REPO_ROOT / "jobs"


def _applications() -> list[tuple[str, str, dict[str, Any]]]:
    """(rendering, application name, spec) for every SparkApplication and schedule template."""
    out = []
    for rendering, path in sorted(renderings().items()):
        for obj in kustomize_build(path):
            if obj["kind"] == "SparkApplication":
                out.append((rendering, obj["metadata"]["name"], obj["spec"]))
            elif obj["kind"] == "ScheduledSparkApplication":
                out.append((rendering, obj["metadata"]["name"], obj["spec"]["template"]))
    return out


APPLICATIONS = _applications()


def subcommand_of(job_file: Path) -> str:
    """Check the thin-job shape and return the subcommand it runs: main(["<name>", *argv])."""
    tree = ast.parse(job_file.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{job_file} has no docstring"
    imports = [
        (n.module, [a.name for a in n.names]) for n in tree.body if isinstance(n, ast.ImportFrom)
    ]
    assert ("clickrec.cli", ["main"]) in imports, f"{job_file}: must import main from clickrec.cli"
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "main"
    ]
    assert len(calls) == 1, f"{job_file}: one main([...]) call"
    (arg,) = calls[0].args
    assert isinstance(arg, ast.List) and isinstance(arg.elts[0], ast.Constant)
    return str(arg.elts[0].value)


def cli_group() -> Any:
    """The click group behind the `clickrec` typer app (typer >= 0.29 vendors click)."""
    from clickrec.cli import app

    group = typer.main.get_command(app)
    assert hasattr(group, "commands"), "clickrec's CLI must be a group of subcommands"
    return group


def usage_error() -> type[Exception]:
    """click's UsageError from the click package the CLI is built on (vendored or not)."""
    command_class = next(c for c in type(cli_group()).__mro__ if c.__name__ == "Command")
    package = command_class.__module__.rsplit(".", 1)[0]
    return importlib.import_module(f"{package}.exceptions").UsageError


def test_every_application_runs_a_job_file_the_image_has() -> None:
    missing = set()
    for rendering, name, spec in APPLICATIONS:
        job = job_of(spec)
        assert name.removeprefix("clickrec-").startswith(job), f"{rendering} {name} runs {job}"
        job_file = JOBS_DIR / f"{job}.py"
        if not job_file.is_file():
            missing.add(job)
            continue
        assert subcommand_of(job_file) == job, f"{job_file} must run `clickrec {job}`"
    assert missing == PENDING_JOB_FILES, (
        "jobs/<job>.py missing for the manifests of "
        f"{sorted(missing)}; PENDING_JOB_FILES says {sorted(PENDING_JOB_FILES)}"
    )


def test_pending_subcommands_are_exactly_the_missing_ones() -> None:
    commands = set(cli_group().commands)
    named = {job_of(spec) for _, _, spec in APPLICATIONS}
    assert named == {"ingest", "train", "publish", "pipeline", "stream"}
    assert named - commands == PENDING_SUBCOMMANDS


PARSEABLE = [
    pytest.param(spec, id=f"{rendering}:{name}")
    for rendering, name, spec in APPLICATIONS
    if job_of(spec) not in PENDING_SUBCOMMANDS
]


@pytest.mark.parametrize("spec", PARSEABLE)
def test_manifest_arguments_are_accepted_by_the_job_parser(spec: dict[str, Any]) -> None:
    from clickrec.config import load_config

    job = job_of(spec)
    command = cli_group().commands[job]
    args = list(spec.get("arguments", []))
    ctx = command.make_context(job, args, resilient_parsing=False)
    assert ctx.params["config"] == Path("/etc/clickrec/k8s.yaml")
    # The config the job will load: conf/k8s.yaml (mounted there) plus the manifest's --set.
    load_config(REPO_ROOT / "conf" / "k8s.yaml", ctx.params.get("set_") or [])


def test_the_parser_check_is_not_vacuous() -> None:
    command = cli_group().commands["train"]
    with pytest.raises(usage_error()):
        command.make_context("train", ["--config", "/etc/clickrec/k8s.yaml", "--bogus"])
    assert PARSEABLE, "no manifest has a job whose subcommand exists"
