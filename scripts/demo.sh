#!/usr/bin/env bash
# `make demo`: the main job on the embedded default (local Spark, Delta on disk, MLflow on SQLite).
# generate a clickstream -> pipeline (ingest -> train -> publish champion and challenger)
# -> three users' lists and the popular list through `clickrec recommend` (no JVM) -> status.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-conf/local.yaml}
EVENTS=${2:-200000}
CLICKREC=.venv/bin/clickrec
INPUT=.lake/demo/clickstream-${EVENTS}.csv.gz

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

if [ ! -f "$INPUT" ]; then
  step "generate $EVENTS synthetic events -> $INPUT"
  mkdir -p "$(dirname "$INPUT")"
  $CLICKREC generate --config "$CONFIG" --events "$EVENTS" --out "$INPUT" --seed 7
fi
step "pipeline: ingest $INPUT -> train (CV, MLflow, registry, promotion) -> publish (gold, top-N)"
# Without a native BLAS, netlib's JNI loader prints "netlib-blas: JNI_OnLoad: dlopen(libblas.so.3)
# failed" (and the LAPACK twin) to the JVM's stderr, out of any logger's reach; train says it once
# itself, with the remedy, so those two lines are dropped here.
$CLICKREC pipeline --config "$CONFIG" --input "$INPUT" --format rees46 \
  --set train.num_folds=2 2> >(grep -v 'JNI_OnLoad: dlopen' >&2) | tail -n 1 > .lake/demo/pipeline.json
.venv/bin/python - .lake/demo/pipeline.json >&2 <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
i, t = s["ingest"], s["train"]
print(f"ingest: {i['rows_read']} rows read, {i['accepted']} accepted, {i['duplicates']} duplicates, "
      f"{i['quarantined']} quarantined; {i['users']} users, {i['items']} items")
print(f"train: model v{t['model_version']} ndcg@10 {t['metrics'].get('ndcg_at_10', 0):.3f} "
      f"(popularity {t['baseline_metrics'].get('ndcg_at_10', 0):.3f}), promoted: {t['promoted']}; "
      f"BLAS {t['blas']}")
for variant, p in s["publish"].items():
    print(f"publish {variant}: model v{p['model_version']} -> {p['users']} users, "
          f"gold/recommendations v{p['tables']['gold/recommendations']}; kafka: {p['announcement']}")
PY
pretty() { tail -n 1 | .venv/bin/python -c 'import json, sys; print(json.dumps(json.load(sys.stdin), indent=1))'; }
USERS=$(.venv/bin/python - "$CONFIG" <<'PY'
import sys
from clickrec import columns as C
from clickrec.config import load_config
from clickrec.io.lake import Lake
table = Lake.from_config(load_config(sys.argv[1])).require(C.GOLD_RECOMMENDATIONS).to_pyarrow_table(columns=[C.USER_ID, C.VARIANT])
print(" ".join(sorted(u for u, v in zip(table[C.USER_ID].to_pylist(), table[C.VARIANT].to_pylist()) if v == "champion")[:3]), flush=True)
import os
os._exit(0)  # delta-rs' native runtime can abort at interpreter teardown (exit 134) after the work is done
PY
)
for USER in $USERS; do
  step "clickrec recommend --user $USER --n 5 (champion, read with delta-rs: no JVM)"
  $CLICKREC recommend --config "$CONFIG" --user "$USER" --n 5 2>/dev/null | pretty
done
step "clickrec recommend --user new-visitor --n 5 (an unknown user gets the popular list)"
$CLICKREC recommend --config "$CONFIG" --user new-visitor --n 5 2>/dev/null | pretty
step "status"
$CLICKREC status --config "$CONFIG"
cat >&2 <<'MSG'

Browse the runs (grid, metrics, plots, registered model and aliases):
  make mlflow-ui    # then open http://127.0.0.1:5000
Serve the lists over HTTP (read-only, 127.0.0.1):
  .venv/bin/clickrec serve --port 8000   # GET /v1/recommendations/<user>?n=5&variant=challenger
MSG
