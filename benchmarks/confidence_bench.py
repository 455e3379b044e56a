"""The confidence rule (publish.min_user_interactions): nDCG@10 and P@10 with and without it.

    .venv/bin/python -m benchmarks.confidence_bench [--events 200000] [--thresholds 2 3 5]

For a generated clickstream (`clickrec generate`, seed 42) and MovieLens 100k (read from
../shared/data/movielens-100k, or $CLICKREC_MOVIELENS_DIR), each ingested into a lake of its
own, and for both splits (`temporal` and `stratified_random`, 75/25 per user, seed 42): ALS is
tuned on the training part only (train_validation over --grid, nDCG@10), then every test user's
top-10 (training items excluded) is scored as served under the rule: users with fewer than T
training interactions get the popular list (same exclusions), clickrec.ml.confidence, the
function publish applies. T = 0 is the rule off; "popularity" is everyone on the popular list.
One model per (data, split): the rows differ only in the rule. Also reported: how many test
users each T moves to the popular list, and the model's median top score by training count
(how little the model says about users it saw once or twice).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.train_bench import _config, _machine, movielens_dir

WORK = Path(".bench/confidence")
GRID = {"rank": [32], "reg_param": [0.1, 1.0], "alpha": [0.5, 2.0], "max_iter": [10]}
SPLITS = ("temporal", "stratified_random")


def _lake(spark: Any, source: str, events: int) -> Any:
    """Ingest `source` into its own lake under WORK; return the config."""
    from clickrec.generate import generate_clickstream
    from clickrec.ingest import ingest

    lake = WORK / (f"generated_{events}" if source == "generated" else "movielens")
    shutil.rmtree(lake, ignore_errors=True)
    config = _config(lake, "train.num_blocks=4", "train.k=10", "train.seed=42", "train.test_fraction=0.25",
                     "train.tuning=train_validation", *[f"train.grid.{k}={json.dumps(v)}" for k, v in GRID.items()])
    if source == "generated":
        path = WORK / f"events_{events}.csv.gz"
        if not path.is_file():
            generate_clickstream(path, events=events, seed=42)
        ingest(spark, config, input_path=str(path))
    else:
        ingest(spark, config, input_path=str(movielens_dir() / "u.data"), input_format="ratings")
    return config


def measure(spark: Any, config: Any, split: str, thresholds: list[int]) -> dict[str, Any]:
    """Tune on the training part, then the served lists' metrics for each threshold."""
    from pyspark.sql import functions as F

    from clickrec import columns as C
    from clickrec.io.lake import Lake
    from clickrec.ml.confidence import COUNT_COL, confident_lists, interaction_counts
    from clickrec.ml.evaluate import evaluate_ranking, ranking_frame
    from clickrec.ml.recommend import ITEMS_COL, SCORES_COL, popularity_factors, recommend_top_k
    from clickrec.ml.tuning import tune
    from clickrec.train import read_inputs, split_by

    tc = config.train.model_copy(update={"split": split})
    inputs = read_inputs(spark, Lake.from_config(config), rating_col=tc.rating_col)
    train_df, test_df = split_by(inputs.ratings_df, split, test_fraction=tc.test_fraction, seed=tc.seed)
    train_df, test_df = train_df.persist(), test_df.persist()
    t0 = time.monotonic()
    result = tune(train_df, tc)
    tune_s = time.monotonic() - t0
    seen = train_df.select(C.USER_IDX, C.ITEM_IDX)
    test_users = test_df.select(C.USER_IDX).distinct()
    model = result.best_model
    model.seen_df = seen
    model_recs = model.recommend(test_users).persist()
    users, items = popularity_factors(train_df)
    popular_recs = recommend_top_k(users.join(test_users.withColumnRenamed(C.USER_IDX, "id"), "id"), items, seen,
                                   k=tc.k).persist()
    counts = interaction_counts(train_df).persist()
    n_users = test_users.count()
    metrics = ("precision", "ndcg")
    rows = []
    for t in [0, *thresholds]:
        served = confident_lists(model_recs, popular_recs, counts, min_interactions=t).persist()
        moved = served.where(F.col(C.SOURCE) == C.SOURCE_POPULAR).count()
        rows.append({"threshold": t, "moved": moved,
                     **evaluate_ranking(ranking_frame(served, test_df), k=tc.k, metrics=metrics)})
        served.unpersist()
    rows.append({"threshold": "popularity", "moved": n_users,
                 **evaluate_ranking(ranking_frame(popular_recs, test_df), k=tc.k, metrics=metrics)})
    top = model_recs.join(counts, C.USER_IDX).select(
        F.when(F.col(COUNT_COL) >= 5, F.lit(5)).otherwise(F.col(COUNT_COL)).alias("bucket"),
        F.element_at(F.col(SCORES_COL), 1).alias("top"), F.size(ITEMS_COL).alias("_n"))
    medians = {int(r["bucket"]): (float(r["median"]), int(r["users"])) for r in top.where("_n > 0").groupBy("bucket").agg(
        F.percentile_approx("top", 0.5).alias("median"), F.count(F.lit(1)).alias("users")).collect()}
    out = {"split": split, "best_params": result.best_params, "tune_seconds": round(tune_s, 1),
           "train_rows": train_df.count(), "test_rows": test_df.count(), "test_users": n_users,
           "catalogue": train_df.select(C.ITEM_IDX).distinct().count(), "rows": rows, "top_score_medians": medians}
    for df in (model_recs, popular_recs, counts, train_df, test_df):
        df.unpersist()
    return out


def run(argv: list[str]) -> str:
    """Measure both data sets and both splits; return the Markdown section."""
    from clickrec.spark import build_spark_session

    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--thresholds", type=int, nargs="+", default=[2, 3, 5])
    parser.add_argument("--sources", nargs="+", default=["generated", "movielens"], choices=("generated", "movielens"))
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    load = os.getloadavg()[0]
    results = []
    spark = None
    for source in args.sources:
        config = _config(WORK / "session")
        spark = spark or build_spark_session(config)
        config = _lake(spark, source, args.events)
        for split in SPLITS:
            r = {"source": source, **measure(spark, config, split, args.thresholds)}
            print(json.dumps(r, default=str), flush=True)
            results.append(r)
    if spark is not None:
        spark.stop()
    minutes = (datetime.now(UTC) - started).total_seconds() / 60
    lines = ["## Confidence rule: popular lists for users the model barely knows", "",
             f"- date: {started:%Y-%m-%d %H:%M} UTC; machine: {_machine()}; load average (1 min) at start: "
             f"{load:.1f}; {minutes:.0f} minutes in all",
             f"- command: `.venv/bin/python -m benchmarks.confidence_bench {' '.join(argv)}` (also `make bench`)",
             f"- ALS tuned per (data, split) by train_validation over `{json.dumps(GRID)}` on the training part, "
             "k=10, training items excluded, every test item relevant; T = publish.min_user_interactions "
             "(0: off), \"moved\": test users served the popular list under T.", ""]
    for r in results:
        label = f"generated, {args.events:,} events" if r["source"] == "generated" else "MovieLens 100k"
        p = r["best_params"]
        lines += [f"### {label}, {r['split']} split", "",
                  f"{r['train_rows']:,} train / {r['test_rows']:,} test rows, {r['test_users']:,} test users, "
                  f"{r['catalogue']:,} items; selected rank {p['rank']}, reg {p['reg_param']}, alpha {p['alpha']}.",
                  "", "| T | test users moved | ndcg@10 | precision@10 |", "|---|---:|---:|---:|"]
        for row in r["rows"]:
            t = row["threshold"]
            name = "0 (off)" if t == 0 else ("popular list for all" if t == "popularity" else str(t))
            lines.append(f"| {name} | {row['moved']:,} | {row['ndcg_at_10']:.4f} | {row['precision_at_10']:.4f} |")
        med = r["top_score_medians"]
        lines += ["", "Model's median top score by training interactions: " + ", ".join(
            f"{'5+' if b == 5 else b}: {m:.2g} ({n:,} users)" for b, (m, n) in sorted(med.items())) + ".", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="generated events (default 200000)")
    parser.add_argument("--thresholds", type=int, nargs="+", default=[2, 3, 5], help="values of T besides 0")
    parser.add_argument("--sources", nargs="+", default=["generated", "movielens"])
    parser.add_argument("--markdown", type=Path, help="write the section into this file (e.g. docs/benchmarks.md)")
    args = parser.parse_args()
    argv = ["--events", str(args.events), "--thresholds", *map(str, args.thresholds), "--sources", *args.sources]
    section = run(argv)
    from benchmarks.run import emit

    emit(section, args.markdown, "confidence_bench")


if __name__ == "__main__":
    main()
