#!/usr/bin/env bash
# One-time, idempotent setup: venv + pinned Python packages, JVM jars, MinIO binary.
# Each step is skipped when its stamp matches its inputs, so a second run takes seconds.
# Everything lands in git-ignored folders: .venv/ and .cache/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/.cache
VENV=$ROOT/.venv
PYTHON=${PYTHON:-python3.11}
# MinIO community edition: upstream stopped maintaining it in 2026; this is its last build on
# the Go module proxy (2026-02-12). It is built from source; nothing prebuilt is downloaded.
MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
# kustomize renders k8s/spark-operator offline in the k8s tests. v5.8.2 is the newest release
# that builds with the Go on the PATH (v5.8.3 needs Go 1.27). Built from source: about a minute
# on 2 cores with a cold Go build cache, once.
KUSTOMIZE_MODULE=sigs.k8s.io/kustomize/kustomize/v5
KUSTOMIZE_VERSION=v5.8.2

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# --- prerequisites -----------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null || die "$PYTHON not found: Python 3.11 is a prerequisite (or set PYTHON=...)"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
  || die "$PYTHON is not Python 3.11"
command -v java >/dev/null || die "java not found: Java 17 is a prerequisite"
java -version 2>&1 | grep -qE 'version "(17|21)' || die "Java 17 is needed (java -version: $(java -version 2>&1 | head -1))"
command -v mvn >/dev/null || die "mvn not found: Maven is a prerequisite (it resolves the JVM jars)"
command -v go >/dev/null || die "go not found: Go is a prerequisite (it builds the MinIO server)"
mkdir -p "$CACHE"

# --- Python ------------------------------------------------------------------------------------
py_stamp=$(hash_of setup.cfg pyproject.toml)
if [ "$(cat "$VENV/.clickrec-stamp" 2>/dev/null)" != "$py_stamp" ]; then
  say "Python: creating $VENV and installing the pinned packages (a few minutes the first time)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade "pip==25.3" "setuptools==80.9.0" wheel
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
  echo "$py_stamp" > "$VENV/.clickrec-stamp"
else
  say "Python: up to date"
fi

# --- JVM jars (pinned in jvm/pom.xml) and clickrec's LogStore (built from jvm/logstore) -------
# The stamp covers every POM and the LogStore's Java sources (main and test), so an edited class
# is rebuilt (and unit-tested) on the next run.
jvm_stamp=$(hash_of jvm/pom.xml jvm/spark/pom.xml jvm/kafka/pom.xml jvm/logstore/pom.xml \
  $(find jvm/logstore/src -type f -name '*.java' | LC_ALL=C sort))
if [ "$(cat "$CACHE/jars/.stamp" 2>/dev/null)" != "$jvm_stamp" ]; then
  say "JVM: resolving Delta, the Kafka source, S3A and the Kafka broker from Maven Central; building clickrec's LogStore"
  rm -rf "$CACHE/jars"
  mvn -B -q -f jvm/pom.xml package
  echo "$jvm_stamp" > "$CACHE/jars/.stamp"
else
  say "JVM jars: up to date"
fi

# --- Go tools, built from source into .cache/bin ------------------------------------------------
# go_tool NAME MODULE VERSION HOW_LONG: `go install` once per version (a stamp file remembers it).
go_tool() {
  local name=$1 module=$2 version=$3 how_long=$4 stamp="$CACHE/bin/.$1-stamp"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$version" ]; then
    say "$name: building $module@$version from source ($how_long)"
    mkdir -p "$CACHE/bin"
    GOBIN="$CACHE/bin" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0 go install "$module@$version"
    echo "$version" > "$stamp"
  else
    say "$name: up to date"
  fi
}
go_tool minio "$MINIO_MODULE" "$MINIO_VERSION" "about 3 minutes the first time"
go_tool kustomize "$KUSTOMIZE_MODULE" "$KUSTOMIZE_VERSION" "under a minute"
# --- native BLAS (optional, not installed here) --------------------------------------------------
# Spark's ALS loads libblas.so.3 when the system has one (about 1.6x faster per iteration,
# docs/benchmarks.md), else runs on Java BLAS. The same dlopen netlib does:
if "$VENV/bin/python" -c 'import ctypes; ctypes.CDLL("libblas.so.3")' 2>/dev/null; then
  say "native BLAS: libblas.so.3 found (ALS uses it)"
else
  say "native BLAS: libblas.so.3 not found; ALS runs on Java BLAS (optional, faster: apt-get install libopenblas0)"
fi
say "done: venv $VENV, jars $CACHE/jars, binaries $CACHE/bin"
