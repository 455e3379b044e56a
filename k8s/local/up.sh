#!/usr/bin/env bash
# Starts a local single-node Kubernetes cluster on this machine (make k8s-up) and the Kubeflow
# spark-operator against it, out of cluster, with the settings docs/deploy.md installs it with.
#
#   etcd             127.0.0.1:$ETCD_PORT (Debian's etcd-server)
#   kube-apiserver   https://127.0.0.1:$APISERVER_PORT (and this host's address), aggregator routing
#   kube-controller-manager, kube-scheduler
#   one node         containerd (runc, a CNI bridge) and a kubelet: k8s/local/node.sh
#   spark-operator   controller and webhook (:$WEBHOOK_PORT), CRDs of the pinned chart
#
# Binaries come from k8s/local/build.sh (make k8s-build); state (PKI, etcd data, kubeconfigs,
# logs, pid files) lives in .clickrec/k8s/. Idempotent: a component already running is left alone.
# Stop everything with k8s/local/down.sh (make k8s-down); add --wipe there to delete the state.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=k8s/local/versions.sh
source k8s/local/versions.sh
# shellcheck source=k8s/local/lib.sh
source k8s/local/lib.sh

need_bin() { for tool; do [ -x "$BIN/$tool" ] || die "$BIN/$tool missing: run make k8s-build first"; done; }
need_bin kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet
debian_packages etcd-server:/usr/bin/etcd openssl:/usr/bin/openssl curl:/usr/bin/curl iproute2:/usr/sbin/ip
mkdir -p "$STATE" "$PKI" "$LOGS" "$RUN"

# --- certificates ------------------------------------------------------------------------------
# One CA signs everything: the API server's serving certificate, a client certificate per
# component (their identity is the certificate's CN/O), and kubelets' certificates later on.
node_ip=$(host_ip)
[ -n "$node_ip" ] || die "no non-loopback IPv4 address on this machine (the API server must advertise one)"
if [ ! -f "$PKI/ca.crt" ]; then
  say "PKI: a CA and certificates in $PKI"
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
    -days 3650 -subj "/CN=clickrec-local-ca" 2>/dev/null
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
# cert NAME SUBJECT [SAN]: a key and a certificate signed by the CA, made once.
cert() {
  local name=$1 subject=$2 san=${3:-} ext
  [ -f "$PKI/$name.crt" ] && return
  ext=$(mktemp)
  if [ -n "$san" ]; then
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$san" > "$ext"
  else
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > "$ext"
  fi
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subject" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -out "$PKI/$name.crt" -days 3650 -extfile "$ext" 2>/dev/null
  rm -f "$ext" "$PKI/$name.csr"
}
cert apiserver "/CN=kube-apiserver" \
  "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$SERVICE_IP,IP:$node_ip"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
cert admin "/O=system:masters/CN=clickrec-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"

# kubeconfig NAME: $STATE/NAME.kubeconfig with NAME's client certificate.
kubeconfig() {
  local name=$1
  cat > "$STATE/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: clickrec-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $name
  user:
    client-certificate: $PKI/$name.crt
    client-key: $PKI/$name.key
contexts:
- name: clickrec-local
  context: {cluster: clickrec-local, user: $name}
current-context: clickrec-local
EOF
}
for name in admin controller-manager scheduler; do kubeconfig "$name"; done

# --- etcd --------------------------------------------------------------------------------------
start etcd etcd --name clickrec-local --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "clickrec-local=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
  --quota-backend-bytes 2147483648
wait_for "etcd" 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver ----------------------------------------------------------------------------
# It listens on every address: clients on this host use 127.0.0.1, pods this host's address (the
# `kubernetes` Service's endpoint; without kube-proxy and DNS, Spark drivers in pods are pointed
# at it directly). It reaches the kubelet (logs, exec) at the node's InternalIP, not its name.
# --enable-aggregator-routing: the API server calls webhooks (and aggregated APIs) at their
# Service's endpoints instead of its ClusterIP, so the operator's webhook can run on the host
# behind a selector-less Service without kube-proxy.
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 0.0.0.0 --secure-port "$APISERVER_PORT" --advertise-address "$node_ip" \
  --kubelet-preferred-address-types InternalIP \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --authorization-mode Node,RBAC --allow-privileged=true \
  --enable-aggregator-routing=true \
  --profiling=false
wait_for "kube-apiserver /readyz" 180 "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" get --raw /readyz

start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --use-service-account-credentials=true --service-cluster-ip-range "$SERVICE_CIDR" \
  --leader-elect=false
start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig "$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false
wait_for "kube-controller-manager /healthz" 120 curl -skf "https://127.0.0.1:$CONTROLLER_MANAGER_PORT/healthz"
wait_for "kube-scheduler /healthz" 120 curl -skf "https://127.0.0.1:$SCHEDULER_PORT/healthz"
# The controller-manager's service-account controllers make each namespace's `default` account.
wait_for "the default ServiceAccount" 120 kctl -n default get serviceaccount default

# --- the node: containerd and a kubelet ---------------------------------------------------------
bash k8s/local/node.sh

# --- the spark-operator, out of cluster --------------------------------------------------------
# docs/deploy.md: the chart 2.5.2 in namespace spark-operator with spark.jobNamespaces={clickrec},
# webhook.enable=true, prometheus.metrics.enable=true; clickrec's own accounts (no chart RBAC for
# Spark). The CRDs are the chart's own, from the module build.sh downloaded.
need_bin spark-operator
op_dir=$(module_dir "$SPARK_OPERATOR_MODULE" "$SPARK_OPERATOR_VERSION")
[ -d "$op_dir/charts/spark-operator-chart/crds" ] || die "the operator's chart CRDs were not found in $op_dir"
say "spark-operator: CRDs, namespaces, the webhook's Service and configurations"
kctl apply --server-side --force-conflicts -f "$op_dir/charts/spark-operator-chart/crds/" >/dev/null
kctl wait --for condition=established --timeout 60s crd --all >/dev/null
for ns in "$OPERATOR_NAMESPACE" $JOB_NAMESPACES; do
  kctl get namespace "$ns" >/dev/null 2>&1 || kctl create namespace "$ns" >/dev/null
done
# The webhook runs on this host: a Service without a selector whose EndpointSlice is this host's
# address (EndpointSlices refuse loopback addresses). The webhook configurations are the chart's
# (templates/webhook/*webhookconfiguration.yaml, failurePolicy Fail, timeout 10 s); the webhook
# fills in their caBundle itself when it starts.
{
  cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: $WEBHOOK_SERVICE, namespace: $OPERATOR_NAMESPACE}
spec:
  ports: [{name: webhook, port: $WEBHOOK_PORT, targetPort: $WEBHOOK_PORT, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $WEBHOOK_SERVICE-host
  namespace: $OPERATOR_NAMESPACE
  labels: {kubernetes.io/service-name: $WEBHOOK_SERVICE, endpointslice.kubernetes.io/managed-by: clickrec-k8s-local}
addressType: IPv4
ports: [{name: webhook, port: $WEBHOOK_PORT, protocol: TCP}]
endpoints: [{addresses: ["$node_ip"], conditions: {ready: true}}]
EOF
  python3 - "$JOB_NAMESPACES" "$WEBHOOK_NAME" "$WEBHOOK_SERVICE" "$OPERATOR_NAMESPACE" "$WEBHOOK_PORT" <<'EOF'
import json, sys
namespaces, name, service, namespace, port = sys.argv[1].split(), *sys.argv[2:]
selector = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}]}
def hook(name, path, group, version, resources, operations, object_selector=None):
    h = {"name": name, "admissionReviewVersions": ["v1"],
         "clientConfig": {"service": {"name": service, "namespace": namespace, "port": int(port), "path": path}},
         "sideEffects": "None", "failurePolicy": "Fail", "namespaceSelector": selector,
         "rules": [{"apiGroups": [group], "apiVersions": [version], "resources": resources, "operations": operations}],
         "timeoutSeconds": 10}
    if object_selector:
        h["objectSelector"] = object_selector
    return h
# (name, path, group, version, resource, operations, objectSelector): the chart's webhooks.
group = "sparkoperator.k8s.io"
rw = ["CREATE", "UPDATE"]
pod_selector = {"matchLabels": {"sparkoperator.k8s.io/launched-by-spark-operator": "true"}}
mutating = [hook("mutate--v1-pod.sparkoperator.k8s.io", "/mutate--v1-pod", "", "v1", ["pods"], ["CREATE"], pod_selector)]
validating = []
for version, resource, kind in (("v1beta2", "sparkapplications", "sparkapplication"),
                                ("v1beta2", "scheduledsparkapplications", "scheduledsparkapplication"),
                                ("v1alpha1", "sparkconnects", "sparkconnect")):
    for verb, hooks in (("mutate", mutating), ("validate", validating)):
        path = f"{verb}-sparkoperator-k8s-io-{version}-{kind}"
        hooks.append(hook(f"{path}.{group}", f"/{path}", group, version, [resource], rw))
for kind, hooks in (("MutatingWebhookConfiguration", mutating), ("ValidatingWebhookConfiguration", validating)):
    print("---")
    print(json.dumps({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                      "metadata": {"name": name, "labels": {"app.kubernetes.io/component": "webhook"}},
                      "webhooks": hooks}))
EOF
} > "$STATE/operator-webhook.yaml"
kctl apply -f "$STATE/operator-webhook.yaml" >/dev/null

# Both processes run as the cluster admin with the admin kubeconfig (in a cluster: the chart's
# ServiceAccounts and ClusterRoles). The controller runs spark-submit from SPARK_HOME (the pinned
# pyspark wheel: bin/spark-submit and the spark-kubernetes jar) against the master it reads from
# KUBERNETES_SERVICE_HOST/PORT; spark-submit's client authenticates with $KUBECONFIG.
spark_home=$("$ROOT/.venv/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
[ -x "$spark_home/bin/spark-submit" ] || die "no spark-submit in $spark_home: run make setup"
mkdir -p "$STATE/operator/certs"
namespaces_flag=$(echo "$JOB_NAMESPACES" | tr ' ' ',')
export KUBECONFIG=$KUBECONFIG_ADMIN SPARK_HOME=$spark_home
export KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT=$APISERVER_PORT
start spark-operator-webhook "$BIN/spark-operator" webhook start \
  --namespaces="$namespaces_flag" \
  --webhook-secret-name="$WEBHOOK_NAME-certs" --webhook-secret-namespace="$OPERATOR_NAMESPACE" \
  --webhook-svc-name="$WEBHOOK_SERVICE" --webhook-svc-namespace="$OPERATOR_NAMESPACE" \
  --webhook-port="$WEBHOOK_PORT" --webhook-cert-dir="$STATE/operator/certs" \
  --mutating-webhook-name="$WEBHOOK_NAME" --validating-webhook-name="$WEBHOOK_NAME" \
  --enable-metrics=true --metrics-bind-address="127.0.0.1:$WEBHOOK_METRICS_PORT" \
  --metrics-endpoint=/metrics --metrics-labels=app_type \
  --health-probe-bind-address="127.0.0.1:$WEBHOOK_HEALTH_PORT" \
  --leader-election=false
start spark-operator-controller "$BIN/spark-operator" controller start \
  --namespaces="$namespaces_flag" \
  --controller-threads=10 --enable-ui-service=true \
  --enable-metrics=true --metrics-bind-address="127.0.0.1:$CONTROLLER_METRICS_PORT" \
  --metrics-endpoint=/metrics --metrics-labels=app_type \
  --health-probe-bind-address="127.0.0.1:$CONTROLLER_HEALTH_PORT" \
  --leader-election=false
wait_for "spark-operator webhook /readyz" 120 curl -sf "http://127.0.0.1:$WEBHOOK_HEALTH_PORT/readyz"
wait_for "spark-operator controller /readyz" 120 curl -sf "http://127.0.0.1:$CONTROLLER_HEALTH_PORT/readyz"
wait_for "the webhook's caBundle" 60 bash -c \
  "'$BIN/kubectl' --kubeconfig '$KUBECONFIG_ADMIN' get mutatingwebhookconfiguration '$WEBHOOK_NAME' -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | grep -q ."

say "up: control plane, node $(hostname | tr '[:upper:]' '[:lower:]') and the spark-operator"
say "use it with: export KUBECONFIG=$KUBECONFIG_ADMIN; $BIN/kubectl get --raw /readyz"
