"""Spark entry point for `clickrec train`: split, tune (cross-validated ALS), evaluate, log to
MLflow, register the model and promote it to `champion` only when it beats the current one.

Thin spark-submit entry point: `spark-submit jobs/train.py ARGS` is `clickrec train ARGS` (same
parser, same code). The image puts this file at /opt/clickrec/jobs/train.py, which the
SparkApplication in k8s/spark-operator/base/apps/train.yaml names as its mainApplicationFile.
"""

import sys

from clickrec.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
