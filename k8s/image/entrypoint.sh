#!/bin/bash
# clickrec image entrypoint: what the spark-operator's driver and executor pods run.
#
# Spark's Kubernetes backend starts every pod of an application with this image's ENTRYPOINT
# and one of these argument shapes (and the SPARK_* variables it sets on the pod):
#   driver ARGS...    -> spark-submit --deploy-mode client ARGS... (ARGS: --properties-file,
#                        --class, the main file and its arguments, as the operator built them),
#                        binding the driver to SPARK_DRIVER_BIND_ADDRESS (the pod IP)
#   executor          -> the JVM running org.apache.spark.scheduler.cluster.k8s
#                        .KubernetesExecutorBackend, from SPARK_DRIVER_URL, SPARK_EXECUTOR_ID,
#                        SPARK_EXECUTOR_CORES, SPARK_APPLICATION_ID, SPARK_EXECUTOR_POD_IP,
#                        SPARK_RESOURCE_PROFILE_ID, SPARK_EXECUTOR_POD_NAME, SPARK_EXECUTOR_MEMORY
#                        and the JVM options SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... in order
#   anything else     -> run as given (e.g. `bash`, `python`, `clickrec status`)
# Every command runs under tini (PID 1), which forwards SIGTERM to it and reaps zombies. A
# driver runs under this script's `relay` (below), which passes SIGTERM on to the Python driver
# only: the JVM that spark-submit starts must outlive it.
# Unlike Spark's own image entrypoint it adds no /etc/passwd entry for an unknown uid: the
# manifests run as uid 185, which the image has (`spark`).
set -euo pipefail
SPARK_HOME=${SPARK_HOME:-/opt/spark}
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java

classpath() {
  local cp="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$SPARK_HOME/jars/*"
  [ -z "${HADOOP_CONF_DIR:-}" ] || cp="$HADOOP_CONF_DIR:$cp"
  [ -z "${SPARK_EXTRA_CLASSPATH:-}" ] || cp="$cp:$SPARK_EXTRA_CLASSPATH"
  [ -z "${SPARK_DIST_CLASSPATH:-}" ] || cp="$cp:$SPARK_DIST_CLASSPATH"
  printf '%s' "$cp"
}

need() {
  local name
  for name in "$@"; do
    [ -n "${!name:-}" ] || { echo "entrypoint.sh: $name is not set (the executor pod sets it)" >&2; exit 2; }
  done
}

# relay COMMAND...: run COMMAND (spark-submit, whose JVM starts the Python driver of a PySpark
# application as its child) and pass SIGTERM and SIGINT on to the JVM's children, not to the
# JVM. The kubelet stopping the pod sends SIGTERM; the Python driver then ends its work as
# `clickrec` does on SIGTERM (the stream finishes its running batch and stops the query, a
# batch job ends its MLflow run as KILLED) and exits, and the JVM exits with its status. Sent to
# the JVM, Spark's shutdown hook would stop the SparkContext under the running job instead. A
# JVM without children (a JVM application) gets the signal itself. Exits with COMMAND's status.
relay() {
  set +e  # a failing command's status is passed on, not a reason to stop relaying
  "$@" &
  jvm=$!
  forward() {
    local children
    children=$(cat /proc/"$jvm"/task/*/children 2>/dev/null | tr -s ' \n' ' ')
    if [ -n "${children// /}" ]; then
      # shellcheck disable=SC2086  # one pid per word
      kill -s "$1" $children 2>/dev/null || true
    else
      kill -s "$1" "$jvm" 2>/dev/null || true
    fi
  }
  trap 'forward TERM' TERM
  trap 'forward INT' INT
  while :; do
    wait "$jvm"
    status=$?
    kill -0 "$jvm" 2>/dev/null || break
  done
  # A signal ends `wait` early with 128+n; if the JVM exited meanwhile, wait again for its status.
  if [ "$status" -gt 128 ]; then
    wait "$jvm" 2>/dev/null
    again=$?
    [ "$again" -eq 127 ] || status=$again
  fi
  exit "$status"
}

case "${1:-}" in
  driver)
    shift
    need SPARK_DRIVER_BIND_ADDRESS
    cmd=(bash "$0" relay "$SPARK_HOME/bin/spark-submit"
         --conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS"
         --deploy-mode client
         "$@")
    # tini signals only its child, this script's relay (never the JVM's process group).
    unset TINI_KILL_PROCESS_GROUP
    ;;
  relay)
    shift
    relay "$@"
    ;;
  executor)
    shift
    need SPARK_EXECUTOR_MEMORY SPARK_DRIVER_URL SPARK_EXECUTOR_ID SPARK_EXECUTOR_CORES \
         SPARK_APPLICATION_ID SPARK_EXECUTOR_POD_IP SPARK_RESOURCE_PROFILE_ID SPARK_EXECUTOR_POD_NAME
    # SPARK_JAVA_OPT_<n>, sorted by n as a number (each value is one JVM argument).
    java_opts=()
    while IFS= read -r -d '' name; do
      java_opts+=("${!name}")
    done < <(compgen -v SPARK_JAVA_OPT_ | sed -n 's/^SPARK_JAVA_OPT_\([0-9][0-9]*\)$/\1 &/p' \
               | sort -n | cut -d' ' -f2 | tr '\n' '\0')
    cmd=("$JAVA" "${java_opts[@]}"
         "-Xms$SPARK_EXECUTOR_MEMORY" "-Xmx$SPARK_EXECUTOR_MEMORY"
         -cp "$(classpath)"
         org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend
         --driver-url "$SPARK_DRIVER_URL"
         --executor-id "$SPARK_EXECUTOR_ID"
         --cores "$SPARK_EXECUTOR_CORES"
         --app-id "$SPARK_APPLICATION_ID"
         --hostname "$SPARK_EXECUTOR_POD_IP"
         --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID"
         --podName "$SPARK_EXECUTOR_POD_NAME")
    ;;
  "")
    echo "entrypoint.sh: no command (expected driver, executor or a command to run)" >&2
    exit 2
    ;;
  *)
    cmd=("$@")
    ;;
esac

exec tini -s -- "${cmd[@]}"
