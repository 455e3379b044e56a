"""Spark entry point for `clickrec stream`: Kafka `clickstream` -> bronze/silver, fold-in of the
affected users, MERGE of their new top-N into gold/recommendations; reloads on a new champion.

Thin spark-submit entry point: `spark-submit jobs/stream.py ARGS` is `clickrec stream ARGS` (same
parser, same code). The image puts this file at /opt/clickrec/jobs/stream.py, which the
SparkApplication in k8s/spark-operator/base/apps/stream.yaml names as its mainApplicationFile.
"""

import sys

from clickrec.cli import main

if __name__ == "__main__":
    main(["stream", *sys.argv[1:]])
