#!/usr/bin/env bash
# Compile proof of the CUDA set-up on a machine WITHOUT a GPU and without a system CUDA toolkit:
# runs tools/setup_env.sh in its CUDA flavour into a separate venv, with PyPI's nvcc
# (ACON_MM_NVCC=pip: any system toolkit is ignored), and writes a JSON summary.
#
#   bash tools/misc/cuda_build_proof.sh                    # full proof (35-60 min on 2 cores)
#   bash tools/misc/cuda_build_proof.sh --check-toolchain  # only torch + nvcc + a tiny sm_90 kernel
#   bash tools/misc/cuda_build_proof.sh --fresh            # remove the proof's venv and wheel first
#   bash tools/misc/cuda_build_proof.sh --out DIR          # write into DIR instead
#
# Output: work_dirs/cuda_proof/{report.json,setup.log} (--out DIR to change).
# Switches: TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS (default 2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODE=full
OUTDIR="$ROOT/work_dirs/cuda_proof"
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -euo pipefail/{/^set /d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    --check-toolchain) MODE=check-toolchain ;;
    --fresh) FRESH=1 ;;
    --out)
      [[ -n "${2:-}" ]] || { echo "--out needs a folder" >&2; exit 2; }
      OUTDIR="$(mkdir -p "$2" && cd "$2" && pwd)"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
cd "$ROOT"   # after the options: a relative --out is relative to where it was called
[[ "${FRESH:-0}" == 1 ]] && rm -rf "$OUTDIR/venv" "$OUTDIR/wheels"
mkdir -p "$OUTDIR"
export ACON_MM_VENV="$OUTDIR/venv" ACON_MM_CUDA_OPS=1 ACON_MM_NVCC=pip
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-2}"
export ACON_MM_WHEEL_CACHE="$OUTDIR/wheels"   # a build of its own, whose size we measure
unset ACON_MM_ACTIVE_ENV ACON_MM_VENV_SYSTEM_SITE CUDA_HOME CUDA_PATH
# No system toolkit on PATH either (ACON_MM_NVCC=pip ignores it anyway).
PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -v -i cuda | paste -sd:)"
LOG="$OUTDIR/setup${MODE/full/}.log"; [[ $MODE == full ]] || LOG="$OUTDIR/check-toolchain.log"
echo "[proof $(date +%H:%M:%S)] $MODE: ACON_MM_VENV=$ACON_MM_VENV ACON_MM_CUDA_OPS=1 ACON_MM_NVCC=pip TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS; log $LOG"
start=$SECONDS
set +e
if [[ $MODE == full ]]; then
  bash tools/setup_env.sh 2>&1 | tee "$LOG"
else
  bash tools/setup_env.sh --check-toolchain 2>&1 | tee "$LOG"
fi
rc=${PIPESTATUS[0]}
set -e
secs=$((SECONDS - start))
echo "[proof $(date +%H:%M:%S)] set-up exited with $rc after $secs s"
[[ $MODE == full ]] || exit "$rc"

PY="$ACON_MM_VENV/bin/python"
"$PY" - "$OUTDIR/report.json" "$LOG" "$rc" "$secs" <<'PYEOF' || true
import json, os, platform, re, subprocess, sys
out, log, rc, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
text = open(log, errors='replace').read()
rep = dict(setup_exit_code=rc, setup_seconds=secs, log=log, host=platform.node(),
           cpu_count=os.cpu_count(), max_jobs=os.environ.get('MAX_JOBS'),
           torch_cuda_arch_list=os.environ.get('TORCH_CUDA_ARCH_LIST'), nvcc_mode='pip')
m = re.search(r'mmcv built: (\d+) objects in (\d+) s, wheel (\d+) bytes: (\S+)', text)
if m:
    rep.update(mmcv_objects=int(m[1]), mmcv_build_seconds=int(m[2]),
               mmcv_wheel_bytes=int(m[3]), mmcv_wheel=os.path.basename(m[4]))
m = re.search(r'CUDA_HOME assembled in (\S+)', text)
home = m[1] if m else None
rep['cuda_home'] = home
if home:
    v = subprocess.run([os.path.join(home, 'bin', 'nvcc'), '--version'],
                       capture_output=True, text=True).stdout
    m = re.search(r'release ([\d.]+), V([\d.]+)', v)
    rep['nvcc'] = m[2] if m else v.strip()[-80:]
try:
    import torch
    rep.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
               gpu_visible=torch.cuda.is_available())
    import mmcv
    from mmcv.ops import get_compiling_cuda_version, get_compiler_version
    rep.update(mmcv=mmcv.__version__, mmcv_compiling_cuda=get_compiling_cuda_version(),
               mmcv_compiler=get_compiler_version())
    import mmdet, mmseg, mmpretrain, torchvision
    rep.update(mmdet=mmdet.__version__, mmseg=mmseg.__version__,
               mmpretrain=mmpretrain.__version__, torchvision=torchvision.__version__)
    rep['imports_ok'] = True
except Exception as e:  # noqa: BLE001
    rep['error'] = f'{type(e).__name__}: {e}'
    rep['imports_ok'] = False
rep['proof_ok'] = bool(rc == 0 and rep.get('imports_ok')
                       and rep.get('mmcv_compiling_cuda') not in (None, 'not available'))
json.dump(rep, open(out, 'w'), indent=2)
print(json.dumps(rep, indent=2))
PYEOF
echo "[proof $(date +%H:%M:%S)] report: $OUTDIR/report.json"
exit "$rc"
