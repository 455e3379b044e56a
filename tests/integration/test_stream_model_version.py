"""Which model the stream folds users in with: the version gold serves, not just the alias."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from clickrec import columns as C
from clickrec.errors import ServiceError
from clickrec.generate import generate_clickstream
from clickrec.ingest import ingest
from clickrec.io.delta import table_version
from clickrec.io.lake import Lake
from clickrec.microbatch import BatchProcessor
from clickrec.ml.foldin_model import served_version
from clickrec.publish import publish
from clickrec.status import collect_status
from clickrec.tracking import Tracking
from tests.support.config import make_config
from tests.support.models import register_model

pytestmark = pytest.mark.slow  # ingests and registers several models per test


def test_the_stream_follows_a_rollback_instead_of_the_alias(spark: SparkSession, tmp_path: Path) -> None:
    config = make_config(tmp_path, ingest={"data_docs": False}, publish={"n": 5})
    lake = Lake.from_config(config)
    source = tmp_path / "events.csv"
    generate_clickstream(source, events=800, seed=11)
    ingest(spark, config, input_path=str(source))
    first = register_model(spark, config, max_iter=2, seed=1)
    second = register_model(spark, config, max_iter=2, seed=2)  # now the champion

    processor = BatchProcessor(spark, config)
    assert served_version(config, lake) is None  # nothing published: the alias decides
    processor.refresh_model()
    assert processor.model is not None and processor.model.version == second

    publish(spark, config)  # the champion, as the pipeline publishes it
    assert served_version(config, lake) == second
    processor.refresh_model()
    assert processor.model.version == second and processor.totals["model_reloads"] == 1

    # A rollback republishes the first version as the champion and leaves the alias on the second:
    # the stream's lists must come from the model the rest of the variant was published with.
    publish(spark, config, model_version=first)
    assert served_version(config, lake) == first
    processor.refresh_model()
    assert processor.model.version == first and processor.totals["model_reloads"] == 2

    # Another variant, or gold written under another model name, falls back to that alias.
    other = make_config(tmp_path, stream={"variant": "challenger"})
    assert served_version(other, lake) is None
    renamed = make_config(tmp_path, mlflow={"model_name": "another-model"})
    assert served_version(renamed, lake) is None

    # The same user's list folded in twice: the second write commits nothing (a replayed batch
    # leaves gold, and the list's updated_at, as they were).
    items = [r[C.ITEM_IDX] for r in lake.read(spark, C.SILVER_INTERACTIONS)
             .select(C.ITEM_IDX).distinct().limit(3).collect()]
    late = pd.DataFrame({C.USER_ID: ["late-user"] * 3, C.ITEM_IDX: items, C.RATING: [3.0] * 3,
                         C.PURCHASES: [0] * 3})
    gold_path = lake.path(C.GOLD_RECOMMENDATIONS)
    assert processor.gold(late, datetime(2026, 1, 1)) == 1
    written = table_version(spark, gold_path)
    assert processor.gold(late, datetime(2026, 1, 2)) == 0
    assert table_version(spark, gold_path) == written

    # A publish lands between a batch's model load and its gold write: the batch must not add
    # lists of the version gold no longer serves (lists of two models would mix), and its users
    # are folded in again with the version now served.
    publish(spark, config)  # the champion (second) again; the processor still holds the first
    assert served_version(config, lake) == second and processor.model.version == first
    late[C.USER_ID] = "later-user"
    assert processor.gold(late, datetime(2026, 1, 3)) == 1
    assert processor.model.version == second
    gold = lake.read(spark, C.GOLD_RECOMMENDATIONS)
    assert [r[C.MODEL_VERSION] for r in gold.where(f"{C.USER_ID} = 'later-user'").collect()] == [second]
    assert gold.where(f"{C.VARIANT} = 'champion' AND {C.MODEL_VERSION} = {first}").count() == 0


def test_an_unreachable_registry_is_a_service_error_and_the_stream_keeps_its_model(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = make_config(tmp_path, ingest={"data_docs": False}, publish={"n": 5})
    source = tmp_path / "events.csv"
    generate_clickstream(source, events=600, seed=12)
    ingest(spark, config, input_path=str(source))
    version = register_model(spark, config, max_iter=2, seed=1)
    publish(spark, config)
    processor = BatchProcessor(spark, config)
    processor.refresh_model()
    assert processor.model is not None and processor.model.version == version

    # The same lake, the registry unreachable (nothing listens on port 9); no retries, so the
    # test does not wait for MLflow's backoff.
    down = make_config(tmp_path, mlflow={"tracking_uri": "http://127.0.0.1:9", "http_max_retries": 0,
                                         "http_timeout_seconds": 5})
    with pytest.raises(ServiceError):  # not NotFoundError: "run `clickrec train` first" would mislead
        Tracking(down.mlflow).resolve_model_version(version=version)
    with pytest.raises(ServiceError):  # not "no alias set", not a raw MlflowException (exit 1)
        Tracking(down.mlflow).alias_versions()
    with pytest.raises(ServiceError):  # worth retrying: not "the version is gone"
        Tracking(down.mlflow).load_model_version(version)
    report = collect_status(down)  # still lists the tables, and says why the models are missing
    assert "MLflow at http://127.0.0.1:9" in report["models"]["error"] and report["tables"]
    # A stream that has a model keeps it through the outage instead of failing its batch.
    processor.config, processor.tracking = down, Tracking(down.mlflow)
    processor.model_checked_version = None
    processor.refresh_model()
    assert processor.model.version == version and processor.model_checked_version is None

    # Gold now serves a newer version the stream cannot load during the outage: fold-in stops
    # rather than mixing the old model's lists with the new one's, and it tries again later.
    processor.config, processor.tracking, processor.model_checked_version = config, Tracking(config.mlflow), version
    newer = register_model(spark, config, max_iter=2, seed=2)
    publish(spark, config)
    processor.config, processor.tracking = down, Tracking(down.mlflow)
    processor.refresh_model()
    assert processor.model is None and processor.model_checked_version == version
    processor.config, processor.tracking = config, Tracking(config.mlflow)  # the registry is back
    processor.refresh_model()
    assert processor.model is not None and processor.model.version == newer


def test_fold_in_is_off_for_a_model_trained_explicit_or_nonnegative(spark: SparkSession, tmp_path: Path) -> None:
    # fold_in solves implicit, unconstrained ALS; such a model's users would get lists it would
    # not give them, so the stream leaves its lists alone.
    config = make_config(tmp_path, ingest={"data_docs": False})
    source = tmp_path / "events.csv"
    generate_clickstream(source, events=600, seed=13)
    ingest(spark, config, input_path=str(source))
    implicit = register_model(spark, config, max_iter=2, params={"implicit_prefs": True, "nonnegative": False})
    processor = BatchProcessor(spark, config)
    processor.refresh_model()
    assert processor.model is not None and processor.model.version == implicit
    for params in ({"implicit_prefs": False, "nonnegative": False}, {"implicit_prefs": True, "nonnegative": True}):
        version = register_model(spark, config, max_iter=2, params=params)
        processor.refresh_model()
        assert processor.model is None and processor.model_checked_version == version, params


def test_gold_the_stream_creates_keeps_a_change_feed_the_service_reloads_from(
    spark: SparkSession, tmp_path: Path
) -> None:
    # Before any publish the stream creates gold (through Spark), with the same table
    # properties as publish; its later delta-rs MERGEs write the change feed, and the service
    # brings its snapshot forward from the feed rather than a file diff or a full read.
    from clickrec.serving.reader import full_snapshot, update_snapshot
    from clickrec.serving.snapshot import ItemNames

    config = make_config(tmp_path, ingest={"data_docs": False}, publish={"n": 5})
    lake = Lake.from_config(config)
    source = tmp_path / "events.csv"
    generate_clickstream(source, events=600, seed=14)
    ingest(spark, config, input_path=str(source))
    register_model(spark, config, max_iter=2, seed=1)
    processor = BatchProcessor(spark, config)
    processor.refresh_model()
    items = [r[C.ITEM_IDX] for r in lake.read(spark, C.SILVER_INTERACTIONS)
             .select(C.ITEM_IDX).distinct().limit(3).collect()]

    def clicks(user: str, rating: float) -> pd.DataFrame:
        return pd.DataFrame({C.USER_ID: [user] * 3, C.ITEM_IDX: items, C.RATING: [rating] * 3,
                             C.PURCHASES: [0] * 3})

    assert lake.open(C.GOLD_RECOMMENDATIONS) is None
    assert processor.gold(clicks("first-user", 3.0), datetime(2026, 1, 1)) == 1  # Spark creates gold
    created = lake.require(C.GOLD_RECOMMENDATIONS)
    assert created.metadata().configuration.get(C.CHANGE_DATA_FEED) == "true"
    assert "changeDataFeed" in (created.protocol().writer_features or [])
    names = ItemNames()
    snap = full_snapshot(created, None, names)

    assert processor.gold(clicks("second-user", 5.0), datetime(2026, 1, 2)) == 1  # a delta-rs MERGE
    recs = lake.require(C.GOLD_RECOMMENDATIONS)
    assert recs.version() == created.version() + 1
    after, how = update_snapshot(snap, recs, None, names)
    assert how.startswith("change feed"), how
    whole = full_snapshot(recs, None, ItemNames())
    assert {u: after.variants["champion"].row(u) for u in ("first-user", "second-user")} == \
        {u: whole.variants["champion"].row(u) for u in ("first-user", "second-user")}
