#!/usr/bin/env bash
# Creates the two reference virtual environments used by make_fixtures.py and
# bench_llamacpp.py, OUTSIDE the repository (they are large and machine-specific):
#
#   $SELENE_REF_VENVS/hf        torch (CPU), transformers, gguf, accelerate, numpy
#   $SELENE_REF_VENVS/llamacpp  llama-cpp-python built from source (plain CPU build)
#
# SELENE_REF_VENVS defaults to ~/.cache/selene-ref. Everything comes from PyPI; nothing
# from a model hub. Idempotent: a venv whose pinned packages already import is left as is.
#
# Usage: scripts/model_fixtures/setup_venvs.sh [hf|llamacpp|all]   (default: all)
set -euo pipefail

ROOT="${SELENE_REF_VENVS:-$HOME/.cache/selene-ref}"
WHAT="${1:-all}"

# Pinned versions (the ones the committed fixtures were generated with).
TORCH=2.15.0
TRANSFORMERS=5.24.0
GGUF=0.19.0
ACCELERATE=1.15.0
NUMPY=2.4.6
LLAMA_CPP_PYTHON=0.3.36
CMAKE=4.4.5
NINJA=1.13.2

PY="${PYTHON:-python3}"

make_venv() {
    local dir="$1"
    if [ ! -x "$dir/bin/python" ]; then
        mkdir -p "$(dirname "$dir")"
        "$PY" -m venv "$dir"
        "$dir/bin/python" -m pip install --quiet --upgrade pip
    fi
}

setup_hf() {
    local v="$ROOT/hf"
    make_venv "$v"
    if "$v/bin/python" - "$TORCH" "$TRANSFORMERS" "$GGUF" "$ACCELERATE" "$NUMPY" <<'EOF' 2>/dev/null
import sys, torch, transformers, gguf, accelerate, numpy
from importlib.metadata import version
want = dict(zip(["torch", "transformers", "gguf", "accelerate", "numpy"], sys.argv[1:]))
sys.exit(0 if all(version(k) == w for k, w in want.items()) else 1)
EOF
    then
        echo "hf venv ready: $v"
        return
    fi
    # CPU-only torch from PyPI: the Linux x86_64 torch wheel on PyPI declares its CUDA
    # runtime (cuda-toolkit, cudnn, nccl, nvshmem, triton: several GB) as hard
    # dependencies, but only needs them when a GPU is used. Installing the wheel with
    # --no-deps plus its small pure-python dependencies gives a torch that imports and
    # runs on CPU (checked below); nothing here touches CUDA.
    "$v/bin/python" -m pip install --quiet --no-deps "torch==$TORCH"
    "$v/bin/python" -m pip install --quiet \
        filelock "typing-extensions>=4.13.0" "setuptools>=77.0.3" "sympy>=1.13.3" \
        "networkx>=2.5.1" jinja2 "fsspec>=0.8.5"
    "$v/bin/python" -m pip install --quiet \
        "transformers==$TRANSFORMERS" "gguf==$GGUF" "accelerate==$ACCELERATE" \
        "numpy==$NUMPY"
    # accelerate depends on torch; pip sees the installed torch and leaves it alone.
    "$v/bin/python" -c 'import torch, transformers, gguf, accelerate
x = torch.ones(4, 4) @ torch.ones(4, 4)
assert float(x.sum()) == 64.0
print("hf venv ready: torch", torch.__version__, "transformers", transformers.__version__)'
}

setup_llamacpp() {
    local v="$ROOT/llamacpp"
    make_venv "$v"
    if "$v/bin/python" -c "import sys, llama_cpp; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_PYTHON')" 2>/dev/null; then
        echo "llamacpp venv ready: $v"
        return
    fi
    "$v/bin/python" -m pip install --quiet "cmake==$CMAKE" "ninja==$NINJA" "numpy==$NUMPY"
    # Plain CPU build from the sdist (no prebuilt binaries); cmake and ninja come from
    # the PyPI wheels above, found on PATH. Several minutes on 2 cores: run it niced.
    # AVX2/FMA/F16C named instead of GGML_NATIVE=ON: a native build segfaults on the
    # AMX Xeon hosts of this machine kind, and the named set is what Selene's own
    # kernels use, so the comparison is like for like on every host.
    PATH="$v/bin:$PATH" \
        CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
        CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        nice -n 10 "$v/bin/python" -m pip install --no-binary=llama-cpp-python \
        --no-cache-dir "llama-cpp-python==$LLAMA_CPP_PYTHON"
    "$v/bin/python" -c 'import llama_cpp; print("llamacpp venv ready: llama-cpp-python", llama_cpp.__version__)'
}

case "$WHAT" in
    hf) setup_hf ;;
    llamacpp) setup_llamacpp ;;
    all) setup_hf; setup_llamacpp ;;
    *) echo "usage: $0 [hf|llamacpp|all]" >&2; exit 2 ;;
esac
