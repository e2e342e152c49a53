#!/usr/bin/env bash
# Fill a local wheel folder for tools/gpu_check.sh, on a machine WITH network, for a GPU
# machine WITHOUT one (Python 3.12, x86-64 Linux, torch/torchvision/triton and the CUDA
# toolkit already installed).
#
#   bash tools/misc/prepare_gpu_wheels.sh [DIR]      # default DIR: work_dirs/gpu_wheels
#   bash tools/misc/prepare_gpu_wheels.sh --full DIR # also packages the GPU image already has
#   bash tools/misc/prepare_gpu_wheels.sh --python-version 3.11 DIR   # another target Python
#
# Options: --full (see below), --python-version X.Y (the GPU machine's Python, default 3.12),
# -h/--help. The pip that resolves and downloads is $PYTHON -m pip (default python3).
#
# It holds: the mmcv 2.1.0 sdist (built there with CUDA ops), and cp312 (--python-version) manylinux or
# pure-Python wheels of the rest of tools/setup_env.sh's STACK and their dependencies -
# no torch, torchvision, triton or nvidia-* package. Without --full it leaves out what the
# GPU image already has (IMAGE_HAS below: the image's package list, e.g. scipy, matplotlib,
# opencv-python-headless, tensorboard, pytest), keeping numpy<2 (the stack's pin), setuptools
# (the mmcv build needs <70) and pip, so that the folder stays under the 64 MiB a device call
# carries. mmengine asks for opencv-python; the image has opencv-python-headless (same cv2),
# so the folder holds a metadata-only 'opencv-python' wheel that requires the headless one.
# Finally it prints the folder's size and fails if it is over 64 MiB.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FULL=0
PYVER=3.12
DIR_ARG=""
usage() { echo "usage: $0 [--full] [--python-version X.Y] [DIR]" >&2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -euo pipefail/{/^set /d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    --full) FULL=1 ;;
    --python-version)
      [[ "${2:-}" =~ ^[0-9]+\.[0-9]+$ ]] || { echo "--python-version needs X.Y (e.g. 3.12), got '${2:-}'" >&2; usage; exit 2; }
      PYVER="$2"; shift ;;
    -*) echo "unknown option $1" >&2; usage; exit 2 ;;
    *) [[ -z $DIR_ARG ]] || { echo "one DIR only (got '$DIR_ARG' and '$1')" >&2; usage; exit 2; }
       DIR_ARG="$1" ;;
  esac
  shift
done
DIR="$(mkdir -p "${DIR_ARG:-$ROOT/work_dirs/gpu_wheels}" && cd "${DIR_ARG:-$ROOT/work_dirs/gpu_wheels}" && pwd)"
PY="${PYTHON:-python3}"
MAX_BYTES=$((64 * 1024 * 1024))
log() { printf '[wheels %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# Python packages of the GPU image (docs/installation.md, "GPU check"); normalised names.
IMAGE_HAS="absl-py accelerate aiohttp attrs certifi charset-normalizer click cloudpickle cmake
colorama contourpy cycler cython einops filelock fonttools fsspec grpcio h5py idna imageio
iniconfig jinja2 joblib kiwisolver lazy-loader markdown markdown-it-py markupsafe matplotlib
mdurl mpmath networkx ninja opencv-python-headless packaging pandas pillow pluggy protobuf
psutil pygments pyparsing pytest python-dateutil pyyaml regex requests rich scikit-image
scikit-learn scipy six sympy tabulate tensorboard tensorboard-data-server threadpoolctl tifffile
tqdm typing-extensions urllib3 werkzeug wheel wrapt zipp"
NEVER="torch torchvision torchaudio triton opencv-python"   # the machine's own / the shim
PLATFORM=(--only-binary=:all: --python-version "$PYVER" --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

# The stack, as tools/setup_env.sh installs it (one source of truth).
mapfile -t STACK < <(sed -n '/^STACK=(/,/^)/p' "$ROOT/tools/setup_env.sh" | grep -v '^ *#' | grep -o '"[^"]*"' | tr -d '"')
EXTRA=("pip<25.3" wheel ninja packaging addict yapf pillow pyyaml)   # set-up tools, mmcv's needs
log "resolving for Python $PYVER manylinux x86-64: ${STACK[*]} ${EXTRA[*]}"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip install -q --dry-run --ignore-installed --report "$TMP/report.json" --target "$TMP/t" \
  "${PLATFORM[@]}" "${STACK[@]}" "${EXTRA[@]}"
"$PY" - "$TMP/report.json" "$FULL" "$IMAGE_HAS" "$NEVER" > "$TMP/pins" <<'PYEOF'
import json, re, sys
rep, full = json.load(open(sys.argv[1])), sys.argv[2] == '1'
has, never = set(sys.argv[3].split()), set(sys.argv[4].split())
keep_always = {'numpy', 'setuptools', 'pip'}
for item in rep['install']:
    name = re.sub(r'[-_.]+', '-', item['metadata']['name']).lower()
    ver = item['metadata']['version']
    if name in never or name.startswith('nvidia-'):
        continue
    if not full and name in has and name not in keep_always:
        print(f'# skip {name}=={ver}', file=sys.stderr)
        continue
    print(f'{name}=={ver}')
PYEOF
mapfile -t PINS < "$TMP/pins"
log "downloading ${#PINS[@]} wheels into $DIR"
"$PY" -m pip download -q --no-deps -d "$DIR" "${PLATFORM[@]}" "${PINS[@]}"
"$PY" -m pip download -q --no-deps -d "$DIR" "${PLATFORM[@]}" "setuptools<70"   # for the mmcv build
log "downloading the mmcv 2.1.0 sdist"
# (pip reads its metadata with setup.py, which needs pkg_resources: setuptools<70)
echo "setuptools<70" > "$TMP/build-constraints.txt"
PIP_CONSTRAINT="$TMP/build-constraints.txt" "$PY" -m pip download -q --no-deps --no-binary=:all: -d "$DIR" "mmcv==2.1.0"
if [[ $FULL == 0 ]]; then
  log "writing the metadata-only opencv-python wheel (requires opencv-python-headless)"
  "$PY" - "$DIR" <<'PYEOF'
import base64, hashlib, os, sys, zipfile
name, ver = 'opencv_python', '4.0.0.post1'
di = f'{name}-{ver}.dist-info'
files = {
    f'{di}/METADATA': 'Metadata-Version: 2.1\nName: opencv-python\nVersion: 4.0.0.post1\n'
                      'Summary: acon-mm shim: cv2 comes from opencv-python-headless\n'
                      'Requires-Dist: opencv-python-headless>=3\n',
    f'{di}/WHEEL': 'Wheel-Version: 1.0\nGenerator: acon-mm\nRoot-Is-Purelib: true\nTag: py3-none-any\n',
}
def digest(s):
    return 'sha256=' + base64.urlsafe_b64encode(hashlib.sha256(s.encode()).digest()).rstrip(b'=').decode()
record = ''.join(f'{p},{digest(c)},{len(c.encode())}\n' for p, c in files.items()) + f'{di}/RECORD,,\n'
files[f'{di}/RECORD'] = record
with zipfile.ZipFile(os.path.join(sys.argv[1], f'{name}-{ver}-py3-none-any.whl'), 'w') as z:
    for p, c in files.items():
        z.writestr(p, c)
PYEOF
fi
size=$(du -sb "$DIR" | cut -f1)
log "$(ls "$DIR" | wc -l) files, $size bytes ($((size / 1024 / 1024)) MiB) in $DIR"
ls -S "$DIR" | head -5 | sed 's/^/    largest: /'
if (( size > MAX_BYTES )); then
  log "ERROR: over 64 MiB: a device call cannot carry it; leave more out (see IMAGE_HAS)"; exit 1
fi
