#!/usr/bin/env bash
# The house style (.clang-format) holds in every C++ file of the project: fails, naming each
# file and line that clang-format would change. `make format` rewrites them.
# Usage: format_test.sh SOURCE_DIR
set -euo pipefail
cd "${1:-.}"
mapfile -t files < <(find actors bench drivers engine examples tests \
                       \( -name '*.cpp' -o -name '*.hpp' \) -not -path '*/corpus/*' | sort)
if clang-format --dry-run --Werror "${files[@]}"; then
  echo "format: ${#files[@]} files follow .clang-format"
else
  echo "format: the files above differ from .clang-format; run 'make format'" >&2
  exit 1
fi
