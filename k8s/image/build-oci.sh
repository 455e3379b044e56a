#!/usr/bin/env bash
# The Docker-less image build (`make image BUILDER=oci`, or `make image` where no Docker engine
# answers; k8s/image/build.sh stages .cache/image/context/ first and calls this):
#   1. a Debian bookworm root filesystem from debootstrap (minbase), made once and cached in
#      .cache/image/base/, copied to .cache/image/rootfs/ for each build;
#   2. chroot into it and run the same recipe as the Dockerfile, k8s/image/install.sh, with the
#      Dockerfile's ENV (k8s/image/image_config.py reads it);
#   3. pack it with umoci as one layer, with the Dockerfile's ENV, USER, WORKDIR and ENTRYPOINT,
#      into .cache/image/<image>-<version>.oci.tar, named docker.io/library/<image>:<version> (what
#      the manifests' `clickrec:<version>` means to containerd): `ctr -n k8s.io images import` it.
# Needs root (chroot, mounts), debootstrap and umoci (apt-get install debootstrap umoci), and
# Debian's package mirror. Leaves .cache/image/rootfs/ for inspection (chroot into it).
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${IMAGE:-clickrec}
VERSION=${VERSION:?set by k8s/image/build.sh}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
OUT=.cache/image
BASE=$OUT/base
ROOTFS=$OUT/rootfs
LAYOUT=$OUT/oci
ARCHIVE=$OUT/$IMAGE-$VERSION.oci.tar
CONTEXT=$OUT/context
REF=docker.io/library/$IMAGE:$VERSION

say() { printf 'build-oci: %s\n' "$*" >&2; }
die() { say "$1"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and mounts); run as root or use Docker"
# Debian's debootstrap and umoci, installed when missing (as k8s/local/up.sh does its packages).
missing=()
for tool in debootstrap umoci; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
    || die "could not install ${missing[*]}: apt-get install debootstrap umoci"
fi
for tool in debootstrap umoci chroot mount; do
  command -v "$tool" >/dev/null || die "$tool not found: apt-get install debootstrap umoci"
done
[ -f "$CONTEXT/install.sh" ] || die "$CONTEXT is not staged: run make image (k8s/image/build.sh)"
PY=$(command -v python3)

# --- 1. the base root filesystem ---------------------------------------------------------------
base_stamp="debootstrap --variant=minbase bookworm $MIRROR"
if [ "$(cat "$BASE/.clickrec-base" 2>/dev/null)" != "$base_stamp" ]; then
  say "debootstrap bookworm into $BASE (about a minute, once)"
  rm -rf "$BASE" "$BASE.tmp"
  debootstrap --variant=minbase bookworm "$BASE.tmp" "$MIRROR" >"$OUT/debootstrap.log" 2>&1 \
    || die "debootstrap failed: see $OUT/debootstrap.log"
  mv "$BASE.tmp" "$BASE"
  echo "$base_stamp" > "$BASE/.clickrec-base"
fi
rm -rf "$ROOTFS"
cp -a "$BASE" "$ROOTFS"
rm -f "$ROOTFS/.clickrec-base"

# --- 2. the recipe, in a chroot ------------------------------------------------------------------
mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true; done
}
trap cleanup EXIT
mount -t proc proc "$ROOTFS/proc" && mounted+=("$ROOTFS/proc")
mount --bind /dev "$ROOTFS/dev" && mounted+=("$ROOTFS/dev")
# Name resolution while building (a container runtime provides both files in a pod).
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
cp /etc/hosts "$ROOTFS/etc/hosts"
cp -r "$CONTEXT" "$ROOTFS/tmp/clickrec-image"
mapfile -t image_env < <("$PY" k8s/image/image_config.py env)
say "install.sh in the chroot"
chroot "$ROOTFS" /usr/bin/env -i HOME=/root "${image_env[@]}" \
  bash /tmp/clickrec-image/install.sh /tmp/clickrec-image
if [ "${IMAGE_SMOKE:-1}" != 0 ]; then
  say "k8s/image/smoke.sh in the chroot, as uid 185 (IMAGE_SMOKE=0 skips it)"
  chroot --userspec=185:185 "$ROOTFS" /usr/bin/env -i HOME=/opt/spark/work-dir "${image_env[@]}" \
    bash -s < k8s/image/smoke.sh
fi
cleanup; mounted=()
rm -rf "$ROOTFS/tmp/clickrec-image" "$ROOTFS"/tmp/smoke-*
# The container runtime provides resolv.conf and hosts and mounts /dev; leave them out.
: > "$ROOTFS/etc/resolv.conf"
rm -f "$ROOTFS/etc/hosts"
find "$ROOTFS/dev" -mindepth 1 -delete

# --- 3. pack it ----------------------------------------------------------------------------------
say "packing with umoci"
rm -rf "$LAYOUT" "$OUT/bundle"
umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:$VERSION"
umoci unpack --image "$LAYOUT:$VERSION" "$OUT/bundle" >/dev/null
rmdir "$OUT/bundle/rootfs"
mv "$ROOTFS" "$OUT/bundle/rootfs"
umoci repack --image "$LAYOUT:$VERSION" "$OUT/bundle"
mapfile -t flags < <("$PY" k8s/image/image_config.py umoci)
umoci config --image "$LAYOUT:$VERSION" --clear=config.env --os linux \
  --architecture "$(dpkg --print-architecture)" "${flags[@]}"
umoci gc --layout "$LAYOUT"
mv "$OUT/bundle/rootfs" "$ROOTFS"
rm -rf "$OUT/bundle"
# containerd's importer names the image by this annotation (else from the bare tag plus
# --base-name); CRI then finds it under the name the pod spec's `clickrec:<version>` means.
"$PY" - "$LAYOUT/index.json" "$REF" <<'PYEOF'
import json, sys
path, ref = sys.argv[1:]
index = json.load(open(path))
for manifest in index["manifests"]:
    manifest.setdefault("annotations", {})["io.containerd.image.name"] = ref
json.dump(index, open(path, "w"))
PYEOF
tar -C "$LAYOUT" -cf "$ARCHIVE.tmp" oci-layout index.json blobs
mv "$ARCHIVE.tmp" "$ARCHIVE"
rm -rf "$LAYOUT"
say "$ARCHIVE ($(du -h "$ARCHIVE" | cut -f1)), image $REF"
