#!/bin/sh
# dagster-daemon with the `gpu` concurrency pool sized to the cluster's GPUs (MATHDATA_GPUS,
# default 1): one GPU step per GPU at a time. Usage: entrypoint-daemon.sh WORKSPACE_YAML
set -eu
dagster instance concurrency set gpu "${MATHDATA_GPUS:-1}"
exec dagster-daemon run -w "$1"
