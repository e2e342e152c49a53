#!/usr/bin/env bash
# Set up acon-mm and its pinned OpenMMLab stack, idempotently (docs/installation.md).
#
#   bash tools/setup_env.sh                    # creates/uses .venv/ at the repository root
#   bash tools/setup_env.sh --check-toolchain  # only torch + a CUDA compiler; compiles a tiny
#                                              # .cu file for $TORCH_CUDA_ARCH_LIST, then stops
# Switches (environment):
#   ACON_MM_ACTIVE_ENV=1         install into the active env (conda, cluster module); use its torch
#   ACON_MM_VENV=DIR             the venv to create/use (default .venv)
#   ACON_MM_VENV_SYSTEM_SITE=1   create it with --system-site-packages (use the machine's torch)
#   ACON_MM_PYTHON=python3       the interpreter that creates the venv
#   ACON_MM_TORCH_SPEC=...       torch to install (default torch==2.13.0 from PyPI: CUDA 13.0, runs on CPU)
#   ACON_MM_TORCHVISION_SPEC=... torchvision to install (default: the one matching torch)
#   ACON_MM_CUDA_OPS=auto|1|0    mmcv's CUDA ops (auto: when a GPU is visible)
#   ACON_MM_NVCC=auto|system|pip their compiler (auto: a system nvcc of torch's CUDA release, else PyPI's)
#   TORCH_CUDA_ARCH_LIST         GPU archs (default: the visible GPUs'; without a GPU "8.0;9.0+PTX")
#   MAX_JOBS                     parallel compile jobs (default: nproc)
#   ACON_MM_WHEEL_CACHE=DIR      where built mmcv wheels are kept, one folder per flavour
# The first run builds mmcv 2.1.0 from source (CPU ops ~10 min on 2 cores; CUDA ops much longer),
# and a stamp file makes a second run take seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SELF="$ROOT/tools/setup_env.sh"

# PyPI's builds (CUDA 13.0; they run without a GPU too). "===" matches the version string
# exactly, so pip never takes a local "2.13.0+cpu" wheel that a find-links folder may hold.
DEFAULT_TORCH_VERSION="2.13.0"
DEFAULT_TORCHVISION="torchvision===0.28.0"
LOGIN_NODE_ARCHS="8.0;9.0+PTX"           # A100, H100/H200; PTX lets newer GPUs JIT it
MMCV_VERSION="2.1.0"
STACK=(
  "mmengine==0.10.7"
  "mmdet==3.3.0"
  "mmsegmentation==1.2.2"
  "mmpretrain==1.2.0"
  "ftfy" "regex" "pycocotools" "cityscapesscripts" "matplotlib"
  "pytest" "pytest-timeout>=2.1"
  # lint: `make lint` (CI, .ci/run) runs `python -m ruff check .` (pinned: rules can change
  # between ruff releases); pre-commit runs the same check as a git hook (.pre-commit-config.yaml)
  "ruff==0.16.9" "pre-commit"
  "numpy<2" "scipy" "tensorboard"
  # export (tools/deployment/pytorch2onnx.py and its test): torch.onnx's dynamo exporter
  # needs onnx + onnxscript; onnxruntime checks the exported graph's outputs
  "onnx" "onnxscript" "onnxruntime"
  # mmengine's Config resolves `_base_ = 'mmdet::...'` with pkg_resources,
  # which setuptools >= 81 no longer ships; torch wants >= 77.
  "setuptools>=77.0.3,<81"
)

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

CHECK_TOOLCHAIN=0
case "${1:-}" in
  --check-toolchain) CHECK_TOOLCHAIN=1 ;;
  "") ;;
  *) die "unknown argument $1 (only --check-toolchain)" ;;
esac
CUDA_OPS="${ACON_MM_CUDA_OPS:-auto}"
NVCC_MODE="${ACON_MM_NVCC:-auto}"
[[ $CHECK_TOOLCHAIN == 1 ]] && CUDA_OPS=1
[[ $CUDA_OPS =~ ^(auto|0|1)$ ]] || die "ACON_MM_CUDA_OPS must be auto, 0 or 1 (got $CUDA_OPS)"
[[ $NVCC_MODE =~ ^(auto|system|pip)$ ]] || die "ACON_MM_NVCC must be auto, system or pip (got $NVCC_MODE)"

gpu_visible() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; }

# --- the Python environment ---------------------------------------------------------------
setup_python() {
  OWN_TORCH=0   # 1: torch belongs to this project's venv, which pins it
  if [[ "${ACON_MM_ACTIVE_ENV:-0}" == "1" ]]; then
    PY="$(command -v python)"
    log "installing into the active environment: $PY"
    return
  fi
  local venv="${ACON_MM_VENV:-$ROOT/.venv}" base="${ACON_MM_PYTHON:-python3}" args=()
  [[ "${ACON_MM_VENV_SYSTEM_SITE:-0}" == "1" ]] && args=(--system-site-packages)
  if [[ ! -x "$venv/bin/python" ]]; then
    log "creating virtual environment $venv ${args[*]+${args[*]}}"
    if ! "$base" -m venv ${args[@]+"${args[@]}"} "$venv"; then
      # e.g. a Debian python without ensurepip: with the system's packages visible, the
      # base environment's pip serves the venv (it installs into the running interpreter).
      [[ ${#args[@]} -gt 0 ]] || die "could not create $venv with $base"
      log "retrying without pip in the venv (the base environment's pip will serve it)"
      rm -rf "$venv"; "$base" -m venv --without-pip "${args[@]}" "$venv"
    fi
    if [[ ${#args[@]} -gt 0 ]]; then
      # A venv made from a venv's python sees the base interpreter's packages, not that
      # venv's (where e.g. a machine's torch lives): add those with a .pth file.
      "$base" - "$venv" <<'PYEOF'
import glob, os, sys, sysconfig
if sys.prefix != sys.base_prefix:
    paths = sorted({sysconfig.get_paths()[k] for k in ('purelib', 'platlib')})
    site = glob.glob(os.path.join(sys.argv[1], 'lib', 'python*', 'site-packages'))[0]
    with open(os.path.join(site, '_acon_mm_parent_env.pth'), 'w') as f:
        f.write('\n'.join(paths) + '\n')
    print('[setup] the venv also sees ' + ', '.join(paths))
PYEOF
    fi
  fi
  PY="$venv/bin/python"
  grep -qi '^include-system-site-packages *= *true' "$venv/pyvenv.cfg" || OWN_TORCH=1
}

setup_python
PIP=("$PY" -m pip --disable-pip-version-check)
PREFIX="$("$PY" -c 'import sys; print(sys.prefix)')"

# Everything that decides what gets installed goes into the stamp, so an edit re-runs set-up.
FLAVOUR_SWITCHES="cuda_ops=$CUDA_OPS nvcc=$NVCC_MODE arch=${TORCH_CUDA_ARCH_LIST:-} torch=${ACON_MM_TORCH_SPEC:-} tv=${ACON_MM_TORCHVISION_SPEC:-} gpu=$(gpu_visible && echo 1 || echo 0)"
STAMP_KEY="$({ cat "$SELF"; cat pyproject.toml 2>/dev/null || true; echo "$FLAVOUR_SWITCHES"; } | sha256sum | cut -c1-16)"
STAMP="$PREFIX/.acon-mm-setup-$STAMP_KEY"
if [[ $CHECK_TOOLCHAIN == 0 && -f "$STAMP" ]] &&
   "$PY" -c "import acon_mm, mmcv.ops, mmdet, mmseg, mmpretrain, torchvision" 2>/dev/null; then
  log "already set up ($STAMP); nothing to do"
  exit 0
fi

# --- torch and torchvision ----------------------------------------------------------------
torch_desc() { "$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda or "none")' 2>/dev/null || true; }
dist_version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true; }
tv_works() {
  "$PY" - 2>/dev/null <<'PYEOF'
import torch, torchvision
from torchvision.ops import nms
keep = nms(torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]),
           torch.tensor([.9, .8, .7]), 0.5)
assert keep.tolist() == [0, 2], keep
PYEOF
}

ensure_torch() {
  local have; have="$(torch_desc)"
  if [[ -n "${ACON_MM_TORCH_SPEC:-}" ]]; then
    log "installing $ACON_MM_TORCH_SPEC (ACON_MM_TORCH_SPEC)"
    "${PIP[@]}" install -q "$ACON_MM_TORCH_SPEC"
  elif [[ -n "$have" && ( $OWN_TORCH == 0 || ( "$have" == "$DEFAULT_TORCH_VERSION"* && "$have" != *"CUDA none" ) ) ]]; then
    log "using the installed torch $have"
  else
    if [[ -n "$have" ]]; then
      log "replacing torch $have by PyPI's torch $DEFAULT_TORCH_VERSION (the CUDA build, which also runs on CPU)"
      "${PIP[@]}" uninstall -q -y torch torchvision
    fi
    log "installing torch===$DEFAULT_TORCH_VERSION and $DEFAULT_TORCHVISION from PyPI"
    "${PIP[@]}" install -q "torch===$DEFAULT_TORCH_VERSION" "$DEFAULT_TORCHVISION"
    [[ "$(torch_desc)" != *"CUDA none" ]] ||
      die "pip installed a CPU-only torch ($(torch_desc)) for torch===$DEFAULT_TORCH_VERSION: a find-links folder or index holds one; remove it or set ACON_MM_TORCH_SPEC"
  fi
  [[ -n "$(torch_desc)" ]] || die "torch does not import in $PY"
  # pins torch in later pip calls, unless pip does not know it (e.g. some conda builds)
  TORCH_VERSION="$(dist_version torch)"; TORCH_PIN=("torch==$TORCH_VERSION")
  if [[ -z "$TORCH_VERSION" ]]; then
    TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"; TORCH_PIN=()
  fi
  TORCH_CUDA="$("$PY" -c 'import torch; print(torch.version.cuda or "")')"
}

ensure_torchvision() {
  if tv_works; then
    log "torchvision $(dist_version torchvision) works with torch $TORCH_VERSION"
    return
  fi
  local spec="${ACON_MM_TORCHVISION_SPEC:-}"
  if [[ -z "$spec" ]]; then   # torch 2.N pairs with torchvision 0.(N+15)
    local minor; minor="$(echo "$TORCH_VERSION" | cut -d. -f2)"
    spec="torchvision==0.$((minor + 15)).*"
    [[ "$TORCH_VERSION" == "$DEFAULT_TORCH_VERSION" ]] && spec="$DEFAULT_TORCHVISION"
  fi
  log "installing $spec to match torch $TORCH_VERSION"
  "${PIP[@]}" install -q "$spec" ${TORCH_PIN[@]+"${TORCH_PIN[@]}"}
  tv_works || die "torchvision $(dist_version torchvision) does not work beside torch $(torch_desc) (torchvision.ops.nms fails; a CPU-only torch needs its own torchvision build, e.g. from download.pytorch.org/whl/cpu): set ACON_MM_TORCHVISION_SPEC or ACON_MM_TORCH_SPEC to a matched pair"
}

# --- CUDA compiler --------------------------------------------------------------------------
nvcc_release() { "$1" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p'; }

find_system_nvcc() {   # $1: wanted release ("" = any); prints the toolkit's root
  local c home
  for c in "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" "/usr/local/cuda-$1/bin/nvcc" \
           "$(command -v nvcc 2>/dev/null || true)" /usr/local/cuda/bin/nvcc; do
    [[ -n "$c" && -x "$c" ]] || continue
    home="$(cd "$(dirname "$(readlink -f "$c")")/.." && pwd)"
    [[ -f "$home/include/cuda_runtime.h" ]] || continue   # a wrapper script, not a toolkit
    if [[ -z "$1" || "$(nvcc_release "$home/bin/nvcc")" == "$1" ]]; then echo "$home"; return 0; fi
  done
  return 1
}

install_pip_nvcc() {   # PyPI's compiler for torch's CUDA release, assembled into a CUDA_HOME
  local major="${TORCH_CUDA%%.*}" sfx="" pkgs
  (( major < 13 )) && sfx="-cu$major"
  pkgs=("nvidia-cuda-nvcc$sfx==$TORCH_CUDA.*" "nvidia-cuda-cccl$sfx==$TORCH_CUDA.*"
        "nvidia-cuda-runtime$sfx==$TORCH_CUDA.*")
  (( major >= 13 )) && pkgs+=("nvidia-cuda-crt==$TORCH_CUDA.*" "nvidia-nvvm==$TORCH_CUDA.*")
  log "installing the CUDA $TORCH_CUDA compiler from PyPI: ${pkgs[*]}"
  "${PIP[@]}" install -q "${pkgs[@]}" ${TORCH_PIN[@]+"${TORCH_PIN[@]}"}
  CUDA_HOME="$PREFIX/cuda-home"
  "$PY" - "$CUDA_HOME" <<'PYEOF' || die "could not assemble CUDA_HOME from PyPI's nvidia packages"
# pip's nvidia packages are no toolkit: link bin, include, nvvm and a lib64 with an
# unversioned libcudart.so into one folder, as torch.utils.cpp_extension expects.
import glob, os, shutil, sys
import nvidia
home = sys.argv[1]
roots = list(nvidia.__path__)
def find(pattern):
    return sorted({p for r in roots for p in glob.glob(os.path.join(r, pattern), recursive=True)})
nvcc = [p for p in find('**/bin/nvcc') if os.access(p, os.X_OK)]
assert nvcc, 'no nvcc in ' + str(roots)
shutil.rmtree(home, ignore_errors=True)
os.makedirs(os.path.join(home, 'include'))
os.makedirs(os.path.join(home, 'lib64'))
top = os.path.dirname(os.path.dirname(nvcc[0]))
os.symlink(os.path.dirname(nvcc[0]), os.path.join(home, 'bin'))
nvvm = find('**/nvvm/libdevice')
if nvvm:
    os.symlink(os.path.dirname(nvvm[0]), os.path.join(home, 'nvvm'))
incs = [os.path.join(top, 'include')] + [os.path.dirname(p) for p in find('**/include/cuda_runtime.h')] \
    + [os.path.dirname(os.path.dirname(p)) for p in find('**/include/cub/cub.cuh')] \
    + [os.path.dirname(os.path.dirname(p)) for p in find('**/include/crt/host_config.h')]
for inc in incs:   # merged; the first one that has a name wins
    for name in (os.listdir(inc) if os.path.isdir(inc) else []):
        dst = os.path.join(home, 'include', name)
        if not os.path.lexists(dst):
            os.symlink(os.path.join(inc, name), dst)
cudart = find('**/lib*/libcudart.so*')
assert cudart, 'no libcudart.so* (nvidia-cuda-runtime) in ' + str(roots)
for lib in {os.path.dirname(p) for p in cudart}:
    for name in os.listdir(lib):
        dst = os.path.join(home, 'lib64', name)
        if not os.path.lexists(dst):
            os.symlink(os.path.join(lib, name), dst)
if not os.path.lexists(os.path.join(home, 'lib64', 'libcudart.so')):
    os.symlink(cudart[0], os.path.join(home, 'lib64', 'libcudart.so'))
print('[setup] CUDA_HOME assembled in', home, 'from', top)
PYEOF
}

setup_cuda_toolchain() {
  [[ -n "$TORCH_CUDA" ]] ||
    die "CUDA ops requested but torch $(torch_desc) is a CPU-only build: install a CUDA torch (ACON_MM_TORCH_SPEC) or set ACON_MM_CUDA_OPS=0"
  local home=""
  case "$NVCC_MODE" in
    auto)   home="$(find_system_nvcc "$TORCH_CUDA")" || home="" ;;
    system) home="$(find_system_nvcc "")" || die "ACON_MM_NVCC=system but no CUDA toolkit found (CUDA_HOME, PATH, /usr/local/cuda)" ;;
    pip)    log "ACON_MM_NVCC=pip: ignoring any system CUDA toolkit" ;;
  esac
  if [[ -n "$home" ]]; then
    CUDA_HOME="$home"
    log "using the CUDA toolkit $home (nvcc $(nvcc_release "$home/bin/nvcc"), torch's CUDA $TORCH_CUDA)"
  else
    [[ "$NVCC_MODE" == auto ]] && log "no nvcc of CUDA $TORCH_CUDA found (CUDA_HOME, PATH, /usr/local/cuda-$TORCH_CUDA)"
    install_pip_nvcc
  fi
  export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
  NVCC_RELEASE="$(nvcc_release "$CUDA_HOME/bin/nvcc")"
  [[ -n "$NVCC_RELEASE" ]] || die "$CUDA_HOME/bin/nvcc does not run"
  if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
    TORCH_CUDA_ARCH_LIST="$("$PY" -c 'import torch; print(";".join(sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})))' 2>/dev/null || true)"
    [[ -n "$TORCH_CUDA_ARCH_LIST" ]] || TORCH_CUDA_ARCH_LIST="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | sort -u | paste -sd';' || true)"
    if [[ -n "$TORCH_CUDA_ARCH_LIST" ]]; then
      log "building for the visible GPUs' arch: $TORCH_CUDA_ARCH_LIST"
    else
      TORCH_CUDA_ARCH_LIST="$LOGIN_NODE_ARCHS"
      log "no GPU visible: building for $TORCH_CUDA_ARCH_LIST (A100, H100/H200, newer GPUs through PTX); set TORCH_CUDA_ARCH_LIST to change"
    fi
  else
    log "building for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
  fi
  export TORCH_CUDA_ARCH_LIST
}

check_toolchain() {   # a tiny kernel through the chosen nvcc, for each arch of the list
  local dir; dir="$(mktemp -d)"
  cat > "$dir/probe.cu" <<'CUEOF'
#include <cuda_runtime.h>
#include <cub/block/block_reduce.cuh>
__global__ void probe(const float* x, float* out) {
  using R = cub::BlockReduce<float, 128>;
  __shared__ typename R::TempStorage tmp;
  float s = R(tmp).Sum(x[threadIdx.x]);
  if (threadIdx.x == 0) *out = s;
}
CUEOF
  local a flags=()
  for a in ${TORCH_CUDA_ARCH_LIST//;/ }; do
    local n="${a%+PTX}"; n="${n//./}"
    flags+=("-gencode=arch=compute_$n,code=sm_$n")
    [[ "$a" == *+PTX ]] && flags+=("-gencode=arch=compute_$n,code=compute_$n")
  done
  "$CUDA_HOME/bin/nvcc" "${flags[@]}" -c "$dir/probe.cu" -o "$dir/probe.o" ||
    die "nvcc $NVCC_RELEASE ($CUDA_HOME) could not compile a tiny kernel for $TORCH_CUDA_ARCH_LIST"
  log "toolchain OK: nvcc $NVCC_RELEASE in CUDA_HOME=$CUDA_HOME compiled a kernel for ${TORCH_CUDA_ARCH_LIST} ($(stat -c %s "$dir/probe.o") bytes)"
  rm -rf "$dir"
}

# --- mmcv -------------------------------------------------------------------------------
mmcv_ops_cuda() {   # prints mmcv's compiling CUDA version ("not available" for CPU ops); fails if no ops
  "$PY" -c "import mmcv; assert mmcv.__version__ == '$MMCV_VERSION'
from mmcv.ops import get_compiling_cuda_version as v; print(v())" 2>/dev/null | tail -1
}

ensure_mmcv() {
  local have marker="$PREFIX/.acon-mm-mmcv" built_with
  have="$(mmcv_ops_cuda || true)"
  built_with="$(cat "$marker" 2>/dev/null || true)"
  if [[ -n "$have" && ( -z "$built_with" || "$built_with" == "torch $TORCH_VERSION "* ) ]]; then
    if [[ $WANT_CUDA == 0 || ( "$have" != "not available" && "${have%%.*}" == "${TORCH_CUDA%%.*}" ) ]]; then
      log "mmcv $MMCV_VERSION with ops already installed (CUDA ops: $have)"
      return
    fi
    log "mmcv $MMCV_VERSION is installed with CPU ops only, but CUDA ops are wanted: rebuilding it"
  elif [[ -n "$built_with" && -n "$have" ]]; then
    log "mmcv was built for another torch ($built_with): rebuilding it for torch $TORCH_VERSION"
  fi
  build_mmcv
  echo "torch $TORCH_VERSION ops $MMCV_FLAVOUR" > "$marker"
}

build_mmcv() {
  local pyver patches=() patch_hash key cache src whl start
  pyver="$("$PY" -c 'import sys; print("%d%d" % sys.version_info[:2])')"
  shopt -s nullglob; patches=("$ROOT"/tools/patches/mmcv-$MMCV_VERSION/*.patch); shopt -u nullglob
  patch_hash="$(cat /dev/null ${patches[@]+"${patches[@]}"} | sha256sum | cut -c1-8)"
  export MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  if [[ $WANT_CUDA == 1 ]]; then
    export FORCE_CUDA=1
    MMCV_FLAVOUR="cuda$TORCH_CUDA-arch${TORCH_CUDA_ARCH_LIST//[;. +]/_}"
  else
    # mmcv builds CUDA ops whenever torch sees a GPU: hide it for a CPU-ops build.
    export FORCE_CUDA=0 CUDA_VISIBLE_DEVICES=""
    MMCV_FLAVOUR="cpu"
  fi
  # A wheel cache of our own, one folder per flavour: pip's cache would hand a
  # CPU-ops wheel to a CUDA build (same name and version).
  key="mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$MMCV_FLAVOUR-cp$pyver-p$patch_hash"
  cache="${ACON_MM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/acon-mm/wheels}/$key"
  whl="$(ls "$cache"/mmcv-*.whl 2>/dev/null | head -1 || true)"
  # mmcv 2.1.0's setup.py needs pkg_resources (setuptools<70), while torch asks for
  # setuptools>=77: build with the old one, then restore what torch wants.
  log "pinning setuptools<70 for the mmcv build"
  "${PIP[@]}" install -q "setuptools<70"
  if [[ -n "$whl" ]]; then
    log "reusing the mmcv wheel built before for this flavour: $whl"
  else
    src="$PREFIX/.acon-mm-build"
    rm -rf "$src"; mkdir -p "$src"
    "${PIP[@]}" download -q --no-deps --no-binary=:all: --no-build-isolation -d "$src" "mmcv==$MMCV_VERSION"
    tar xzf "$src"/mmcv-$MMCV_VERSION.tar.gz -C "$src"
    src="$src/mmcv-$MMCV_VERSION"
    local p
    for p in ${patches[@]+"${patches[@]}"}; do
      log "applying $(basename "$p")"; patch -p1 -d "$src" < "$p"
    done
    log "building mmcv $MMCV_VERSION ($MMCV_FLAVOUR ops, MAX_JOBS=$MAX_JOBS) from source; CPU ops take ~10 min on 2 cores, CUDA ops much longer"
    ( s=$SECONDS
      while sleep 60; do
        log "  ... still building mmcv: $(( (SECONDS - s) / 60 )) min, $(find "$src" -name '*.o' 2>/dev/null | wc -l) objects compiled"
      done ) &
    local hb=$!
    trap "kill $hb 2>/dev/null || true" EXIT
    start=$SECONDS
    mkdir -p "$cache"
    "${PIP[@]}" wheel -q --no-build-isolation --no-deps --no-cache-dir -w "$cache.tmp" "$src"
    kill $hb 2>/dev/null || true
    trap - EXIT
    mv "$cache.tmp"/mmcv-*.whl "$cache"/ && rmdir "$cache.tmp"
    whl="$(ls "$cache"/mmcv-*.whl | head -1)"
    log "mmcv built: $(find "$src" -name '*.o' | wc -l) objects in $((SECONDS - start)) s, wheel $(stat -c %s "$whl") bytes: $whl"
    rm -rf "$PREFIX/.acon-mm-build"
  fi
  "${PIP[@]}" install -q --force-reinstall --no-deps "$whl"
  unset FORCE_CUDA CUDA_VISIBLE_DEVICES
  log "restoring setuptools>=77 for torch"
  "${PIP[@]}" install -q "setuptools>=77.0.3,<81"
}

# --- main ---------------------------------------------------------------------------------
log "installing pip<25.3, wheel, ninja, packaging"
"${PIP[@]}" install -q "pip<25.3" wheel ninja packaging
ensure_torch

WANT_CUDA=0
if [[ $CUDA_OPS == 1 ]]; then
  WANT_CUDA=1; log "CUDA ops requested (ACON_MM_CUDA_OPS=1)"
elif [[ $CUDA_OPS == auto ]] && { gpu_visible || "$PY" -c 'import torch,sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; }; then
  WANT_CUDA=1; log "a GPU is visible: building mmcv's CUDA ops (ACON_MM_CUDA_OPS=0 to skip)"
else
  log "no GPU visible and no request (ACON_MM_CUDA_OPS): mmcv gets CPU ops, torch $(torch_desc)"
fi
[[ $WANT_CUDA == 1 ]] && setup_cuda_toolchain
if [[ $CHECK_TOOLCHAIN == 1 ]]; then
  check_toolchain
  exit 0
fi

ensure_torchvision
ensure_mmcv

log "installing the OpenMMLab stack and tools: ${STACK[*]}"
"${PIP[@]}" install -q ${TORCH_PIN[@]+"${TORCH_PIN[@]}"} "mmcv==$MMCV_VERSION" "${STACK[@]}"

if [[ -f pyproject.toml ]]; then
  log "installing acon-mm (editable)"
  "${PIP[@]}" install -q --no-build-isolation --no-deps -e .
fi

log "checking imports"
"$PY" - "$WANT_CUDA" <<'PYEOF' || die "the final check failed (above)"
import sys
import torch, torchvision, mmengine, mmcv, mmdet, mmseg, mmpretrain
from mmcv.ops import get_compiling_cuda_version
from torchvision.ops import nms
nms(torch.rand(3, 4) + torch.tensor([0., 0, 1, 1]), torch.rand(3), 0.5)
ops = get_compiling_cuda_version()
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, GPU {torch.cuda.is_available()}), "
      f"torchvision {torchvision.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__} "
      f"(CUDA ops: {ops}), mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, "
      f"mmpretrain {mmpretrain.__version__}")
if sys.argv[1] == '1' and ops == 'not available':
    sys.exit('mmcv has no CUDA ops although they were requested: check the build log above '
             '(CUDA_HOME, nvcc, FORCE_CUDA)')
try:
    import acon_mm
    print(f"acon_mm {acon_mm.__version__}")
except ImportError:
    pass
PYEOF
touch "$STAMP"
log "done"
