#!/bin/bash
# The one install recipe of clickrec's image, run as root inside the image's root filesystem:
# by k8s/image/Dockerfile (RUN, on debian:bookworm-slim) and by k8s/image/build-oci.sh (chroot
# into a debootstrap'ed bookworm). CONTEXT is the folder k8s/image/build.sh staged:
#   CONTEXT/wheels/        the project wheel and every dependency at the pins of constraints.txt
#   CONTEXT/constraints.txt  the exact versions `make setup` installed (pip list of .venv)
#   CONTEXT/jars/spark/    the JVM jars `make setup` resolved (Delta, Kafka source, S3A, LogStore)
#   CONTEXT/jars/jmx_prometheus_javaagent.jar   the monitoring block's agent (k8s/image/pom.xml)
#   CONTEXT/jobs/          the SparkApplications' main files
#   CONTEXT/entrypoint.sh  what driver and executor pods run
# SPARK_HOME and CLICKREC_HOME come from the Dockerfile's ENV (build-oci.sh passes the same).
# Nothing is downloaded but Debian packages; Python packages install from CONTEXT/wheels only.
set -euo pipefail
CONTEXT=${1:?usage: install.sh CONTEXT_DIR}
: "${SPARK_HOME:?set by the Dockerfile ENV}" "${CLICKREC_HOME:?set by the Dockerfile ENV}"
VENV=$CLICKREC_HOME/venv
SPARK_UID=185
say() { printf '[install.sh] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------------------------
# The same sources whatever the base (debootstrap writes only `bookworm main`), so both builds
# see the same package versions on the same day.
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
cat > /etc/apt/sources.list.d/debian.sources <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
# No documentation in the image (as debian:bookworm-slim does).
cat > /etc/dpkg/dpkg.cfg.d/clickrec-nodoc <<'NODOC'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
NODOC
export DEBIAN_FRONTEND=noninteractive
say "apt: Java 17, Python 3.11, OpenBLAS, tini"
apt-get update -qq
# The JRE's postinst expects man folders even when dpkg leaves them out.
mkdir -p /usr/share/man/man1
# libopenblas0: OpenBLAS as libblas.so.3 and liblapack.so.3 (Debian's alternatives), the names
# netlib loads, so ALS runs on native BLAS. tini: PID 1, forwards signals (entrypoint.sh).
apt-get install -y -qq --no-install-recommends \
  openjdk-17-jre-headless python3.11 python3.11-venv libopenblas0 tini procps ca-certificates \
  >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/*

# --- the project's virtualenv and Spark --------------------------------------------------------
say "venv: $VENV from the staged wheels"
python3.11 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --no-cache-dir --no-index \
  --find-links "$CONTEXT/wheels" --constraint "$CONTEXT/constraints.txt" clickrec
# Spark is the pinned pyspark wheel's own distribution (bin/spark-submit, jars/ with
# spark-kubernetes): SPARK_HOME points into the venv, so there is one copy of Spark.
site=$("$VENV/bin/python" -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))')
mkdir -p "$(dirname "$SPARK_HOME")"
ln -sfn "$site" "$SPARK_HOME"
cp "$CONTEXT"/jars/spark/*.jar "$SPARK_HOME/jars/"
# The path k8s/spark-operator/base/defaults.yaml's monitoring block names.
mkdir -p "$SPARK_HOME/monitoring"
cp "$CONTEXT/jars/jmx_prometheus_javaagent.jar" "$SPARK_HOME/monitoring/jmx_prometheus_javaagent.jar"

# --- jobs, entrypoint, user ---------------------------------------------------------------------
mkdir -p "$CLICKREC_HOME/jobs"
cp -r "$CONTEXT"/jobs/. "$CLICKREC_HOME/jobs/"
find "$CLICKREC_HOME/jobs" -name __pycache__ -prune -exec rm -rf {} +
install -m 0755 "$CONTEXT/entrypoint.sh" "$CLICKREC_HOME/entrypoint.sh"
groupadd --system --gid "$SPARK_UID" spark
useradd --system --uid "$SPARK_UID" --gid "$SPARK_UID" --home-dir "$SPARK_HOME/work-dir" \
  --no-create-home --shell /usr/sbin/nologin spark
mkdir -p "$SPARK_HOME/work-dir"
chown "$SPARK_UID:$SPARK_UID" "$SPARK_HOME/work-dir"
chmod 1777 /tmp

# --- what was installed, for comparing two builds ---------------------------------------------
{
  echo "java: $(java -version 2>&1 | head -1)"
  echo "python: $("$VENV/bin/python" -c 'import platform; print(platform.python_version())')"
  echo "spark: $("$VENV/bin/python" -c 'import pyspark; print(pyspark.__version__)')"
  for pkg in openjdk-17-jre-headless python3.11 libopenblas0-pthread tini; do
    echo "deb $pkg: $(dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null || echo none)"
  done
  echo "blas: $(readlink -f /usr/lib/*-linux-gnu/libblas.so.3)"
  "$VENV/bin/python" -m pip list --format=freeze --disable-pip-version-check | sed 's/^/pip /'
} > "$CLICKREC_HOME/versions.txt"
say "installed: $(head -3 "$CLICKREC_HOME/versions.txt" | tr '\n' ' ')"
