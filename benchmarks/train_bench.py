"""Training quality on MovieLens 100k, and ALS seconds per iteration against `implicit`.

    .venv/bin/python -m benchmarks.train_bench [--quality] [--speed] [--events 10000000]

Quality (the Microsoft Recommenders protocol): MovieLens 100k through `clickrec ingest --format
ratings`, `stratified_random` 75/25 per user (seed 42), k=10, every test item relevant, items
seen in train excluded; hyperparameters chosen by 3-fold cross-validation on the training part
only (nDCG@10), then one evaluation on the test part. Reports the CV-selected model, the
popularity baseline and the training wall time (`clickrec train` end to end). With
`--seed-spread 1 2 3`, the whole protocol runs again per split seed, to show how far one
split's test number moves.

Speed: seconds per ALS iteration at rank 64, as (time of 15 iterations - time of 5) / 10 so
that job start-up cancels, after an untimed 2-iteration fit that warms the JIT and the pools up
(without it the first timed fit pays the warm-up and the difference comes out too small), on the MovieLens matrix and on the (user, product) view-count matrix
of a generated clickstream; Spark MLlib ALS (Java BLAS, and native BLAS when libblas.so.3 is
installed, e.g. Debian's libopenblas0-pthread) side by side with `implicit`'s CPU ALS on the
same matrix in the same run. Each measurement (Spark or implicit) runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WORK = Path(".bench/train")
RANK = 64
QUALITY_GRID = {"rank": [32, 48], "reg_param": [0.5, 1.0], "alpha": [1.0, 2.0], "max_iter": [15]}
# Microsoft Recommenders, MovieLens 100k, k=10: (name, nDCG@10, P@10) from their README's table.
REFERENCE = [("BiVAE", 0.475077, 0.411771), ("Spark ALS (their row)", 0.044239, 0.048462)]


def movielens_dir() -> Path:
    env = os.environ.get("CLICKREC_MOVIELENS_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared/data/movielens-100k"
    if not (path / "u.data").is_file():
        raise SystemExit(f"MovieLens 100k not found at {path}/u.data (set CLICKREC_MOVIELENS_DIR)")
    return path


def _config(lake: Path, *extra: str) -> Any:
    from clickrec.config import load_config

    return load_config("conf/local.yaml", [
        f"lake.root={lake / 'lake'}", f"mlflow.tracking_uri=sqlite:///{lake / 'mlflow.db'}",
        f"mlflow.artifact_location={lake / 'mlartifacts'}", f"spark.checkpoint_dir={lake / 'ckpt'}",
        "spark.log_level=ERROR", "spark.conf.spark.ui.showConsoleProgress=false", *extra,
    ])


def quality(seed: int = 42) -> dict[str, Any]:
    """Ingest MovieLens, run `train` with the CV grid (split and folds seeded by `seed`)."""
    from clickrec.ingest import ingest
    from clickrec.spark import build_spark_session
    from clickrec.train import run_train

    lake = WORK / f"movielens_seed{seed}"  # own lake and MLflow store per seed: a deleted sqlite
    # file under a cached MLflow engine turns "readonly" when the same process runs again
    shutil.rmtree(lake, ignore_errors=True)
    grid = [f"train.grid.{k}={json.dumps(v)}" for k, v in QUALITY_GRID.items()]
    config = _config(lake, "train.num_folds=3", "train.num_blocks=4", f"train.seed={seed}",
                     "train.test_fraction=0.25", "train.k=10", "train.parallelism=1", *grid)
    spark = build_spark_session(config)
    ingest(spark, config, input_path=str(movielens_dir() / "u.data"), input_format="ratings")
    t0 = time.monotonic()
    summary = run_train(spark, config)
    summary["train_wall_seconds"] = round(time.monotonic() - t0, 1)
    spark.stop()
    return summary


def _matrix_rows(source: str, events: int) -> list[tuple[int, int, float]] | Path:
    if source == "movielens":
        rows = []
        for line in (movielens_dir() / "u.data").read_text().splitlines():
            u, i, r, _ = line.split("\t")
            rows.append((int(u), int(i), float(r)))
        return rows
    from clickrec.generate import generate_clickstream

    path = WORK / f"events_{events}.csv"
    if not path.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        generate_clickstream(path, events=events, seed=42)
    return path


def spark_worker(source: str, events: int, native: bool, blocks: int) -> None:
    """Time Spark ALS at 5 and 15 iterations in this process; print JSON."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    from clickrec.spark import build_spark_session

    blas = [] if native else ["spark.conf.spark.driver.extraJavaOptions="
                              "-Duser.timezone=UTC -Ddev.ludovic.netlib.blas.nativeLib=libnone.so"]
    config = _config(WORK / f"spark_{source}", *blas)
    spark = build_spark_session(config)
    data = _matrix_rows(source, events)
    if isinstance(data, Path):
        df = (spark.read.csv(str(data), header=True)
              .groupBy(F.hash("user_id").alias("u"), F.hash("product_id").alias("i"))
              .agg(F.count("*").cast("float").alias("r")))
    else:
        df = spark.createDataFrame(data, "u INT, i INT, r FLOAT")
    df = df.persist()
    shape = (df.select("u").distinct().count(), df.select("i").distinct().count(), df.count())
    times = {}
    for iters in (2, 5, 15):  # the 2-iteration fit warms the JIT and the pools up, untimed
        als = ALS(rank=RANK, maxIter=iters, regParam=0.1, alpha=1.0, implicitPrefs=True, userCol="u",
                  itemCol="i", ratingCol="r", seed=1, numUserBlocks=blocks, numItemBlocks=blocks)
        t0 = time.monotonic()
        model = als.fit(df)
        model.userFactors.count()
        times[iters] = time.monotonic() - t0
    jvm = spark.sparkContext._jvm
    impl = jvm.dev.ludovic.netlib.blas.BLAS.getInstance().getClass().getName()
    print(json.dumps({"engine": "spark", "source": source, "native": native, "blas": impl, "blocks": blocks,
                      "users": shape[0], "items": shape[1], "nnz": shape[2],
                      "s_per_iter": (times[15] - times[5]) / 10}), flush=True)
    spark.stop()


def implicit_timing(source: str, events: int, *, use_cg: bool) -> dict[str, Any]:
    """`implicit` CPU ALS on the same matrix, (15 - 5 iterations) / 10, in this process.

    The bench runs it in a process of its own: in the process that had run the quality part's
    Spark sessions, implicit runs several times slower (docs/benchmarks.md).

    use_cg=True is implicit's default (3 conjugate-gradient steps per user); False solves each
    user's normal equations exactly (Cholesky), the solver Spark's implicit ALS uses.
    """
    import numpy as np
    import pandas as pd
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy.sparse import csr_matrix

    data = _matrix_rows(source, events)
    if isinstance(data, Path):
        pdf = pd.read_csv(data, usecols=["user_id", "product_id"])
        pdf = pdf.groupby(["user_id", "product_id"]).size().reset_index(name="r")
        users, items = pdf["user_id"].astype("category"), pdf["product_id"].astype("category")
        rows, cols, vals = users.cat.codes.to_numpy(), items.cat.codes.to_numpy(), pdf["r"].to_numpy(np.float32)
    else:
        arr = np.array(data)
        rows, cols, vals = arr[:, 0].astype(int), arr[:, 1].astype(int), arr[:, 2].astype(np.float32)
    mat = csr_matrix((vals, (rows, cols)))
    times = {}
    for iters in (2, 5, 15):  # the 2-iteration fit warms the thread pool up, untimed
        model = AlternatingLeastSquares(factors=RANK, iterations=iters, regularization=0.1,
                                        random_state=1, calculate_training_loss=False, use_cg=use_cg)
        t0 = time.monotonic()
        model.fit(mat, show_progress=False)
        times[iters] = time.monotonic() - t0
    return {"engine": "implicit", "solver": "conjugate gradient" if use_cg else "exact (Cholesky)",
            "source": source, "users": mat.shape[0], "items": mat.shape[1],
            "nnz": int(mat.nnz), "s_per_iter": (times[15] - times[5]) / 10}


def _machine() -> str:
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2
    return f"{os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def _native_blas_available() -> bool:
    return any(Path(d, "libblas.so.3").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib"))


def run(argv: list[str]) -> str:
    """Run the selected parts; return the Markdown section."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--seed-spread", type=int, nargs="*", default=[])
    args = parser.parse_args(argv)
    do_quality, do_speed = args.quality or not args.speed, args.speed or not args.quality
    WORK.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    lines = ["## Training: MovieLens 100k quality and ALS speed", "",
             f"- date: {started:%Y-%m-%d %H:%M} UTC; machine: {_machine()}",
             f"- command: `.venv/bin/python -m benchmarks.train_bench {' '.join(argv)}` (also `make bench`)",
             f"- load average (1 min) at start: {os.getloadavg()[0]:.1f}", ""]
    if do_quality:
        s = quality()
        m, b = s["metrics"], s["baseline_metrics"]
        lines += [
            "### Quality on MovieLens 100k (stratified 75/25 per user, seed 42, k=10, all test items relevant)",
            "",
            f"CV grid (3 folds, nDCG@10, training part only): `{json.dumps(QUALITY_GRID)}`; "
            f"selected: `{json.dumps(s['best_params'])}`; `clickrec train` wall time "
            f"{s['train_wall_seconds']:.0f} s (grid of {_grid_points()} points x 3 folds, refit, test).",
            "",
            "| model | precision@10 | recall@10 | ndcg@10 | map@10 | coverage |",
            "|---|---:|---:|---:|---:|---:|",
            f"| clickrec ALS (CV-selected) | {m['precision_at_10']:.4f} | {m['recall_at_10']:.4f} | "
            f"{m['ndcg_at_10']:.4f} | {m['map_at_10']:.4f} | {m['coverage']:.3f} |",
            f"| popularity baseline (same split) | {b['precision_at_10']:.4f} | {b['recall_at_10']:.4f} | "
            f"{b['ndcg_at_10']:.4f} | {b['map_at_10']:.4f} | {b['coverage']:.3f} |",
        ]
        lines += [f"| MS Recommenders: {n} | {p:.4f} | | {g:.4f} | | |" for n, g, p in REFERENCE]
        lines.append("")
        print(json.dumps(s, default=str), flush=True)
    if args.seed_spread:
        lines += _seed_spread(args.seed_spread)
    if do_speed:
        results = []
        for source in ("movielens", "generated"):
            for native in ([False, True] if _native_blas_available() else [False]):
                cmd = [sys.executable, "-m", "benchmarks.train_bench", "--spark-worker", source,
                       "--events", str(args.events), "--blocks", str(args.blocks)] + (["--native"] if native else [])
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                results.append(json.loads(out.strip().splitlines()[-1]))
                print(json.dumps(results[-1]), flush=True)
            for use_cg in (True, False):
                cmd = [sys.executable, "-m", "benchmarks.train_bench", "--implicit-worker", source,
                       "--events", str(args.events)] + ([] if use_cg else ["--exact"])
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                results.append(json.loads(out.strip().splitlines()[-1]))
                print(json.dumps(results[-1]), flush=True)
        lines += [f"### Seconds per ALS iteration at rank {RANK} (implicit feedback)", "",
                  f"Spark: local[*], {args.blocks} user and item blocks, in its own process per row; "
                  "`implicit` 0.7.3 CPU, also in its own process per row, with its default conjugate-gradient solver "
                  "and with the exact solver Spark uses. Ratios are against each implicit row.", "",
                  "| matrix | users x items, nnz | engine | solver / BLAS | s / iteration | vs implicit CG | vs implicit exact |",
                  "|---|---|---|---|---:|---:|---:|"]
        for r in results:
            refs = [x for x in results if x["engine"] == "implicit" and x["source"] == r["source"]]
            cg = next(x for x in refs if x["solver"] == "conjugate gradient")
            exact = next(x for x in refs if x["solver"] != "conjugate gradient")
            label = "MovieLens 100k" if r["source"] == "movielens" else f"generated, {args.events:,} events"
            how = r.get("solver") or "exact (Cholesky), " + r["blas"].rsplit(".", 1)[-1]
            lines.append(f"| {label} | {r['users']:,} x {r['items']:,}, {r['nnz']:,} | {r['engine']} | "
                         f"{how} | {r['s_per_iter']:.3f} | {r['s_per_iter'] / cg['s_per_iter']:.1f}x | "
                         f"{r['s_per_iter'] / exact['s_per_iter']:.1f}x |")
        if not _native_blas_available():
            lines.append("\nNo system libblas.so.3 here, so Spark ran with its Java BLAS only "
                         "(`apt-get install libopenblas0-pthread` adds the native row).")
    return "\n".join(lines) + "\n"


def _seed_spread(seeds: list[int]) -> list[str]:
    """The whole protocol (split, CV, test) once per seed: how far the test metrics move by split."""
    import statistics

    rows = []
    for seed in seeds:
        s = quality(seed)
        print(json.dumps({"seed": seed, **s}, default=str), flush=True)
        rows.append((seed, s["best_params"], s["metrics"], s["baseline_metrics"]))
    ndcg = [m["ndcg_at_10"] for _, _, m, _ in rows]
    prec = [m["precision_at_10"] for _, _, m, _ in rows]
    lines = ["### The same protocol over split seeds", "",
             "Each row is a whole run: its own split, its own 3-fold CV on that training part, one "
             "test. The spread is what a single split's number can move by.", "",
             "| split seed | CV-selected rank / reg / alpha | precision@10 | ndcg@10 | baseline ndcg@10 |",
             "|---:|---|---:|---:|---:|"]
    lines += [f"| {seed} | {p['rank']} / {p['reg_param']} / {p['alpha']} | {m['precision_at_10']:.4f} | "
              f"{m['ndcg_at_10']:.4f} | {b['ndcg_at_10']:.4f} |" for seed, p, m, b in rows]
    if len(rows) > 1:
        lines.append(f"| mean (sd) | | {statistics.mean(prec):.4f} ({statistics.stdev(prec):.4f}) | "
                     f"{statistics.mean(ndcg):.4f} ({statistics.stdev(ndcg):.4f}) | |")
    return [*lines, ""]


def _grid_points() -> int:
    n = 1
    for v in QUALITY_GRID.values():
        n *= len(v)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quality", action="store_true", help="only the MovieLens quality run")
    parser.add_argument("--speed", action="store_true", help="only the seconds-per-iteration runs")
    parser.add_argument("--events", type=int, default=10_000_000, help="generated events for the speed run")
    parser.add_argument("--spark-worker", choices=("movielens", "generated"), help=argparse.SUPPRESS)
    parser.add_argument("--native", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--implicit-worker", choices=("movielens", "generated"), help=argparse.SUPPRESS)
    parser.add_argument("--exact", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--blocks", type=int, default=2, help="Spark ALS user and item blocks (default 2: one per core)")
    parser.add_argument("--seed-spread", type=int, nargs="*", default=[], metavar="SEED",
                        help="also run the whole quality protocol once per split seed (about 2.5 min each)")
    parser.add_argument("--markdown", type=Path, help="write the section into this file (e.g. docs/benchmarks.md)")
    args = parser.parse_args()
    if args.spark_worker:
        spark_worker(args.spark_worker, args.events, args.native, args.blocks)
        return
    if args.implicit_worker:
        print(json.dumps(implicit_timing(args.implicit_worker, args.events, use_cg=not args.exact)), flush=True)
        return
    argv = ((["--quality"] if args.quality else []) + (["--speed"] if args.speed else [])
            + ["--events", str(args.events), "--blocks", str(args.blocks)]
            + (["--seed-spread", *map(str, args.seed_spread)] if args.seed_spread else []))
    section = run(argv)
    from benchmarks.run import emit

    emit(section, args.markdown, "train_bench")


if __name__ == "__main__":
    main()
