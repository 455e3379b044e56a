#!/usr/bin/env bash
# Stops what k8s/local/up.sh started (make k8s-down), in reverse order, by the pids it recorded.
# Pods are deleted first, through the API while the kubelet still runs, so that their containers,
# network namespaces and addresses are released the ordinary way; what is left is killed through
# containerd. The state in .clickrec/k8s (PKI, etcd data) is kept, so the next `make k8s-up` finds
# the same cluster (without pods); `k8s/local/down.sh --wipe` deletes it too.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=k8s/local/lib.sh
source k8s/local/lib.sh
SOCK=$STATE/containerd/containerd.sock

stop spark-operator-controller
stop spark-operator-webhook
if running kubelet && running kube-apiserver; then
  say "deleting every pod (60 s at most)"
  kctl delete pods --all --all-namespaces --grace-period=5 --timeout=60s --wait >/dev/null 2>&1 || true
fi
stop kubelet
if running containerd; then
  for id in $(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$SOCK" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  sleep 1
  for id in $(ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$SOCK" -n k8s.io tasks rm -f "$id" >/dev/null 2>&1 || true
  done
  ctr --address "$SOCK" -n k8s.io containers ls -q 2>/dev/null \
    | xargs -r ctr --address "$SOCK" -n k8s.io containers rm >/dev/null 2>&1 || true
fi
stop containerd
for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop "$name"
done
# Mounts the kubelet and containerd left under the state folder (volumes, shm, rootfs).
grep -F " $STATE/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
if [ "${1:-}" = "--wipe" ]; then
  say "deleting $STATE, the pods' bridge and the kubelet's iptables chains"
  ip link show "$POD_BRIDGE" >/dev/null 2>&1 && ip link delete "$POD_BRIDGE"
  # The kubelet's own iptables chains (it adds them again when it starts).
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for hook in INPUT OUTPUT; do
      while "$cmd" -D "$hook" -j KUBE-FIREWALL 2>/dev/null; do :; done
    done
    for table in filter nat mangle; do
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        "$cmd" -t "$table" -F "$chain" 2>/dev/null && "$cmd" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
  rm -rf "$STATE"
fi
say "down"
