#!/usr/bin/env bash
# Configures and builds kvwarden: scripts/build.sh BUILD_DIR [cmake args...]
# Release by default, Ninja, ccache when present; CUDA kernels when nvcc is present.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=$1
shift
bash scripts/install_deps.sh
if [ ! -f "$build_dir/build.ninja" ]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
fi
jobs=$(nproc)
cmake --build "$build_dir" --parallel "$jobs"
