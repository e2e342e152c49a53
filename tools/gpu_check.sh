#!/usr/bin/env bash
# The prepared GPU check: run it on a bare CUDA machine with NO network (docs/installation.md).
#
#   bash tools/misc/prepare_gpu_wheels.sh work_dirs/gpu_wheels   # first, where there is network
#   bash tools/gpu_check.sh [--wheels DIR]                       # then, on the GPU machine
#   bash tools/gpu_check.sh --cpu-smoke                          # dry run of the logic on a CPU
#
# Stages (each under a timeout, inside a total budget, so the report is always written):
#   1. setup: a venv with --system-site-packages (the machine's torch, triton, numpy...), the
#      rest from the wheel folder (pip --no-index), mmcv 2.1.0 built with CUDA ops for the
#      visible GPU's arch only, MAX_JOBS=$(nproc)      [tools/setup_env.sh]
#   2. demo data at full size (tools/misc/make_demo_data.py), beside: pytest -m cuda over tests/
#   3. 30 AMP iterations each of the RetinaNet R50 and PSPNet R50 configs, meta-ACON and ReLU
#      (tools/misc/gpu_train_probe.py: s/iter, peak memory, finite losses)
#   4. the ACON benchmark: tools/analysis_tools/benchmark_acon.py --device cuda --json FILE
# Output: work_dirs/gpu_check/<date>/{report.json,gpu_check.log,...}, and report.json plus the
# log copied to $OUT when OUT is set. --cpu-smoke: no set-up (uses .venv or --python), small
# data, 2 CPU iterations, no AMP.
#
# Options:
#   --wheels DIR          the wheel folder (default work_dirs/gpu_wheels)
#   --cpu-smoke           the dry run on a CPU machine with a set-up .venv
#   --budget SECONDS      total time budget (default 530; --cpu-smoke 2400)
#   --iters N             iterations of each train probe (default 30; --cpu-smoke 2)
#   --cfg-options "K=V ..."  passed to every train probe as --cfg-options K=V ...
#                         (space-separated; repeatable)
#   --peak-gbs X          the GPU's peak memory bandwidth in GB/s for the benchmark
#                         (default: the published figure of a known GPU, else what the
#                         benchmark computes from the device properties)
#   --data-timeout S      seconds to wait for the demo data after the CUDA tests (default 150)
#   --python PATH         --cpu-smoke: the Python of the environment (default .venv/bin/python)
#   -h, --help            this text
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
T0=$SECONDS
MODE=gpu
WHEELS="$ROOT/work_dirs/gpu_wheels"
BUDGET="" ITERS="" PEAK_GBS="" DATA_TIMEOUT=150 CHECK_PYTHON=""
PROBE_CFG_OPTIONS=()
usage() { sed -n '2,/^set -uo pipefail/{/^set /d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "gpu_check.sh: $*" >&2; echo "usage: $0 [--wheels DIR] [--cpu-smoke] [--budget SECONDS] [--iters N] [--cfg-options \"K=V ...\"] [--peak-gbs X] [--data-timeout S] [--python PATH] (--help)" >&2; exit 2; }
# need OPTION VALUE NUMBER_RE: the option's value, checked against NUMBER_RE if given
need() {
  [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"
  [[ -z ${3:-} || $2 =~ $3 ]] || die "$1 $2: not a valid value"
}
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --cpu-smoke) MODE=cpu-smoke ;;
    --wheels) need "$1" "${2:-}"; WHEELS="$(cd "$2" && pwd)"; shift ;;
    --budget) need "$1" "${2:-}" '^[0-9]+$'; BUDGET="$2"; shift ;;
    --iters) need "$1" "${2:-}" '^[1-9][0-9]*$'; ITERS="$2"; shift ;;
    --cfg-options) need "$1" "${2:-}"; read -r -a _opts <<< "$2"; PROBE_CFG_OPTIONS+=("${_opts[@]}"); shift ;;
    --peak-gbs) need "$1" "${2:-}" '^[0-9]+([.][0-9]+)?$'; PEAK_GBS="$2"; shift ;;
    --data-timeout) need "$1" "${2:-}" '^[0-9]+$'; DATA_TIMEOUT="$2"; shift ;;
    --python) need "$1" "${2:-}"; CHECK_PYTHON="$2"; shift ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done
[[ $MODE == gpu && -n $CHECK_PYTHON ]] && die "--python is for --cpu-smoke (the GPU check sets up its own venv)"
if [[ $MODE == gpu ]]; then
  BUDGET="${BUDGET:-530}"; SUFFIX=""
else
  BUDGET="${BUDGET:-2400}"; SUFFIX="-$MODE"
fi
WORK="$ROOT/work_dirs/gpu_check/$(date +%Y%m%d-%H%M%S)$SUFFIX"
mkdir -p "$WORK"
LOG="$WORK/gpu_check.log"
STAGES="$WORK/stages.tsv"
: > "$STAGES"
exec > >(tee -a "$LOG") 2>&1
log() { printf '[gpu_check %s +%ds] %s\n' "$(date +%H:%M:%S)" $((SECONDS - T0)) "$*"; }

# Nothing may download: pip only from the wheel folder, no hub look-ups.
export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELS" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg

left() { echo $((BUDGET - (SECONDS - T0))); }
# stage NAME MAX_SECONDS CMD...: runs CMD under min(MAX, what is left of the budget)
stage() {
  local name="$1" max="$2"; shift 2
  local t rc start=$SECONDS
  t=$(left); (( t > max )) && t=$max
  if (( t < 10 )); then
    log "stage $name: skipped (budget of ${BUDGET}s spent)"
    printf '%s\t%s\t%s\t%s\n' "$name" skipped 0 "$t" >> "$STAGES"
    return 0
  fi
  log "stage $name (timeout ${t}s): $*"
  timeout --kill-after=10 "$t" "$@" > "$WORK/$name.log" 2>&1
  rc=$?
  tail -n 5 "$WORK/$name.log" | sed "s/^/    [$name] /"
  log "stage $name: exit $rc after $((SECONDS - start))s$([[ $rc == 124 || $rc == 137 ]] && echo ' (timed out)')"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" $((SECONDS - start)) "$t" >> "$STAGES"
  return 0
}

finish() {
  local py="${PY:-python3}"
  [[ -x "$py" ]] || py=python3
  "$py" - "$WORK" "$MODE" "$BUDGET" $((SECONDS - T0)) <<'PYEOF' || log "could not write the report"
import glob, json, os, re, subprocess, sys
work, mode, budget, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rep = dict(mode=mode, work_dir=work, budget_s=budget, total_s=total, stages={})
def read(name):
    p = os.path.join(work, name)
    return open(p, errors='replace').read() if os.path.exists(p) else ''
for line in read('stages.tsv').splitlines():
    name, rc, secs, limit = line.split('\t')
    rep['stages'][name] = dict(exit=int(rc) if rc.lstrip('-').isdigit() else rc, seconds=int(secs),
                               timeout_s=int(limit),
                               timed_out=rc in ('124', '137'))
setup = read('setup.log')
m = re.search(r'mmcv built: (\d+) objects in (\d+) s, wheel (\d+) bytes', setup)
if m:
    rep['mmcv_build'] = dict(objects=int(m[1]), seconds=int(m[2]), wheel_bytes=int(m[3]))
for pat, key in ((r'using the CUDA toolkit (\S+) \(nvcc ([\d.]+)', 'cuda_toolkit'),
                 (r"building for the visible GPUs' arch: (\S+)", 'arch'),
                 (r'ERROR: (.*)', 'setup_error')):
    m = re.search(pat, setup)
    if m:
        rep[key] = m.group(1) if key != 'cuda_toolkit' else dict(home=m[1], nvcc=m[2])
m = re.findall(r'^=+ (.*?) =+$', read('pytest.log'), re.M)
rep['pytest_summary'] = m[-1] if m else None
rep['probes'] = {}
for p in sorted(glob.glob(os.path.join(work, 'probe_*.json'))):
    d = json.load(open(p))
    if d.get('ok'):
        d.pop('traceback', None)
    rep['probes'][os.path.basename(p)[6:-5]] = d
bench = os.path.join(work, 'bench.json')
if os.path.exists(bench):
    try:
        rep['benchmark'] = json.load(open(bench))
    except ValueError as e:
        rep['benchmark'] = dict(error=f'bench.json unreadable: {e}')
elif 'bench' in rep['stages']:
    rep['benchmark'] = dict(error='no bench.json', log_tail=read('bench.log')[-1500:])
try:
    import torch
    rep['env'] = dict(torch=torch.__version__, torch_cuda=torch.version.cuda,
                      gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                      cpus=os.cpu_count())
    import mmcv
    from mmcv.ops import get_compiling_cuda_version
    rep['env'].update(mmcv=mmcv.__version__, mmcv_ops_cuda=get_compiling_cuda_version())
except Exception as e:  # noqa: BLE001
    rep.setdefault('env', {})['error'] = f'{type(e).__name__}: {e}'
try:
    rep['nvidia_smi'] = subprocess.run(
        ['nvidia-smi', '--query-gpu=name,driver_version,compute_cap,memory.total',
         '--format=csv,noheader'], capture_output=True, text=True, timeout=20).stdout.strip()
except Exception:  # noqa: BLE001
    pass
st = rep['stages']
rep['ok'] = bool(st.get('setup', {}).get('exit') == 0 and rep['probes']
                 and all(p.get('ok') for p in rep['probes'].values()))
with open(os.path.join(work, 'report.json'), 'w') as f:
    json.dump(rep, f, indent=2)
print(json.dumps({k: v for k, v in rep.items() if k != 'benchmark'}, indent=2))
PYEOF
  log "report: $WORK/report.json (log $LOG)"
  if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
    cp "$WORK/report.json" "$OUT/gpu_check_report.json" 2>/dev/null
    cp "$LOG" "$OUT/gpu_check.log" 2>/dev/null
    cp "$WORK/setup.log" "$OUT/gpu_check_setup.log" 2>/dev/null
    log "copied the report and logs to $OUT"
  fi
}
trap finish EXIT

log "mode $MODE, budget ${BUDGET}s, work dir $WORK"
command -v nvidia-smi >/dev/null && nvidia-smi -L
if [[ $MODE == gpu ]]; then
  [[ -d "$WHEELS" ]] || { log "ERROR: no wheel folder $WHEELS (tools/misc/prepare_gpu_wheels.sh)"; exit 1; }
  # 1. set-up: everything but torch from the folder; mmcv CUDA ops for the visible arch.
  # ACON_MM_NVCC=system: the machine's toolkit even if its minor release differs from torch's
  # (offline, PyPI's compiler cannot be fetched).
  export ACON_MM_VENV="$WORK/venv" ACON_MM_VENV_SYSTEM_SITE=1 ACON_MM_CUDA_OPS=1
  export ACON_MM_NVCC="${ACON_MM_NVCC:-system}"
  export ACON_MM_WHEEL_CACHE="$WORK/wheel-cache" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  unset ACON_MM_ACTIVE_ENV ACON_MM_TORCH_SPEC
  stage setup 420 bash tools/setup_env.sh
  PY="$WORK/venv/bin/python"
  DEVICE=cuda
  ITERS="${ITERS:-30}"
  PROBE_ARGS=(--amp)
  DATA_ARGS=(--coco-size 800 1333 --coco-train 16 --coco-val 1
             --cityscapes-size 1024 2048 --cityscapes-train 8 --cityscapes-val 1)
  PROBE_MAX=75 BENCH_DEVICE=cuda
else
  PY="${CHECK_PYTHON:-$ROOT/.venv/bin/python}"
  log "cpu smoke: no set-up; using $PY"
  DEVICE=cpu
  ITERS="${ITERS:-2}"
  PROBE_ARGS=(--num-workers 0)
  DATA_ARGS=(--coco-train 4 --coco-val 1 --cityscapes-train 4 --cityscapes-val 1)
  PROBE_MAX=400 BENCH_DEVICE=cpu
fi
if ! "$PY" -c 'import torch, mmcv.ops, mmdet, mmseg, acon_mm' 2>/dev/null; then
  log "ERROR: the environment $PY does not import torch, mmcv.ops, mmdet, mmseg, acon_mm (set-up log: $WORK/setup.log)"
  exit 1
fi
"$PY" -c 'import torch, mmcv; from mmcv.ops import get_compiling_cuda_version as v
print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.is_available(), "| mmcv", mmcv.__version__, "CUDA ops", v())'

# 2. demo data (CPU) beside the CUDA tests (GPU)
DATA="$WORK/data"
"$PY" tools/misc/make_demo_data.py --out-dir "$DATA" "${DATA_ARGS[@]}" > "$WORK/data.log" 2>&1 &
DATA_PID=$!
stage pytest 75 "$PY" -m pytest -m cuda tests -q -p no:cacheprovider \
  --junitxml="$WORK/pytest.xml"
for _ in $(seq 1 "$DATA_TIMEOUT"); do kill -0 $DATA_PID 2>/dev/null || break; sleep 1; done
kill $DATA_PID 2>/dev/null && log "demo data: timed out"
wait $DATA_PID; log "demo data: exit $? ($(tail -n 2 "$WORK/data.log" | tr '\n' ' '))"

# 3. short AMP trains of the full-size configs
for cfg in configs/retinanet/retinanet_r50-metaacon_fpn_1x_coco.py \
           configs/retinanet/retinanet_r50-relu_fpn_1x_coco.py \
           configs/pspnet/pspnet_r50-d8-metaacon_4xb2-80k_cityscapes-512x1024.py \
           configs/pspnet/pspnet_r50-d8-relu_4xb2-80k_cityscapes-512x1024.py; do
  name="$(basename "$cfg" .py)"
  sub=coco; [[ $cfg == configs/pspnet/* ]] && sub=cityscapes
  stage "probe_$name" "$PROBE_MAX" "$PY" tools/misc/gpu_train_probe.py "$cfg" \
    --data-root "$DATA/$sub" --iters "$ITERS" --device "$DEVICE" ${PROBE_ARGS[@]+"${PROBE_ARGS[@]}"} \
    --work-dir "$WORK/probe/$name" --json "$WORK/probe_$name.json" \
    ${PROBE_CFG_OPTIONS[@]+--cfg-options "${PROBE_CFG_OPTIONS[@]}"}
done

# 4. the ACON benchmark (its flags are the benchmark's; a failure is recorded, not fatal)
if [[ -f tools/analysis_tools/benchmark_acon.py ]]; then
  # the GPU's peak memory bandwidth (GB/s) for the benchmark's "% of bandwidth": --peak-gbs,
  # else the published figure where known, else what the benchmark computes from the
  # memory clock
  if [[ -z $PEAK_GBS ]] && command -v nvidia-smi >/dev/null 2>&1; then
    case "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)" in
      *H200*) PEAK_GBS=4800 ;; *H100*SXM*|*H100\ 80GB\ HBM3*) PEAK_GBS=3350 ;;
      *A100*80GB*) PEAK_GBS=2039 ;; *A100*) PEAK_GBS=1555 ;;
    esac
  fi
  stage bench 90 "$PY" tools/analysis_tools/benchmark_acon.py --device "$BENCH_DEVICE" \
    --json "$WORK/bench.json" ${PEAK_GBS:+--peak-gbs "$PEAK_GBS"}
else
  log "stage bench: tools/analysis_tools/benchmark_acon.py is missing"
  printf 'bench\tmissing\t0\t0\n' >> "$STAGES"
fi
log "done in $((SECONDS - T0))s"
