#!/bin/bash
# A smoke test of a built image, run inside it as the image's user (uid 185) with its ENV:
#   Java 17, the venv's Python with clickrec and pyspark, spark-submit, and one small local Spark
#   job started the way a driver pod starts (entrypoint.sh driver ...) that fits an ALS model
#   and reports which BLAS netlib loaded: it must be native (OpenBLAS), not Java BLAS.
# k8s/image/build-oci.sh runs it in the chroot before packing (IMAGE_SMOKE=0 skips it). With
# Docker: docker run --rm -i --entrypoint bash clickrec:<version> -s < k8s/image/smoke.sh
set -euo pipefail
say() { printf '[smoke] %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
cd /tmp
# Local mode on loopback: a chroot has no /etc/hosts entry for the machine's hostname (a pod has).
export SPARK_LOCAL_IP=127.0.0.1 SPARK_LOCAL_HOSTNAME=localhost

java -version 2>&1 | head -1 | grep -q 'version "17\.' || fail "java is not 17: $(java -version 2>&1 | head -1)"
say "$(java -version 2>&1 | head -1)"
versions=$("$PYSPARK_PYTHON" -c 'import platform, clickrec, pyspark; print(platform.python_version(), pyspark.__version__)')
say "python, pyspark: $versions"
spark-submit --version 2>&1 | grep -q "version $(echo "$versions" | cut -d' ' -f2)" \
  || fail "spark-submit --version does not print the pyspark version"
say "spark-submit --version: ok"

job=$(mktemp /tmp/smoke-XXXXXX.py)
cat > "$job" <<'PY'
import json
from pyspark.ml.recommendation import ALS
from pyspark.sql import SparkSession
from clickrec.spark import blas_in_use

spark = SparkSession.builder.appName("clickrec-image-smoke").getOrCreate()
rows = [(u, i, float((u * 7 + i) % 5 + 1)) for u in range(20) for i in range(15) if (u + i) % 3]
model = ALS(rank=4, maxIter=3, implicitPrefs=True, seed=1).fit(spark.createDataFrame(rows, ["user", "item", "rating"]))
out = {"blas": blas_in_use(spark), "users": model.userFactors.count(), "master": spark.sparkContext.master}
print("SMOKE " + json.dumps(out))
spark.stop()
PY
out=$(SPARK_DRIVER_BIND_ADDRESS=127.0.0.1 /opt/clickrec/entrypoint.sh driver \
        --master 'local[1]' --conf spark.ui.enabled=false --conf spark.driver.host=127.0.0.1 "$job" 2>/tmp/smoke-spark.log) \
  || { tail -30 /tmp/smoke-spark.log >&2; fail "the local Spark job failed"; }
rm -f "$job"
line=$(printf '%s\n' "$out" | grep '^SMOKE ') || fail "the job printed no result"
say "local job: ${line#SMOKE }"
printf '%s\n' "$line" | grep -q '"blas": "native' || fail "ALS did not use native BLAS"
printf '%s\n' "$line" | grep -q '"users": 20' || fail "ALS fitted the wrong number of users"
say "ok"
exit 0
