#!/usr/bin/env bash
# Print the path of a Python >= 3.12 interpreter, or fail with a message.
# Order: $PYTHON if given; python3.13 / python3.12 on PATH that actually run; a pyenv 3.12+ install.
set -u
works() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
if [ -n "${PYTHON:-}" ]; then
  if works "$PYTHON"; then command -v "$PYTHON"; exit 0; fi
  echo "PYTHON=$PYTHON is not a working Python >= 3.12" >&2; exit 1
fi
for cand in python3.13 python3.12 python3; do
  if command -v "$cand" >/dev/null 2>&1 && works "$cand"; then command -v "$cand"; exit 0; fi
done
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9])(\.[0-9]+)?$' | sort -rV); do
    if works "$root/versions/$v/bin/python"; then echo "$root/versions/$v/bin/python"; exit 0; fi
  done
fi
echo "no Python >= 3.12 found: install one, or run make with PYTHON=/path/to/python3.12" >&2
exit 1
