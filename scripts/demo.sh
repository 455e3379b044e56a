#!/usr/bin/env bash
# `make demo`: the main job on the embedded default. Grows with the jobs that exist.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-conf/local.yaml}
CLICKREC=.venv/bin/clickrec
$CLICKREC status --config "$CONFIG"
