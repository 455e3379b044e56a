"""`clickrec pipeline`: ingest -> train -> publish in one process and one Spark session.

The seed's Kubeflow pipeline (updatedata -> trainmodel -> publishmodel) as one job: each step
is the same package function its own subcommand calls, and the summary holds each step's
summary under its name. A failing step stops the pipeline (later steps would read stale
inputs); every step is idempotent, so the nightly schedule can simply run it again.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from clickrec.config import ClickrecConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def run_pipeline(
    spark: SparkSession, config: ClickrecConfig, *, input_path: str, input_format: str | None = None
) -> dict[str, Any]:
    """Run the three steps; publish every alias of publish.pipeline_aliases. Returns the summary."""
    from clickrec.ingest import ingest
    from clickrec.publish import publish
    from clickrec.train import run_train

    started = time.monotonic()
    log.info("pipeline 1/3: ingest %s", input_path)
    ingest_summary = ingest(spark, config, input_path=input_path, input_format=input_format)
    log.info("pipeline 2/3: train")
    train_summary = run_train(spark, config)
    published: dict[str, Any] = {}
    for alias in config.publish.pipeline_aliases:
        log.info("pipeline 3/3: publish %s", alias)
        published[alias] = publish(spark, config, alias=alias)
    return {
        "input": input_path,
        "ingest": ingest_summary,
        "train": train_summary,
        "publish": published,
        "seconds": round(time.monotonic() - started, 1),
    }
