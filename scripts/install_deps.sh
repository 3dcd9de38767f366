#!/usr/bin/env bash
# Installs the Debian 12 packages kvwarden builds and tests with, if any are missing,
# plus any named as arguments (e.g. the fuzzers' clang-14 libfuzzer-14-dev).
# Idempotent: does nothing (not even `apt-get update`) when all are present.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libssl-dev
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev
  libucx-dev ucx-utils
  prometheus-cpp-dev libspdlog-dev libsystemd-dev
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "kvwarden: installing missing packages: ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
