# The versions of the local cluster (k8s/local/build.sh, up.sh), pinned in this one place.
# shellcheck shell=bash
# Kubernetes: the k8s.io/kubernetes module and its staging modules (k8s.io/api etc., v0.<minor>.<patch>).
K8S_VERSION=v1.34.4
K8S_STAGING_VERSION=v0.34.4
# The Kubeflow spark-operator whose v1beta2 CRDs the manifests are validated against (docs/deploy.md).
SPARK_OPERATOR_MODULE=github.com/kubeflow/spark-operator/v2
SPARK_OPERATOR_VERSION=v2.5.2
