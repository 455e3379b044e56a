#!/usr/bin/env bash
# The node of the local cluster: containerd (runc, CNI bridge) and a kubelet, on this machine.
# Run by k8s/local/up.sh once the control plane is up; stopped by down.sh.
#
# Quirks of this kind of machine (cgroups v1/hybrid, no CAP_SYS_RESOURCE), each needed:
# runc (crun refuses hybrid cgroups), containerd's restrict_oom_score_adj = true (negative OOM
# scores fail), the kubelet on the cgroupfs driver with failCgroupV1: false. No registry is
# reachable: the pause image is compiled from the kubernetes module's build/pause/linux/pause.c
# and imported with ctr, as every other image must be (ctr images import).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=k8s/local/versions.sh
source k8s/local/versions.sh
# shellcheck source=k8s/local/lib.sh
source k8s/local/lib.sh

debian_packages containerd:/usr/bin/containerd runc:/usr/sbin/runc umoci:/usr/bin/umoci gcc:/usr/bin/gcc \
  libc6-dev:/usr/lib/x86_64-linux-gnu/libc.a containernetworking-plugins:/usr/lib/cni/bridge \
  iptables:/usr/sbin/iptables
[ -x "$BIN/kubelet" ] || die "$BIN/kubelet missing: run make k8s-build"
node_ip=$(host_ip)
node_name=$(hostname | tr '[:upper:]' '[:lower:]')
CTRD=$STATE/containerd
SOCK=$CTRD/containerd.sock
mkdir -p "$CTRD" "$STATE/cni/net.d" "$STATE/kubelet" "$STATE/images"

# --- the pause image ---------------------------------------------------------------------------
pause_tar=$STATE/images/pause-$K8S_VERSION.tar
if [ ! -f "$pause_tar" ]; then
  say "pause image: compiling build/pause/linux/pause.c of k8s.io/kubernetes@$K8S_VERSION"
  kube_dir=$(module_dir k8s.io/kubernetes "$K8S_VERSION")
  work=$(mktemp -d)
  gcc -Os -static -o "$work/pause" "$kube_dir/build/pause/linux/pause.c" \
    -DVERSION="$K8S_VERSION"
  tag=${PAUSE_IMAGE##*:}
  (cd "$work" && umoci init --layout oci && umoci new --image "oci:$tag" \
    && umoci unpack --image "oci:$tag" bundle >/dev/null \
    && install -m 0755 pause bundle/rootfs/pause \
    && umoci repack --image "oci:$tag" bundle \
    && umoci config --image "oci:$tag" --config.entrypoint /pause --config.user 65535:65535 \
    && tar -C oci -cf "$pause_tar" .)
  rm -rf "$work"
fi

# --- a kubectl image, for checks from inside the cluster (tests/e2e) ---------------------------
kubectl_tar=$STATE/images/kubectl-$K8S_VERSION.tar
if [ ! -f "$kubectl_tar" ]; then
  say "kubectl image: $KUBECTL_IMAGE (the static kubectl of .cache/k8s/bin)"
  work=$(mktemp -d)
  tag=${KUBECTL_IMAGE##*:}
  (cd "$work" && umoci init --layout oci && umoci new --image "oci:$tag" \
    && umoci unpack --image "oci:$tag" bundle >/dev/null \
    && install -m 0755 "$BIN/kubectl" bundle/rootfs/kubectl \
    && umoci repack --image "oci:$tag" bundle \
    && umoci config --image "oci:$tag" --config.entrypoint /kubectl --config.user 65534:65534 \
    && tar -C oci -cf "$kubectl_tar" .)
  rm -rf "$work"
fi

# --- containerd --------------------------------------------------------------------------------
cat > "$CTRD/config.toml" <<EOF
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
# Pods get addresses on a bridge of this host (their own network namespaces).
cat > "$STATE/cni/net.d/10-clickrec.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "clickrec-local", "plugins": [
  {"type": "bridge", "bridge": "$POD_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam",
            "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
EOF
# The bridge is made here rather than at the first pod (the CNI plugin takes it as it finds it),
# so that services can listen on its address before any pod runs.
ip link show "$POD_BRIDGE" >/dev/null 2>&1 || ip link add "$POD_BRIDGE" type bridge
ip -4 addr show dev "$POD_BRIDGE" | grep -q "inet $POD_GATEWAY/" || ip addr add "$POD_GATEWAY/${POD_CIDR#*/}" dev "$POD_BRIDGE"
ip link set "$POD_BRIDGE" up
start containerd containerd --config "$CTRD/config.toml"
wait_for "containerd" 60 ctr --address "$SOCK" version
if ! ctr --address "$SOCK" -n k8s.io images ls -q | grep -qx "$PAUSE_IMAGE"; then
  ctr --address "$SOCK" -n k8s.io images import --base-name "${PAUSE_IMAGE%:*}" "$pause_tar" >/dev/null
fi
if ! ctr --address "$SOCK" -n k8s.io images ls -q | grep -qx "$KUBECTL_IMAGE"; then
  ctr --address "$SOCK" -n k8s.io images import --base-name "${KUBECTL_IMAGE%:*}" "$kubectl_tar" >/dev/null
  # umoci's tags arrive as import-<date>@... names the CRI does not resolve: remove them.
  ctr --address "$SOCK" -n k8s.io images ls -q | { grep 'import-' || true; } \
    | xargs -r ctr --address "$SOCK" -n k8s.io images rm >/dev/null
fi

# --- kubelet -----------------------------------------------------------------------------------
if [ ! -f "$PKI/kubelet.crt" ]; then
  ext=$(mktemp)
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > "$ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/kubelet.key" -out "$PKI/kubelet.csr" \
    -subj "/O=system:nodes/CN=system:node:$node_name" 2>/dev/null
  openssl x509 -req -in "$PKI/kubelet.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -out "$PKI/kubelet.crt" -days 3650 -extfile "$ext" 2>/dev/null
  rm -f "$ext" "$PKI/kubelet.csr"
fi
cat > "$STATE/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: clickrec-local
  cluster: {server: "https://127.0.0.1:$APISERVER_PORT", certificate-authority: "$PKI/ca.crt"}
users:
- name: kubelet
  user: {client-certificate: "$PKI/kubelet.crt", client-key: "$PKI/kubelet.key"}
contexts:
- name: clickrec-local
  context: {cluster: clickrec-local, user: kubelet}
current-context: clickrec-local
EOF
cat > "$STATE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "$node_ip"
port: $KUBELET_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTH_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: "unix://$SOCK"
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "200Mi", nodefs.available: "2%", imagefs.available: "2%"}
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 95
serializeImagePulls: false
EOF
start kubelet "$BIN/kubelet" --config "$STATE/kubelet-config.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
  --root-dir "$STATE/kubelet" --cert-dir "$PKI/kubelet-serving" --hostname-override "$node_name" --node-ip "$node_ip"
wait_for "node $node_name Ready" 180 bash -c \
  "'$BIN/kubectl' --kubeconfig '$KUBECONFIG_ADMIN' get node '$node_name' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
