#!/usr/bin/env bash
# The seed's run_all.sh: the accuracy and the performance parts of the suite in one pytest run
# (the model loads once), reports in output/. Extra arguments go to pytest; --model, --device and
# --dtype are mapped to --csm-model, --csm-device and --csm-dtype. $PYTHON picks the interpreter
# (default: the repository's .venv, else python3). Exits with pytest's code.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$here/.venv/bin/python" ]; then PYTHON="$here/.venv/bin/python"; else PYTHON=python3; fi
fi
exec "$PYTHON" "$here/inference.py" --all "$@"
