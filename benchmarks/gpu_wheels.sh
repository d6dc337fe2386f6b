#!/usr/bin/env bash
# Download, on a machine with a package index, the wheels a GPU machine without one needs for
# benchmarks/gpu_session.py: the project's pinned versions (requirements.lock) of the packages a stock
# CUDA + PyTorch image usually lacks or carries in another version. torch and triton are not among them:
# the GPU machine's own CUDA builds are the ones to measure.
#
#   benchmarks/gpu_wheels.sh [DIR]        # default .whl (git-ignored); about 60 MB, bitsandbytes is 43 MB of it
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-.whl}"
packages=(transformers peft trl datasets bitsandbytes pydantic pydantic_core annotated-types typing-inspection
          typing_extensions dill multiprocess)
pins=()
for name in "${packages[@]}"; do
    pin=$(grep -i "^${name}==" requirements.lock) || { echo "gpu_wheels: ${name} is not pinned in requirements.lock" >&2; exit 2; }
    pins+=("$pin")
done
mkdir -p "$dest"
# The GPU machine's Python is 3.12 on x86-64; pip matches each manylinux level exactly, so several are named.
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$dest" "${pins[@]}"
du -sh "$dest"
