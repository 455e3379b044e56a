"""`clickrec pipeline`: ingest -> train -> publish in one process and one Spark session.

The nightly pipeline (update data -> train model -> publish model) as one job: each step
is the same package function its own subcommand calls, and the summary holds each step's
summary under its name. A failing step stops the pipeline (later steps would read stale
inputs). Running it again is safe: ingest adds nothing it already holds and publish rewrites
only lists that differ. Train is the exception: every run registers a new model version (a
challenger), so after a failed publish the rerun publishes that new version's lists.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from clickrec.choices import InputFormat
from clickrec.config import ClickrecConfig
from clickrec.tracking import Tracking

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def run_pipeline(
    spark: SparkSession, config: ClickrecConfig, *, input_path: str, input_format: InputFormat | None = None,
    tracking: Tracking | None = None,
) -> dict[str, Any]:
    """Run the three steps; publish every alias of publish.pipeline_aliases. Returns the summary.

    An alias no model version has (train.promote=never before any champion) is skipped, and
    the summary says so under its name.
    """
    from clickrec.ingest import ingest
    from clickrec.publish import publish
    from clickrec.train import run_train

    tracking = tracking or Tracking(config.mlflow)
    started = time.monotonic()
    log.info("pipeline 1/3: ingest %s", input_path)
    ingest_summary = ingest(spark, config, input_path=input_path, input_format=input_format)
    log.info("pipeline 2/3: train")
    train_summary = run_train(spark, config, tracking=tracking)
    published: dict[str, Any] = {}
    aliases = tracking.alias_versions()
    for alias in config.publish.pipeline_aliases:
        if aliases.get(alias) is None:  # e.g. train.promote=never before any champion exists
            reason = (f"no version of {config.mlflow.model_name} has the alias {alias} (see train.promotion_reason); "
                      f"readers of {alias} keep what was published before, or the popular list")
            log.warning("pipeline 3/3: publish %s skipped: %s", alias, reason)
            published[alias] = {"skipped": reason}
            continue
        log.info("pipeline 3/3: publish %s", alias)
        published[alias] = publish(spark, config, alias=alias, tracking=tracking)
    return {
        "input": input_path,
        "ingest": ingest_summary,
        "train": train_summary,
        "publish": published,
        "seconds": round(time.monotonic() - started, 1),
    }
