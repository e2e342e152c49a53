#!/usr/bin/env bash
# Training on a Slurm cluster, for detection and segmentation configs.
#
#   [GPUS=8] bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options...]
#
# Environment: GPUS (total, 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5),
# SRUN_ARGS (extra srun arguments), PYTHON (the repository's .venv/bin/python if
# present, else python).
# A CPU partition: GPUS_PER_NODE=0. Then GPUS is the number of tasks (processes),
# TASKS_PER_NODE (default GPUS) how many share a node, no --gres is requested and
# the run uses the gloo backend (--cpu is passed on), with the rank / world size /
# master address wiring of mmengine's Slurm launcher.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py options...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
if [ "${GPUS_PER_NODE}" = 0 ]; then
    DEVICE_ARGS=()
    PER_NODE=${TASKS_PER_NODE:-$GPUS}
    CPU_FLAG=(--cpu)
else
    DEVICE_ARGS=(--gres=gpu:"${GPUS_PER_NODE}")
    PER_NODE=${GPUS_PER_NODE}
    CPU_FLAG=()
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ] && [ -z "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]; then
        PYTHON="$ROOT/.venv/bin/python"
    else
        PYTHON=python
    fi
fi

# shellcheck disable=SC2086
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    ${DEVICE_ARGS[@]+"${DEVICE_ARGS[@]}"} \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$ROOT/tools/train.py" "${CONFIG}" --work-dir="${WORK_DIR}" \
    --launcher="slurm" ${CPU_FLAG[@]+"${CPU_FLAG[@]}"} "${@:5}"
