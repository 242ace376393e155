#!/usr/bin/env bash
# Install Detectron2 into this project's Python environment (default: .venv/bin/python).
#
# Detectron2 is not published to PyPI by its authors. Two routes, tried in this order:
#   1. source: the official GitHub repository at a pinned commit, compiled with pip (needs network
#      access to GitHub and a C++ compiler; builds the _C extension, so rotated boxes and
#      deformable conv work too).
#   2. wheel:  the same official Python code as shipped inside the PyPI wheel sal-detectron2==0.7.2,
#      pinned by sha256, unpacked into a folder of its own (PY_PREFIX/detectron2-wheel) that a .pth
#      file puts on sys.path. Its prebuilt _C extension (CUDA 12, another torch) and its stray
#      top-level tools/ package are removed: Faster/Mask R-CNN, the data loader and the COCO/VOC
#      evaluators run in pure Python + torchvision ops.
# A CPU-only machine without GitHub access (CI, these developer machines) gets route 2.
#
# Usage: scripts/install_detectron2.sh [--route auto|source|wheel]   (env PYTHON overrides .venv)
set -euo pipefail

ROUTE=auto
if [[ "${1:-}" == "--route" ]]; then ROUTE="${2:?--route needs auto, source or wheel}"; fi
case "$ROUTE" in auto|source|wheel) ;; *) echo "error: --route $ROUTE: expected auto, source or wheel" >&2; exit 2;; esac

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$HERE/.venv/bin/python}"
[[ -x "$PYTHON" ]] || { echo "error: $PYTHON not found: create the venv first (python -m venv .venv)" >&2; exit 2; }

D2_REPO="https://github.com/facebookresearch/detectron2.git"
D2_COMMIT="a59f0563"  # the commit whose Python code the wheel below ships
WHEEL="sal-detectron2==0.7.2"
WHEEL_SHA256="491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"

# Runtime dependencies (same pins as pyproject's [detection] extra). setuptools<81 is not needed:
# this project never imports detectron2.model_zoo (the only user of pkg_resources).
DEPS=("fvcore>=0.1.5,<0.1.6" "iopath>=0.1.7,<0.1.10" "omegaconf>=2.1,<2.4" "hydra-core" "yacs" "termcolor"
      "tabulate" "cloudpickle" "pycocotools")

already_installed() {
  "$PYTHON" - <<'PY' 2>/dev/null
import detectron2, detectron2.modeling, detectron2.evaluation  # noqa: F401
print(f"detectron2 {detectron2.__version__} already importable from {detectron2.__file__}")
PY
}

install_deps() {
  "$PYTHON" -m pip install --quiet "${DEPS[@]}"
}

github_reachable() {
  timeout 20 git ls-remote --heads "$D2_REPO" >/dev/null 2>&1
}

install_from_source() {
  echo "detectron2: installing from source ($D2_REPO @ $D2_COMMIT)"
  install_deps
  # --no-build-isolation: the build needs the torch that is already installed.
  "$PYTHON" -m pip install --no-build-isolation "git+$D2_REPO@$D2_COMMIT"
}

install_from_wheel() {
  local prefix site target tmp
  prefix="$("$PYTHON" -c 'import sys; print(sys.prefix)')"
  site="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  target="$prefix/detectron2-wheel"
  echo "detectron2: installing the official Python code from the pinned wheel $WHEEL into $target"
  install_deps
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  echo "$WHEEL --hash=sha256:$WHEEL_SHA256" >"$tmp/requirements.txt"
  # The wheel is tagged cp310 but holds pure Python apart from _C (removed below).
  "$PYTHON" -m pip install --quiet --no-deps --require-hashes --only-binary=:all: --python-version 3.10 \
    --target "$tmp/site" -r "$tmp/requirements.txt"
  rm -rf "$tmp/site/tools" "$tmp/site/bin"
  find "$tmp/site/detectron2" -maxdepth 1 -name '_C*.so' -delete
  rm -rf "$target"
  mv "$tmp/site" "$target"
  echo "$target" >"$site/detectron2-wheel.pth"
}

if [[ "$ROUTE" == auto ]] && already_installed; then exit 0; fi
if [[ "$ROUTE" == source || ( "$ROUTE" == auto && $(github_reachable && echo yes || echo no) == yes ) ]]; then
  install_from_source
else
  [[ "$ROUTE" == auto ]] && echo "detectron2: GitHub is not reachable from here; using the wheel route"
  install_from_wheel
fi
"$PYTHON" - <<'PY'
import detectron2
from detectron2.modeling import build_model  # noqa: F401
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator  # noqa: F401
print(f"detectron2 {detectron2.__version__} importable from {detectron2.__file__}")
PY
