#!/usr/bin/env bash
# Set up the project (first run only) and run the demo on SQLite + local files.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/tools/bootstrap.sh"
exec "$root/.venv/bin/python" "$root/tools/demo.py" "$@"
