"""The quality gate: one Great Expectations suite per input kind, kept as JSON under conf/expectations.

The suite file is the single source of expectations, used twice:

- rejection_checks turns every expectation into a Spark predicate that is true on a failing
  row, named by the expectation's `meta.reason`; clickrec.transforms.clickstream.flag_rejections
  puts those names on the row, and every row with a reason goes to bronze/quarantine.
- validate_batch runs the suite with Great Expectations on the whole batch (a Spark DataFrame)
  and writes the GX data docs HTML under the lake (`<lake.root>/_quality/data_docs`).

Only column-map expectations whose failing rows can be named are allowed (the four kinds in
_PREDICATES); anything else in a suite is a ConfigError naming the expectation.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clickrec import paths
from clickrec.errors import ConfigError

if TYPE_CHECKING:
    from great_expectations.data_context.store.store import DataDocsSiteConfigTypedDict
    from pyspark.sql import Column, DataFrame

log = logging.getLogger(__name__)
_PARAM = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
DATA_DOCS_SITE = "clickrec_lake"


def load_suite(path: str | Path, params: Mapping[str, Any]) -> dict[str, Any]:
    """Read a suite JSON and replace whole-string `${name}` values by `params[name]`.

    Relative paths resolve against the working directory, then the project root. Returns the
    suite as a dict (name, expectations with type/kwargs/meta).
    """
    file = Path(path)
    if not file.is_absolute() and not file.is_file():
        file = paths.project_root() / file
    if not file.is_file():
        raise ConfigError(f"expectation suite {path} not found (config key ingest.*_suite)")
    try:
        suite = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"expectation suite {file} is not valid JSON: {exc}") from exc

    def substitute(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: substitute(v) for k, v in value.items()}
        if isinstance(value, list):
            return [substitute(v) for v in value]
        if isinstance(value, str):
            match = _PARAM.match(value)
            if match:
                if match.group(1) not in params:
                    raise ConfigError(f"expectation suite {file}: unknown parameter {value}")
                return params[match.group(1)]
        return value

    suite["expectations"] = [substitute(e) for e in suite.get("expectations", [])]
    for i, exp in enumerate(suite["expectations"]):
        if exp.get("type") not in _PREDICATES:
            raise ConfigError(
                f"expectation suite {file}: expectations[{i}] type {exp.get('type')!r} is not "
                f"supported (one of {sorted(_PREDICATES)})"
            )
        if not exp.get("meta", {}).get("reason"):
            raise ConfigError(f"expectation suite {file}: expectations[{i}] has no meta.reason")
    return suite


def _bound(value: Any) -> Any:
    """Suite bounds as Spark/GX compare them: 'YYYY-MM-DD hh:mm:ss' strings become datetimes."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _not_null(col: Column, kw: Mapping[str, Any]) -> Column:
    return col.isNull()


def _in_set(col: Column, kw: Mapping[str, Any]) -> Column:
    return col.isNotNull() & ~col.isin(list(kw["value_set"]))


def _regex(col: Column, kw: Mapping[str, Any]) -> Column:
    return col.isNotNull() & ~col.rlike(kw["regex"])


def _between(col: Column, kw: Mapping[str, Any]) -> Column:
    from pyspark.sql import functions as F

    fails = F.lit(False)
    lo, hi = kw.get("min_value"), kw.get("max_value")
    if lo is not None:
        lo_lit = F.lit(_bound(lo))
        fails = fails | ((col <= lo_lit) if kw.get("strict_min") else (col < lo_lit))
    if hi is not None:
        hi_lit = F.lit(_bound(hi))
        fails = fails | ((col >= hi_lit) if kw.get("strict_max") else (col > hi_lit))
    return col.isNotNull() & fails


_PREDICATES: dict[str, Callable[[Column, Mapping[str, Any]], Column]] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_values_to_match_regex": _regex,
    "expect_column_values_to_be_between": _between,
}


def rejection_checks(suite: Mapping[str, Any]) -> list[tuple[str, Column]]:
    """(reason, predicate true on a failing row) for every expectation of `suite`, in order."""
    from pyspark.sql import functions as F

    checks = []
    for exp in suite["expectations"]:
        kwargs = exp["kwargs"]
        col = F.col(f"`{kwargs['column']}`")
        checks.append((exp["meta"]["reason"], _PREDICATES[exp["type"]](col, kwargs)))
    return checks


def suite_reasons(suite: Mapping[str, Any]) -> list[str]:
    """The reason names a suite can give, in suite order, without duplicates."""
    return list(dict.fromkeys(e["meta"]["reason"] for e in suite["expectations"]))


def _docs_site_config(local_dir: str) -> DataDocsSiteConfigTypedDict:
    # GX 1.x renders data docs only into a local folder (it has no S3 store backend any more).
    return {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": local_dir},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file:")


def _quiet_gx() -> None:
    """GX logs hundreds of INFO lines while importing; keep its warnings only (set before import)."""
    for name in ("great_expectations", "py4j"):
        logging.getLogger(name).setLevel(logging.WARNING)


def preload_gx() -> threading.Thread:
    """Import Great Expectations in a background thread and return the thread.

    The import takes seconds of pure Python; started at the beginning of a job, it overlaps
    the Spark work that precedes validation (validate_batch's own import then finds it done,
    or waits for it under Python's import lock).
    """

    _quiet_gx()

    def load() -> None:
        try:
            import great_expectations  # noqa: F401
            from great_expectations.checkpoint import UpdateDataDocsAction  # noqa: F401
            from great_expectations.expectations.expectation_configuration import (  # noqa: F401
                ExpectationConfiguration,
            )
        except Exception:  # validate_batch imports again and reports the error
            log.debug("background import of great_expectations failed", exc_info=True)

    thread = threading.Thread(target=load, name="clickrec-gx-import", daemon=True)
    thread.start()
    return thread


def validate_batch(
    batch_df: DataFrame,
    suite: Mapping[str, Any],
    *,
    run_name: str,
    docs_dir: str | None,
) -> dict[str, Any]:
    """Validate `batch_df` with Great Expectations; write data docs to `docs_dir` (None: none).

    Returns {suite, success, evaluated, successful, unexpected: {reason: count}, data_docs}.
    `success` is GX's verdict on the batch; failing rows are already quarantined by the
    predicates, so a false here is reported, not raised (the gate on the rejected fraction is
    in clickrec.ingest).
    """
    _quiet_gx()
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction, ValidationAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    actions: list[ValidationAction] = []
    # A lake on S3 gets its docs rendered into a local folder first, then copied through the
    # session's s3a settings (the same endpoint and credentials as every table).
    render_dir = tempfile.mkdtemp(prefix="clickrec-data-docs-") if docs_dir and _is_remote(docs_dir) else docs_dir
    if render_dir is not None:
        context.add_data_docs_site(site_name=DATA_DOCS_SITE, site_config=_docs_site_config(render_dir))
        actions.append(UpdateDataDocsAction(name="data_docs", site_names=[DATA_DOCS_SITE]))
    # persist=False: the caller hands over a batch that is cheap to rescan (scratch Parquet or
    # an already persisted frame); GX's own persist() would keep a second copy in memory.
    source = context.data_sources.add_spark(name="clickrec", persist=False)
    asset = source.add_dataframe_asset(name=suite["name"])
    batch_definition = asset.add_batch_definition_whole_dataframe("batch")
    expectations = []
    for exp in suite["expectations"]:
        kwargs = {k: _bound(v) if k in ("min_value", "max_value") else v for k, v in exp["kwargs"].items()}
        expectations.append(
            ExpectationConfiguration(
                type=exp["type"], kwargs=kwargs, meta=exp.get("meta", {})
            ).to_domain_obj()
        )
    gx_suite = context.suites.add(gx.ExpectationSuite(name=suite["name"], expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite['name']}_batch", data=batch_definition, suite=gx_suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{suite['name']}_gate",
            validation_definitions=[definition],
            actions=actions,
            # Counts per expectation, without the per-expectation sample of unexpected values:
            # each sample is one more scan of the batch (a full one when nothing fails), and
            # every failing row is kept, raw line and reasons, in bronze/quarantine anyway.
            result_format={"result_format": "BASIC", "partial_unexpected_count": 0},
        )
    )
    try:
        result = checkpoint.run(
            batch_parameters={"dataframe": batch_df}, run_id=RunIdentifier(run_name=run_name)
        )
        if docs_dir is not None and render_dir is not None and render_dir != docs_dir:
            from clickrec.io.files import copy_local_dir

            copy_local_dir(batch_df.sparkSession, render_dir, docs_dir)
    finally:
        if render_dir is not None and render_dir != docs_dir:
            shutil.rmtree(render_dir, ignore_errors=True)
    unexpected: dict[str, int] = {}
    evaluated = successful = 0
    for run_result in result.run_results.values():
        for r in run_result.results:
            evaluated += 1
            successful += int(bool(r.success))
            expectation = r.expectation_config
            assert expectation is not None  # every result of a suite run names its expectation
            reason = (expectation.meta or {}).get("reason", expectation.type)
            count = int(r.result.get("unexpected_count") or 0)
            unexpected[reason] = unexpected.get(reason, 0) + count
    docs_index = None
    if docs_dir is not None:
        docs_index = f"{docs_dir.rstrip('/')}/index.html"
    return {
        "suite": suite["name"],
        "success": bool(result.success),
        "evaluated": evaluated,
        "successful": successful,
        "unexpected": unexpected,
        "data_docs": docs_index,
    }
