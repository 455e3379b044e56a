"""Spark entry point for `clickrec pipeline`: ingest -> train -> publish in one process (the
nightly ScheduledSparkApplication runs it).

Thin spark-submit entry point: `spark-submit jobs/pipeline.py ARGS` is `clickrec pipeline ARGS` (same
parser, same code). The image puts this file at /opt/clickrec/jobs/pipeline.py, which the
SparkApplication in k8s/spark-operator/base/apps/pipeline.yaml names as its mainApplicationFile.
"""

import sys

from clickrec.cli import main

if __name__ == "__main__":
    main(["pipeline", *sys.argv[1:]])
