#!/usr/bin/env bash
# kvw-quality from a checkout: builds kvwardend and the Python stubs if needed, installs
# what the tool needs (Debian: python3-torch, python3-matplotlib, bible-kjv for the
# public-domain text), and runs it against a kvwardend of its own. Arguments go to the
# tool (python3 -m kvwarden.harness.quality --help), e.g. --tokens 400 --out quality.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh python3-grpcio python3-protobuf python3-numpy python3-torch python3-matplotlib bible-kjv
[ -x build/bin/kvwardend ] && [ -d build/python/kvwarden/v1 ] || bash scripts/build.sh build
PYTHONPATH="build/python:client/python" exec /usr/bin/python3 -m kvwarden.harness.quality --kvwardend build/bin/kvwardend "$@"
