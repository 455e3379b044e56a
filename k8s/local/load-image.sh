#!/usr/bin/env bash
# Puts the project image into the local cluster's containerd (make k8s-image; make e2e runs it):
# the image the manifests name, clickrec:<version>, as docker.io/library/clickrec:<version>, so
# that the pods' `imagePullPolicy: IfNotPresent` finds it and never pulls. There is no registry
# here; on a cloud cluster the image is pushed to one instead (docs/deploy.md).
#
# The OCI archive of `make image BUILDER=oci` is (re)built first when it is missing or was built
# from other sources than the working tree's (k8s/image/inputs-hash.sh; build.sh writes its
# hash beside the archive).
# Imported again only when the cluster holds another image under that name.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=k8s/local/lib.sh
source k8s/local/lib.sh
SOCK=$STATE/containerd/containerd.sock
IMAGE=clickrec
VERSION=$(sed -n 's/^version *= *//p' setup.cfg | head -1)
[ -n "$VERSION" ] || die "no version in setup.cfg"
ARCHIVE=.cache/image/$IMAGE-$VERSION.oci.tar
REF=docker.io/library/$IMAGE:$VERSION
[ -S "$SOCK" ] || die "the local cluster's containerd is not running: make k8s-up first"

inputs=$(bash k8s/image/inputs-hash.sh)
if [ ! -f "$ARCHIVE" ] || [ "$(cat "$ARCHIVE.inputs" 2>/dev/null)" != "$inputs" ]; then
  say "building $ARCHIVE (missing, or built from other sources; about 10 min)"
  BUILDER=oci bash k8s/image/build.sh
fi

ctr_() { ctr --address "$SOCK" -n k8s.io "$@"; }
# The archive's manifest digest: the image is current when containerd names it with this digest.
want=$(python3 -c 'import json, sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    print(json.load(tar.extractfile("index.json"))["manifests"][0]["digest"])' "$ARCHIVE")
have=$(ctr_ images ls | awk -v ref="$REF" '$1 == ref {print $3}')
if [ "$have" = "$want" ]; then
  say "image $REF: already in the cluster ($want)"
  exit 0
fi
say "importing $ARCHIVE into the cluster's containerd as $REF"
start=$SECONDS
ctr_ images import "$ARCHIVE" >/dev/null
# umoci's tags may also arrive as import-<date>@... names the CRI does not resolve: remove them.
ctr_ images ls -q | { grep 'import-' || true; } | xargs -r ctr --address "$SOCK" -n k8s.io images rm >/dev/null
have=$(ctr_ images ls | awk -v ref="$REF" '$1 == ref {print $3}')
[ "$have" = "$want" ] || die "after the import containerd has $REF as '${have:-nothing}', not $want"
say "image $REF imported ($((SECONDS - start)) s)"
