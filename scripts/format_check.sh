#!/usr/bin/env bash
# clang-format check (.clang-format: Google style, 100 columns) of every C, C++ and CUDA
# file added or changed since the check began (BASE below): a ratchet. The tree predates
# it and is not reformatted wholesale; whoever touches a file formats it whole
# (clang-format-14 -i FILE), and from then on it stays formatted. Exit 1 lists the files
# that are not. scripts/test.sh runs it.
#   scripts/format_check.sh [BASE]
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-c8d40f7311223e7d1b113cc9a70599722bcbe5a0}  # the commit before this check landed
bash scripts/install_deps.sh clang-format-14
if ! git rev-parse -q --verify "$base^{commit}" > /dev/null; then
  echo "format_check: $base is not in this clone's history (a shallow clone?): nothing checked" >&2
  exit 0
fi
mapfile -t files < <(git diff --name-only --diff-filter=AMR "$base" -- \
  'cache_service/*.h' 'cache_service/*.cc' 'client/*.h' 'client/*.cc' 'common/*.h' 'common/*.cc' \
  'kernels/*.h' 'kernels/*.cc' 'kernels/*.cu' 'kernels/*.cuh' 'tests/*.h' 'tests/*.cc')
bad=()
for f in "${files[@]}"; do
  [ -f "$f" ] || continue
  clang-format-14 --dry-run --Werror "$f" > /dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -ne 0 ]; then
  echo "format_check: not clang-format clean (clang-format-14 -i FILE):" >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
echo "format_check: ${#files[@]} changed files since $base are clang-format clean"
