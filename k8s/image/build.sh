#!/usr/bin/env bash
# `make image`: build clickrec:<version from setup.cfg>, the tag the manifests name
# (k8s/spark-operator/base/defaults.yaml), with the one recipe k8s/image/install.sh.
#   BUILDER=auto   (default) Docker when an engine answers, else the OCI archive
#   BUILDER=docker k8s/image/Dockerfile -> the engine's clickrec:<version>; exits 3 without one
#   BUILDER=oci    k8s/image/build-oci.sh -> .cache/image/clickrec-<version>.oci.tar (no Docker:
#                  debootstrap + chroot + umoci; needs root), for `ctr images import`
# Both first stage the same .cache/image/context/ (wheels, jars, jobs, install.sh, entrypoint.sh).
# IMAGE_PLAN_ONLY=1 prints the builder it would use and stops.
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCKER=${DOCKER:-docker}
IMAGE=${IMAGE:-clickrec}
BUILDER=${BUILDER:-auto}
CONTEXT=.cache/image/context

say() { printf 'make image: %s\n' "$*" >&2; }
die() { say "$1"; exit 1; }

docker_answers() {
  command -v "$DOCKER" >/dev/null 2>&1 && "$DOCKER" info >/dev/null 2>&1
}

case "$BUILDER" in
  docker)
    if ! command -v "$DOCKER" >/dev/null 2>&1; then
      say "no Docker engine available: \`$DOCKER\` is not installed."
      say "build without Docker with \`make image BUILDER=oci\` (docs/deploy.md); nothing was built."
      exit 3
    fi
    if ! "$DOCKER" info >/dev/null 2>&1; then
      say "no Docker engine available: \`$DOCKER info\` cannot reach a daemon (only the client is installed, or the daemon is not running)."
      say "build without Docker with \`make image BUILDER=oci\` (docs/deploy.md); nothing was built."
      exit 3
    fi ;;
  oci) ;;
  auto)
    if docker_answers; then BUILDER=docker; else
      say "no Docker engine answers (\`$DOCKER info\`): building the OCI archive instead"
      BUILDER=oci
    fi ;;
  *) die "BUILDER must be auto, docker or oci (got '$BUILDER')" ;;
esac
if [ "${IMAGE_PLAN_ONLY:-}" = 1 ]; then echo "builder: $BUILDER"; exit 0; fi

VERSION=$(sed -n 's/^version *= *//p' setup.cfg | head -1)
[ -n "$VERSION" ] || die "no version in setup.cfg"
ls .cache/jars/spark/delta-spark_*.jar >/dev/null 2>&1 || die "the JVM jars are not cached: run make setup"
[ -x .venv/bin/python ] || die "no .venv: run make setup"

# --- the build context both builders install from -----------------------------------------------
start=$SECONDS
say "staging $CONTEXT"
# The JMX exporter agent (pinned in k8s/image/pom.xml) -> .cache/image/jars/.
mvn_out=$(mvn -B -q -f k8s/image/pom.xml package 2>&1) \
  || { printf '%s\n' "$mvn_out" >&2; die "mvn -f k8s/image/pom.xml package failed"; }
rm -rf "$CONTEXT" && mkdir -p "$CONTEXT/wheels" "$CONTEXT/jars/spark"
# The exact Python pins of .venv: `pip list --format=freeze` always prints name==version.
.venv/bin/python -m pip list --format=freeze --exclude-editable --disable-pip-version-check \
  | grep -v -i '^clickrec=' > "$CONTEXT/constraints.txt"
cp "$CONTEXT/constraints.txt" .cache/image/constraints.txt
# The project wheel (package sources only), then every dependency at those pins as wheels, from
# pip's cache or PyPI: the image installs them with --no-index.
src=$(mktemp -d) && trap 'rm -rf "$src"' EXIT
cp -r pyproject.toml setup.cfg README.md libs "$src/"
.venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$CONTEXT/wheels" "$src"
.venv/bin/python -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$CONTEXT/wheels" \
  --constraint "$CONTEXT/constraints.txt" "$CONTEXT"/wheels/clickrec-"$VERSION"-*.whl
cp .cache/jars/spark/*.jar "$CONTEXT/jars/spark/"
cp .cache/image/jars/jmx_prometheus_javaagent.jar "$CONTEXT/jars/"
cp -r jobs "$CONTEXT/jobs"
cp k8s/image/install.sh k8s/image/entrypoint.sh "$CONTEXT/"
say "staged $(du -sh "$CONTEXT" | cut -f1) in $((SECONDS - start)) s"

if [ "$BUILDER" = docker ]; then
  "$DOCKER" build -f k8s/image/Dockerfile -t "$IMAGE:$VERSION" .
  say "built $IMAGE:$VERSION in $((SECONDS - start)) s"
else
  inputs=$(bash k8s/image/inputs-hash.sh)
  IMAGE=$IMAGE VERSION=$VERSION bash k8s/image/build-oci.sh
  # What it was built from: k8s/local/load-image.sh rebuilds when the working tree differs.
  echo "$inputs" > ".cache/image/$IMAGE-$VERSION.oci.tar.inputs"
  say "built .cache/image/$IMAGE-$VERSION.oci.tar in $((SECONDS - start)) s"
fi
