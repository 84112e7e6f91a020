#!/usr/bin/env bash
# Refresh constraints.txt, the exact version of every package the suite passed with, which both
# README commands install against (ranges alone let a new upstream release break a fresh install,
# as xxhash 4 once did). Resolves every extra afresh, without the old pins, in a throwaway venv and
# freezes it. Then run the README's test command on the new file before committing it.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3.11 -m venv "$tmp/v"
"$tmp/v/bin/pip" install -q torch==2.13.0
"$tmp/v/bin/pip" install -q -e '.[all,test,bench]'
{
  echo "# Every package version the test suite passed with; both README commands install with -c constraints.txt."
  echo "# Refresh: bash scripts/refresh-constraints.sh, then run the README's test command. Generated $(date -u +%F)."
  # torch's local build tag (+cpu) stays out: `torch==2.13.0` matches the CPU wheel the README installs first
  "$tmp/v/bin/pip" freeze --exclude-editable | sed -E 's/^(torch==[0-9.]+)\+[a-z0-9]+$/\1/' | LC_ALL=C sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages"
