#!/usr/bin/env bash
# Set up acon-mm and its pinned OpenMMLab stack, idempotently.
#
#   bash tools/setup_env.sh            # creates/uses .venv/ at the repository root
#   ACON_MM_ACTIVE_ENV=1 bash tools/setup_env.sh   # install into the active env (conda users)
#
# The first run builds mmcv 2.1.0 with its ops from source (~9 min on 2 CPU cores;
# with CUDA ops when a CUDA toolkit and a CUDA torch are present). pip caches the
# built wheel, and a stamp file makes a second run take seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TORCH_SPEC="${ACON_MM_TORCH_SPEC:-torch==2.13.0}"
MMCV_SPEC="mmcv==2.1.0"
STACK=(
  "mmengine==0.10.7"
  "mmdet==3.3.0"
  "mmsegmentation==1.2.2"
  "ftfy" "regex" "pycocotools" "cityscapesscripts" "matplotlib"
  "pytest" "numpy<2" "scipy" "tensorboard"
  # mmengine's Config resolves `_base_ = 'mmdet::...'` with pkg_resources,
  # which setuptools >= 81 no longer ships; torch wants >= 77.
  "setuptools>=77.0.3,<81"
)

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [[ "${ACON_MM_ACTIVE_ENV:-0}" == "1" ]]; then
  PY="$(command -v python)"
  log "installing into the active environment: $PY"
else
  VENV="${ACON_MM_VENV:-$ROOT/.venv}"
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtual environment $VENV"
    python3 -m venv "$VENV"
  fi
  PY="$VENV/bin/python"
fi

# Everything that decides what gets installed goes into the stamp, so an edit re-runs set-up.
STAMP_KEY="$({ cat "$0"; cat pyproject.toml 2>/dev/null || true; } | sha256sum | cut -c1-16)"
STAMP="$("$PY" -c 'import sys;print(sys.prefix)')/.acon-mm-setup-$STAMP_KEY"
if [[ -f "$STAMP" ]] && "$PY" -c "import acon_mm, mmcv.ops, mmdet, mmseg" 2>/dev/null; then
  log "already set up ($STAMP); nothing to do"
  exit 0
fi

PIP=("$PY" -m pip --disable-pip-version-check)
log "upgrading pip and wheel"
"${PIP[@]}" install -q --upgrade "pip<25.3" wheel ninja packaging

log "installing $TORCH_SPEC"
"${PIP[@]}" install -q "$TORCH_SPEC"

if "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__=='2.1.0'" 2>/dev/null; then
  log "mmcv 2.1.0 with ops already installed"
else
  export MMCV_WITH_OPS=1
  export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  if "$PY" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() and torch.version.cuda else 1)" 2>/dev/null \
     && command -v nvcc >/dev/null 2>&1; then
    export FORCE_CUDA=1
    log "CUDA torch and nvcc found: building mmcv's CUDA ops too"
  else
    log "no CUDA: building mmcv's CPU ops"
  fi
  # mmcv 2.1.0's setup.py needs pkg_resources (setuptools<70), while torch 2.13 asks for
  # setuptools>=77: build with the old one, then restore what torch wants.
  log "pinning setuptools<70 for the mmcv build"
  "${PIP[@]}" install -q "setuptools<70"
  log "building $MMCV_SPEC from source (first time ~9 min on 2 cores; pip caches the wheel afterwards)"
  # Print a heartbeat with the number of compiled objects so a user watching the
  # long build sees it progress.
  ( start=$SECONDS
    while sleep 60; do
      n=$(find "${TMPDIR:-/tmp}" -path '*mmcv*' -name '*.o' 2>/dev/null | wc -l)
      log "  ... still building mmcv: $(( (SECONDS - start) / 60 )) min, $n objects compiled (~80 on CPU)"
    done ) &
  HB=$!
  trap 'kill $HB 2>/dev/null || true' EXIT
  "${PIP[@]}" install --no-build-isolation "$MMCV_SPEC"
  kill $HB 2>/dev/null || true
  trap - EXIT
  log "mmcv built and installed; restoring setuptools>=77 for torch"
  "${PIP[@]}" install -q "setuptools>=77.0.3,<81"
fi

log "installing the OpenMMLab stack and tools: ${STACK[*]}"
"${PIP[@]}" install -q "$TORCH_SPEC" "$MMCV_SPEC" "${STACK[@]}"

if [[ -f pyproject.toml ]]; then
  log "installing acon-mm (editable)"
  "${PIP[@]}" install -q --no-build-isolation --no-deps -e .
fi

log "checking imports"
"$PY" - <<'PYEOF'
import torch, mmengine, mmcv, mmdet, mmseg
import mmcv.ops  # noqa: F401  (compiled ops present)
print(f"torch {torch.__version__} (cuda={torch.cuda.is_available()}), mmengine {mmengine.__version__}, "
      f"mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}")
try:
    import acon_mm
    print(f"acon_mm {acon_mm.__version__}")
except ImportError:
    pass
PYEOF
touch "$STAMP"
log "done"
