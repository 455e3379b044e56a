#!/usr/bin/env bash
# Builds, once, the binaries of the local single-node cluster (make k8s-up) into .cache/k8s/bin:
# the Kubernetes components and kubectl, and the Kubeflow spark-operator. Everything is built from
# source through the Go module proxy; nothing prebuilt is downloaded. Each binary has a stamp file
# naming the version it was built for; a binary whose stamp matches is skipped, so a second run
# takes a second.
#
# Neither module builds with `go install`: k8s.io/kubernetes replaces its k8s.io/* modules with
# ./staging paths, and the operator replaces them with pinned versions. So this writes a small
# wrapper module per project into .cache/k8s/src that requires it and turns those replaces into
# module versions, and builds the main packages from there.
#
# Times on 2 cores shared with other builds, cold Go build cache: about 16 minutes for the
# Kubernetes binaries (kube-apiserver alone 11), about 4 for the operator (20 in all, 2026-12).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=k8s/local/versions.sh
source k8s/local/versions.sh
CACHE=$PWD/.cache/k8s
BIN=$CACHE/bin
SRC=$CACHE/src

say() { printf '\033[1m[k8s-build]\033[0m %s\n' "$*" >&2; }
die() { printf '[k8s-build] error: %s\n' "$*" >&2; exit 1; }
command -v go >/dev/null || die "go not found: Go is a prerequisite"
mkdir -p "$BIN" "$SRC"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

# mod_file MODULE VERSION: the go.mod of MODULE@VERSION from the module cache (downloaded once).
mod_file() {
  go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'
}

# wrapper NAME MODULE VERSION REPLACES: writes $SRC/NAME/go.mod requiring MODULE@VERSION with the
# replace lines REPLACES (one `old => new version` a line).
wrapper() {
  local dir=$SRC/$1
  mkdir -p "$dir"
  {
    echo "// Written by k8s/local/build.sh: builds $2@$3's commands. Do not edit."
    echo "module clickrec.local/k8s-build/$1"
    echo
    echo "go 1.24.0"
    echo
    echo "require $2 $3"
    echo
    echo "replace ("
    printf '%s\n' "$4" | sed 's/^/\t/'
    echo ")"
  } > "$dir/go.mod.new"
  if ! cmp -s "$dir/go.mod.new" "$dir/go.mod.in" 2>/dev/null; then
    mv "$dir/go.mod.new" "$dir/go.mod.in"
    cp "$dir/go.mod.in" "$dir/go.mod"
    rm -f "$dir/go.sum"
  else
    rm -f "$dir/go.mod.new"
  fi
}

# build NAME DIR PACKAGE LDFLAGS STAMP: go build PACKAGE in the wrapper module DIR into $BIN/NAME,
# unless $BIN/.NAME-stamp already says STAMP.
build() {
  local name=$1 dir=$2 pkg=$3 ldflags=$4 stamp=$5
  if [ -x "$BIN/$name" ] && [ "$(cat "$BIN/.$name-stamp" 2>/dev/null)" = "$stamp" ]; then
    say "$name: up to date ($stamp)"
    return
  fi
  say "$name: building $pkg ($stamp) ..."
  local start=$SECONDS
  (cd "$dir" && go build -mod=mod -trimpath -ldflags "$ldflags" -o "$BIN/$name.tmp" "$pkg")
  mv "$BIN/$name.tmp" "$BIN/$name"
  echo "$stamp" > "$BIN/.$name-stamp"
  say "$name: built in $((SECONDS - start)) s"
}

total=$SECONDS
go_version=$(go env GOVERSION)

# --- Kubernetes --------------------------------------------------------------------------------
kube_mod=$(mod_file k8s.io/kubernetes "$K8S_VERSION")
[ -f "$kube_mod" ] || die "k8s.io/kubernetes@$K8S_VERSION: go.mod not found"
# `k8s.io/X => ./staging/src/k8s.io/X` becomes `k8s.io/X => k8s.io/X v0.<minor>.<patch>`.
kube_replaces=$(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/k8s\.io/.*#\1 => \1 '"$K8S_STAGING_VERSION"'#p' "$kube_mod")
[ -n "$kube_replaces" ] || die "no staging replaces found in $kube_mod"
wrapper kubernetes k8s.io/kubernetes "$K8S_VERSION" "$kube_replaces"
minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
# The control plane first: `make k8s-up` can start it while the node's binaries still build.
for name in kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy; do
  build "$name" "$SRC/kubernetes" "k8s.io/kubernetes/cmd/$name" "$kube_ldflags" "$K8S_VERSION $go_version"
done

# --- the spark-operator ------------------------------------------------------------------------
op_mod=$(mod_file "$SPARK_OPERATOR_MODULE" "$SPARK_OPERATOR_VERSION")
[ -f "$op_mod" ] || die "$SPARK_OPERATOR_MODULE@$SPARK_OPERATOR_VERSION: go.mod not found"
# Its own replace block, copied as it is (pinned module versions, no local paths).
op_replaces=$(sed -n '/^replace (/,/^)/{/^replace (/d;/^)/d;s/^[[:space:]]*//;/^$/d;p}' "$op_mod")
if printf '%s\n' "$op_replaces" | grep -q '=> \.'; then die "the operator's go.mod replaces a module with a local path"; fi
wrapper spark-operator "$SPARK_OPERATOR_MODULE" "$SPARK_OPERATOR_VERSION" "$op_replaces"
op_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$SPARK_OPERATOR_VERSION"
op_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
build spark-operator "$SRC/spark-operator" "$SPARK_OPERATOR_MODULE/cmd/operator" "$op_ldflags" \
  "$SPARK_OPERATOR_VERSION $go_version"

say "done in $((SECONDS - total)) s: $(cd "$BIN" && ls | tr '\n' ' ')"
