#!/usr/bin/env bash
# `make image`: build k8s/image/Dockerfile as clickrec:<version from setup.cfg>, the tag the
# manifests name (k8s/spark-operator/base/defaults.yaml). Needs a running Docker engine; where
# there is none it says so and exits 3 without building anything.
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCKER=${DOCKER:-docker}
IMAGE=${IMAGE:-clickrec}

die() { printf 'make image: %s\n' "$1" >&2; exit 1; }

if ! command -v "$DOCKER" >/dev/null 2>&1; then
  printf 'make image: no Docker engine available: `%s` is not installed.\n' "$DOCKER" >&2
  printf 'make image: build on a machine with Docker (see docs/deploy.md); nothing was built.\n' >&2
  exit 3
fi
if ! "$DOCKER" info >/dev/null 2>&1; then
  printf 'make image: no Docker engine available: `%s info` cannot reach a daemon (only the client is installed, or the daemon is not running).\n' "$DOCKER" >&2
  printf 'make image: build on a machine with Docker (see docs/deploy.md); nothing was built.\n' >&2
  exit 3
fi

VERSION=$(sed -n 's/^version *= *//p' setup.cfg | head -1)
[ -n "$VERSION" ] || die "no version in setup.cfg"
ls .cache/jars/spark/delta-spark_*.jar >/dev/null 2>&1 || die "the JVM jars are not cached: run make setup"

# The JMX exporter agent (pinned in k8s/image/pom.xml) and the exact Python pins of .venv.
mvn -B -q -f k8s/image/pom.xml package
mkdir -p .cache/image
# `pip list --format=freeze` always prints name==version (pip freeze may print local file URLs).
.venv/bin/python -m pip list --format=freeze --exclude-editable | grep -v -i '^clickrec=' \
  > .cache/image/constraints.txt

"$DOCKER" build -f k8s/image/Dockerfile -t "$IMAGE:$VERSION" .
printf 'make image: built %s:%s\n' "$IMAGE" "$VERSION" >&2
