"""`clickrec publish` end to end: a model trained once for the module, published, read back.

One lake for the whole module (training is the slow part): the tests run in file order and
each leaves the tables as the next expects (champion v1 published first; the last test moves
the champion and rolls it back).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.io.delta import table_version
from clickrec.io.lake import Lake
from clickrec.ml.recommend import recommend_top_k
from clickrec.publish import publish
from clickrec.serving import RecommendationReader, recommendations
from clickrec.serving.api import create_app
from clickrec.tracking import Tracking
from clickrec.train import run_train
from clickrec.transforms.recommendations import exclusion_pairs, reference_top_k
from tests.support.config import REPO_ROOT, make_config
from tests.support.data import write_planted_lake
from tests.support.models import register_model
from tests.support.ranking import assert_same_up_to_ties, lists_by_user

N = 10
ONE_POINT = {"rank": [6], "reg_param": [0.05], "alpha": [10.0], "max_iter": [5]}


pytestmark = pytest.mark.slow  # trains and publishes a model for the module


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Planted silver with purchases, one model trained by run_train (v1, champion), published."""
    tmp = tmp_path_factory.mktemp("publish")
    config = make_config(
        tmp,
        train={"grid": ONE_POINT, "tuning": "train_validation", "num_blocks": 2},
        publish={"n": N, "popular_n": 20},
        serve={"poll_seconds": 0.2, "min_reload_seconds": 0},
    )
    write_planted_lake(spark, config)
    trained = run_train(spark, config)
    assert trained["model_version"] == 1 and trained["promoted"] is True
    first = publish(spark, config)
    yield {"config": config, "first": first, "tmp": tmp}


def gold(spark: SparkSession, config: ClickrecConfig, variant: str = "champion") -> dict[str, dict[str, Any]]:
    df = Lake.from_config(config).read(spark, C.GOLD_RECOMMENDATIONS)
    return {r[C.USER_ID]: r.asDict(recursive=True) for r in df.where(F.col(C.VARIANT) == variant).collect()}


def silver(spark: SparkSession, config: ClickrecConfig) -> list[Any]:
    return Lake.from_config(config).read(spark, C.SILVER_INTERACTIONS).collect()


def test_every_trained_user_gets_a_clean_ranked_list(spark: SparkSession, lake: dict[str, Any]) -> None:
    config, first = lake["config"], lake["first"]
    model = Tracking(config.mlflow).load_model_version(1)
    model_users = {r["id"] for r in model.userFactors.collect()}
    model_items = {r["id"] for r in model.itemFactors.collect()}
    rows = silver(spark, config)
    idx_of_user = {r[C.USER_ID]: r[C.USER_IDX] for r in rows}
    item_of_idx = {r[C.ITEM_IDX]: r[C.ITEM_ID] for r in rows}
    bought: dict[str, set[str]] = {}
    for r in rows:
        if r[C.PURCHASES] > 0:
            bought.setdefault(r[C.USER_ID], set()).add(r[C.ITEM_ID])
    assert any(bought.values())

    table = gold(spark, config)
    assert first["users"] == len(table) == len(model_users) == first["model_users"]
    assert {idx_of_user[u] for u in table} == model_users  # every user with a train interaction
    catalogue = {item_of_idx[i] for i in model_items}
    for user, row in table.items():
        items = [it[C.ITEM_ID] for it in row[C.ITEMS]]
        available = len(catalogue - bought.get(user, set()))
        assert len(items) == min(N, available), user
        assert not set(items) & bought.get(user, set()), user  # none bought before
        assert set(items) <= catalogue and all(i.startswith("i") for i in items)  # source ids
        assert user.startswith("u")
        scores = [it[C.SCORE] for it in row[C.ITEMS]]
        assert scores == sorted(scores, reverse=True), user
        assert [it[C.RANK] for it in row[C.ITEMS]] == list(range(1, len(items) + 1))
        assert (row[C.SOURCE], row[C.MODEL_NAME], row[C.MODEL_VERSION]) == (C.SOURCE_BATCH, "clickrec-als", 1)
        assert row[C.UPDATED_AT] is not None
    # the ids the model was trained on were mapped through the index versions recorded by train
    assert first["input_versions"][C.SILVER_USER_INDEX] == 0
    assert first["announcement"] == {"sent": False, "topic": "models", "reason": "kafka.bootstrap_servers is null"}
    # publish created gold/recommendations with a change feed (what the service reloads from)
    created = Lake.from_config(config).require(C.GOLD_RECOMMENDATIONS)
    assert created.metadata().configuration.get(C.CHANGE_DATA_FEED) == "true"

    popular = Lake.from_config(config).read(spark, C.GOLD_POPULAR_ITEMS).collect()
    assert [(p[C.VARIANT], p[C.SOURCE], len(p[C.ITEMS])) for p in popular] == [("champion", C.SOURCE_POPULAR, 20)]
    users_per_item: dict[str, int] = {}
    for r in rows:
        users_per_item[r[C.ITEM_ID]] = users_per_item.get(r[C.ITEM_ID], 0) + 1
    expected = sorted(users_per_item, key=lambda i: (-users_per_item[i], i))[:20]
    assert [it[C.ITEM_ID] for it in popular[0][C.ITEMS]] == expected


def test_a_rerun_changes_nothing(spark: SparkSession, lake: dict[str, Any]) -> None:
    config = lake["config"]
    before = gold(spark, config)
    versions = {t: table_version(spark, Lake.from_config(config).path(t)) for t in (C.GOLD_RECOMMENDATIONS, C.GOLD_POPULAR_ITEMS)}
    again = publish(spark, config)
    assert again["tables"] == versions  # no commit at all
    assert again["changes"][C.GOLD_RECOMMENDATIONS] == {"upserted": 0, "deleted": 0, "committed": 0}
    assert gold(spark, config) == before  # same content, updated_at included



def test_fast_top_n_equals_recommend_for_all_users_plus_filter(spark: SparkSession, lake: dict[str, Any]) -> None:
    config = lake["config"]
    model = Tracking(config.mlflow).load_model_version(1)
    inter = Lake.from_config(config).read(spark, C.SILVER_INTERACTIONS)
    n_items = model.itemFactors.count()
    everything = model.recommendForAllUsers(n_items).collect()
    all_scores = {r[C.USER_IDX]: {x[C.ITEM_IDX]: float(x["rating"]) for x in r["recommendations"]} for r in everything}
    for exclude, k in (("bought", N), ("seen", n_items - 5)):  # the second: lists cut short by exclusions
        excluded = exclusion_pairs(inter, exclude=exclude).persist()
        most = excluded.groupBy(C.USER_IDX).count().agg(F.max("count")).first()[0]
        fast = lists_by_user(recommend_top_k(model.userFactors, model.itemFactors, excluded, k=k))
        ref = lists_by_user(reference_top_k(model, excluded, k=k, max_excluded=most))
        excluded.unpersist()
        assert_same_up_to_ties(fast, ref, all_scores)
        if exclude == "seen":
            assert any(len(items) < k for items, _ in fast.values())

    # The published table is the fast lists with source ids: compare it with the reference too.
    rows = silver(spark, config)
    user_of = {r[C.USER_IDX]: r[C.USER_ID] for r in rows}
    item_of = {r[C.ITEM_IDX]: r[C.ITEM_ID] for r in rows}
    excluded = exclusion_pairs(inter, exclude="bought")
    ref = lists_by_user(reference_top_k(model, excluded, k=N, max_excluded=30))
    published = {u: ([it[C.ITEM_ID] for it in r[C.ITEMS]], [it[C.SCORE] for it in r[C.ITEMS]])
                 for u, r in gold(spark, config).items()}
    mapped = {user_of[u]: ([item_of[i] for i in items], scores) for u, (items, scores) in ref.items()}
    scores_by_id = {user_of[u]: {item_of[i]: s for i, s in d.items()} for u, d in all_scores.items()}
    assert_same_up_to_ties(published, mapped, scores_by_id)


def test_library_and_cli_read_without_spark(lake: dict[str, Any]) -> None:
    config, table_users = lake["config"], lake["first"]["users"]
    reader = RecommendationReader(config)
    assert sum(reader.current.users().values()) == table_users
    known = recommendations("u3", n=4, config=config)
    assert known[C.SOURCE] == C.SOURCE_BATCH and known["n"] == 4 and known[C.MODEL_VERSION] == 1
    stranger = recommendations("never-seen-user", n=5, config=config)
    assert stranger[C.SOURCE] == C.SOURCE_POPULAR and stranger["n"] == 5
    popular_ids = [it[C.ITEM_ID] for it in reader.current.popular["champion"][C.ITEMS]]
    assert [it[C.ITEM_ID] for it in stranger[C.ITEMS]] == popular_ids[:5]

    cli = [sys.executable, "-m", "clickrec.cli", "recommend", "--set", f"lake.root={config.lake.root}"]
    out = subprocess.run([*cli, "--user", "u3", "--n", "4"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=120, check=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True and summary[C.ITEMS] == known[C.ITEMS]
    bad = subprocess.run([*cli, "--user", "u3", "--n", "0"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=120, check=False)
    assert bad.returncode == 2 and "n=0" in json.loads(bad.stdout.strip().splitlines()[-1])["error"]


def test_variants_new_champion_served_live_and_rollback(spark: SparkSession, lake: dict[str, Any]) -> None:
    config, tmp = lake["config"], lake["tmp"]
    v1_lists = {u: r[C.ITEMS] for u, r in gold(spark, config).items()}
    v2 = register_model(spark, config, rank=3, max_iter=5, reg_param=0.05, alpha=10.0, alias="challenger")
    assert v2 == 2
    challenger = publish(spark, config, alias="challenger")
    assert challenger["variant"] == "challenger" and challenger["model_version"] == 2
    assert gold(spark, config, "champion").keys() == gold(spark, config, "challenger").keys()  # side by side

    with TestClient(create_app(config)) as client:
        first = client.get("/v1/recommendations/u3", params={"n": 3})
        assert first.status_code == 200
        body = first.json()
        assert body[C.MODEL_VERSION] == 1 and body[C.SOURCE] == C.SOURCE_BATCH and body["n"] == 3
        assert [it[C.ITEM_ID] for it in body[C.ITEMS]] == [it[C.ITEM_ID] for it in v1_lists["u3"][:3]]
        assert client.get("/v1/recommendations/u3", params={"variant": "challenger"}).json()[C.MODEL_VERSION] == 2
        assert client.get("/v1/recommendations/nobody").json()[C.SOURCE] == C.SOURCE_POPULAR
        assert client.get("/v1/recommendations/u3", params={"variant": "shadow"}).status_code == 404
        assert client.get("/v1/recommendations/u3", params={"n": 0}).status_code == 422
        assert client.get("/v1/recommendations/u3", params={"n": "x"}).status_code == 422

        # The challenger is promoted and published: the running service serves it after a poll.
        Tracking(config.mlflow).set_alias("champion", v2)
        second = publish(spark, config)
        assert second["model_version"] == 2
        v2_lists = {u: r[C.ITEMS] for u, r in gold(spark, config).items()}
        assert v2_lists != v1_lists
        _wait_for_version(client, second["tables"][C.GOLD_RECOMMENDATIONS])
        served = client.get("/v1/recommendations/u3", params={"n": N}).json()
        assert served[C.MODEL_VERSION] == 2
        assert [it[C.ITEM_ID] for it in served[C.ITEMS]] == [it[C.ITEM_ID] for it in v2_lists["u3"]]

        # Rollback: republish version 1 as the champion; v1's lists come back, served live. Of the
        # lists v1 does not compute, a batch list and a stream list of v2 go, and a stream list
        # of v1 stays; a stream list of v1 for a user v1 has stays too (it folds in newer events),
        # and one of v2 is replaced.
        path = Lake.from_config(config).path(C.GOLD_RECOMMENDATIONS)
        champion = spark.read.format("delta").load(path).where(F.col(C.VARIANT) == "champion")
        u3 = champion.where(F.col(C.USER_ID) == "u3")
        planted = [
            u3.withColumn(C.USER_ID, F.lit("ghost")),
            u3.withColumn(C.USER_ID, F.lit("newbie_v2")).withColumn(C.SOURCE, F.lit(C.SOURCE_STREAM)),
            u3.withColumn(C.USER_ID, F.lit("newbie_v1")).withColumn(C.SOURCE, F.lit(C.SOURCE_STREAM))
            .withColumn(C.MODEL_VERSION, F.lit(1)),
            champion.where(F.col(C.USER_ID) == "u10").withColumn(C.SOURCE, F.lit(C.SOURCE_STREAM))
            .withColumn(C.MODEL_VERSION, F.lit(1)).withColumn(C.ITEMS, F.reverse(C.ITEMS)),
            champion.where(F.col(C.USER_ID) == "u77").withColumn(C.SOURCE, F.lit(C.SOURCE_STREAM)),
        ]
        changed = {"ghost", "newbie_v2", "newbie_v1", "u10", "u77"}
        rest = champion.where(~F.col(C.USER_ID).isin(*changed))
        planted_df = planted[0]
        for df in planted[1:]:
            planted_df = planted_df.unionByName(df)
        rest.unionByName(planted_df).write.format("delta").mode("overwrite") \
            .option("replaceWhere", "variant = 'champion'").save(path)
        rolled = publish(spark, config, model_version=1)
        assert rolled["rollback"] is True and rolled["model_version"] == 1
        assert rolled["changes"][C.GOLD_RECOMMENDATIONS]["deleted"] == 2
        after = gold(spark, config)
        assert "ghost" not in after and "newbie_v2" not in after
        assert after.pop("newbie_v1")[C.SOURCE] == C.SOURCE_STREAM
        kept = after.pop("u10")
        assert kept[C.SOURCE] == C.SOURCE_STREAM and kept[C.ITEMS] == list(reversed(v2_lists["u10"]))
        assert after["u77"][C.SOURCE] == C.SOURCE_BATCH and after["u77"][C.MODEL_VERSION] == 1
        assert {u: r[C.ITEMS] for u, r in after.items()} == {u: v for u, v in v1_lists.items() if u != "u10"}
        _wait_for_version(client, rolled["tables"][C.GOLD_RECOMMENDATIONS])
        for user in ("u3", "u77"):
            got = client.get(f"/v1/recommendations/{user}", params={"n": N}).json()
            assert got[C.MODEL_VERSION] == 1
            assert [it[C.ITEM_ID] for it in got[C.ITEMS]] == [it[C.ITEM_ID] for it in v1_lists[user]]
        # Every new Delta version seen was a reload (two publishes and the rewrite: 2 or more;
        # the two tables of a publish commit one after the other, so a poll may see them apart),
        # each from the change feed: none read the table whole, though a publish that switches
        # the champion rewrites half of it.
        metrics = dict(line.split(" ", 1) for line in client.get("/metrics").text.splitlines()
                       if line.startswith(("clickrec_serving_reloads_total ", "clickrec_serving_full_reloads_total ")))
        assert 2 <= float(metrics["clickrec_serving_reloads_total"]) <= 6
        assert float(metrics["clickrec_serving_full_reloads_total"]) == 0
    assert (tmp / "lake" / C.GOLD_RECOMMENDATIONS / "_delta_log").is_dir()


def _wait_for_version(client: TestClient, version: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/healthz").json()["table_version"] == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"the service did not load version {version} within {timeout} s")


def test_missing_model_and_bad_alias_are_clear_errors(spark: SparkSession, lake: dict[str, Any], tmp_path: Path) -> None:
    from clickrec.errors import NotFoundError

    with pytest.raises(NotFoundError, match="has no version 99"):
        publish(spark, lake["config"], model_version=99)
    with pytest.raises(NotFoundError, match="alias 'champion'"):
        publish(spark, make_config(tmp_path))


def test_a_failed_recommendations_merge_puts_the_popular_row_back(
    spark: SparkSession, lake: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """popular_items is switched first; when the lists' MERGE then fails, the switch is undone."""
    from clickrec import publish as publish_module

    config = lake["config"]
    gold = Lake.from_config(config)
    pop_path, rec_path = gold.path(C.GOLD_POPULAR_ITEMS), gold.path(C.GOLD_RECOMMENDATIONS)

    def popular_rows() -> list[dict[str, Any]]:
        df = spark.read.format("delta").load(pop_path)
        return sorted((r.asDict(recursive=True) for r in df.collect()), key=lambda r: r[C.VARIANT])

    before, rec_before, pop_before = popular_rows(), table_version(spark, rec_path), table_version(spark, pop_path)
    assert {r[C.VARIANT]: r[C.MODEL_VERSION] for r in before}["champion"] == 1  # the rollback's
    assert Tracking(config.mlflow).alias_versions()["champion"] == 2  # so publishing the alias switches
    real_merge = publish_module.delta.merge_changes

    def failing_merge(path: str, df: Any, **kwargs: Any) -> dict[str, int]:
        if path == rec_path:
            raise RuntimeError("disk full (injected)")
        return real_merge(path, df, **kwargs)

    monkeypatch.setattr(publish_module.delta, "merge_changes", failing_merge)
    with pytest.raises(RuntimeError, match="injected"):
        publish(spark, config)
    assert table_version(spark, rec_path) == rec_before
    assert table_version(spark, pop_path) == pop_before + 2  # switched to v2, then back
    assert popular_rows() == before


def test_a_lease_that_cannot_be_taken_changes_no_gold_table(
    spark: SparkSession, lake: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease is taken before popular_items switches: failing to take it leaves gold as it was."""
    from clickrec import publish as publish_module
    from clickrec.errors import ConcurrentWriteError

    config = lake["config"]
    gold = Lake.from_config(config)
    pop_path, rec_path = gold.path(C.GOLD_POPULAR_ITEMS), gold.path(C.GOLD_RECOMMENDATIONS)
    before = {p: table_version(spark, p) for p in (pop_path, rec_path)}
    assert Tracking(config.mlflow).alias_versions()["champion"] != spark.read.format("delta").load(pop_path).where(
        F.col(C.VARIANT) == "champion").first()[C.MODEL_VERSION]  # so a publish would switch it

    def busy(*_: Any, **__: Any) -> None:
        raise ConcurrentWriteError("_control/leases: lost the commit race 5 times (injected)")

    monkeypatch.setattr(publish_module.leases, "_put", busy)
    with pytest.raises(ConcurrentWriteError, match="injected"):
        publish(spark, config)
    assert {p: table_version(spark, p) for p in (pop_path, rec_path)} == before


def test_users_the_model_barely_knows_get_the_popular_list(spark: SparkSession, lake: dict[str, Any]) -> None:
    """publish.min_user_interactions: a user fitted on fewer rows gets the popular list, source `popular`."""
    from clickrec.ml.split import split_stratified_random
    from clickrec.train import to_als_input

    config = lake["config"]
    before = publish(spark, config, model_version=1)  # v1 (run_train's) without the rule
    assert before["popular_users"] == 0 and before["interactions_counted"] is None
    lists = {u: (r[C.SOURCE], r[C.ITEMS]) for u, r in gold(spark, config).items()}
    streamed = {u for u, (source, _) in lists.items() if source == C.SOURCE_STREAM}  # the rollback test's: they stay
    ruled = config.model_copy(update={"publish": config.publish.model_copy(update={"min_user_interactions": 10})})
    summary = publish(spark, ruled, model_version=1)

    rows = silver(spark, config)
    # v1 was fitted on the training part of its run's split: 9 or 10 rows per planted user
    part, _ = split_stratified_random(to_als_input(spark.createDataFrame(rows)), test_fraction=0.25, seed=42)
    counts = {f"u{r[C.USER_IDX]}": r["count"] for r in part.groupBy(C.USER_IDX).count().collect()}
    low = {u for u, n in counts.items() if n < 10}
    assert 0 < len(low) < len(counts)
    assert summary["popular_users"] == len(low)
    assert summary["interactions_counted"] == "the training part of its run's stratified_random split"
    users_per_item: dict[int, int] = {}
    for r in rows:
        users_per_item[r[C.ITEM_IDX]] = users_per_item.get(r[C.ITEM_IDX], 0) + 1
    popular = sorted(users_per_item, key=lambda i: (-users_per_item[i], i))  # ties by item index
    bought = {(r[C.USER_ID], f"i{r[C.ITEM_IDX]}") for r in rows if r[C.PURCHASES] > 0}
    table = gold(spark, config)
    assert table.keys() == lists.keys()
    for user, row in table.items():
        if user in streamed:
            assert (row[C.SOURCE], row[C.ITEMS]) == lists[user], user
        elif user in low:
            expected = [f"i{i}" for i in popular if (user, f"i{i}") not in bought][:N]
            assert row[C.SOURCE] == C.SOURCE_POPULAR, user
            assert [it[C.ITEM_ID] for it in row[C.ITEMS]] == expected, user
            assert [it[C.SCORE] for it in row[C.ITEMS]] == [users_per_item[int(i[1:])] for i in expected]
        else:
            assert (row[C.SOURCE], row[C.ITEMS]) == lists[user] and row[C.SOURCE] == C.SOURCE_BATCH, user
    # turning the rule off again gives every user the model's list back
    publish(spark, config, model_version=1)
    assert {u: (r[C.SOURCE], r[C.ITEMS]) for u, r in gold(spark, config).items()} == lists
