# Shared by k8s/local/up.sh and down.sh: where things are, the ports, starting and stopping the
# background processes. Sourced from the repository root.
# shellcheck shell=bash
BIN=$PWD/.cache/k8s/bin
SRC=$PWD/.cache/k8s/src
STATE=$PWD/.clickrec/k8s
PKI=$STATE/pki
LOGS=$STATE/logs
RUN=$STATE/run
KUBECONFIG_ADMIN=$STATE/admin.kubeconfig

# Ports on 127.0.0.1, away from the defaults so that nothing else on the machine collides.
ETCD_PORT=${CLICKREC_K8S_ETCD_PORT:-23790}
ETCD_PEER_PORT=${CLICKREC_K8S_ETCD_PEER_PORT:-23800}
APISERVER_PORT=${CLICKREC_K8S_APISERVER_PORT:-16443}
CONTROLLER_MANAGER_PORT=${CLICKREC_K8S_CONTROLLER_MANAGER_PORT:-20257}
SCHEDULER_PORT=${CLICKREC_K8S_SCHEDULER_PORT:-20259}
# The webhook listens on every address (the API server calls it at this host's address).
WEBHOOK_PORT=${CLICKREC_K8S_WEBHOOK_PORT:-19443}
WEBHOOK_HEALTH_PORT=18082
WEBHOOK_METRICS_PORT=18083
CONTROLLER_HEALTH_PORT=18081
CONTROLLER_METRICS_PORT=18080
KUBELET_PORT=20250
KUBELET_HEALTH_PORT=20248
SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.88.0.0/16
# The bridge's own address: pods' default gateway, and where the e2e tier's Kafka, MinIO and
# MLflow listen (reachable from this host and its pods only, not from the network).
POD_BRIDGE=clickrec0
POD_GATEWAY=10.88.0.1
# Built by node.sh (no registry is reachable); the CRI's sandbox image.
PAUSE_IMAGE=clickrec.local/pause:3.10
KUBECTL_IMAGE=clickrec.local/kubectl:v1.34.4
SERVICE_IP=10.96.0.1

# The operator as docs/deploy.md installs it: Helm release spark-operator in its namespace.
OPERATOR_NAMESPACE=spark-operator
JOB_NAMESPACES="clickrec"
WEBHOOK_NAME=spark-operator-webhook
WEBHOOK_SERVICE=spark-operator-webhook-svc

say() { printf '\033[1m[k8s]\033[0m %s\n' "$*" >&2; }
die() { printf '[k8s] error: %s\n' "$*" >&2; exit 1; }
kctl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# This host's IPv4 address on its default route: what the API server advertises and where the
# webhook's EndpointSlice points (neither may be a loopback address).
host_ip() {
  local dev
  dev=$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1)}' | head -1)
  [ -n "$dev" ] || return 0
  ip -4 -o addr show dev "$dev" scope global | awk '{split($4, a, "/"); print a[1]}' | head -1
}

# module_dir MODULE VERSION: MODULE@VERSION's folder in the Go module cache (build.sh fetched it).
module_dir() {
  GOTOOLCHAIN=local go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p'
}

# debian_packages PACKAGE:FILE...: apt-get installs each PACKAGE whose FILE is missing (as root;
# otherwise says what to install).
debian_packages() {
  local missing=() item
  for item; do [ -e "${item#*:}" ] || missing+=("${item%%:*}"); done
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" = 0 ] || die "missing Debian packages: apt-get install ${missing[*]}"
  say "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
}

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# start NAME COMMAND...: COMMAND in the background in its own session, output to $LOGS/NAME.log,
# pid in $RUN/NAME.pid; nothing if NAME already runs.
start() {
  local name=$1; shift
  if running "$name"; then say "$name: running (pid $(cat "$RUN/$name.pid"))"; return; fi
  say "$name: starting (log $LOGS/$name.log)"
  setsid "$@" >> "$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}

# wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds, or fail after SECONDS.
wait_for() {
  local what=$1 seconds=$2 start=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start >= seconds )); then die "$what: not ready after $seconds s (logs in $LOGS)"; fi
    sleep 1
  done
  say "$what: ready ($((SECONDS - start)) s)"
}

# stop NAME: SIGTERM to NAME's process, SIGKILL after 20 s; removes the pid file.
stop() {
  local name=$1 pid
  [ -f "$RUN/$name.pid" ] || return 0
  pid=$(cat "$RUN/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    say "$name: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$name.pid"
}
