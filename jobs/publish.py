"""Spark entry point for `clickrec publish`: top-N for every user of a model alias (champion by
default) MERGEd into gold/recommendations and gold/popular_items; announces the model on Kafka.

Thin spark-submit entry point: `spark-submit jobs/publish.py ARGS` is `clickrec publish ARGS` (same
parser, same code). The image puts this file at /opt/clickrec/jobs/publish.py, which the
SparkApplication in k8s/spark-operator/base/apps/publish.yaml names as its mainApplicationFile.
"""

import sys

from clickrec.cli import main

if __name__ == "__main__":
    main(["publish", *sys.argv[1:]])
