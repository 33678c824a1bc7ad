#!/usr/bin/env bash
# Install a Rucio server into a virtualenv of its own, for tests/rucio_server.py (the Rucio
# tests only: nothing else in the project needs it). Silent when it is already there.
#
#   tools/install-rucio.sh            # into .rucio-venv/ at the project root
#   FED_RUCIO_VENV=/some/dir tools/install-rucio.sh
#
# The server runs in its own environment because its pins (SQLAlchemy, Flask, ...) need not
# match the project's. The tests talk to it with rucio-clients of the same version
# (RUCIO_VERSION below), installed in the project's .venv.
set -euo pipefail
RUCIO_VERSION=41.5.1
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FED_RUCIO_VENV:-$root/.rucio-venv}"
check() {
  [ -x "$venv/bin/gunicorn" ] && "$venv/bin/python" - "$RUCIO_VERSION" 2>/dev/null <<'PY'
import sys
import gunicorn, psycopg  # noqa: F401  (the WSGI server; the PostgreSQL driver Rucio needs)
from importlib.metadata import version
from importlib.util import find_spec
# The WSGI application (importing it needs a rucio.cfg, so only find it).
assert find_spec("rucio.web.rest.flaskapi.v1.main")
sys.exit(version("rucio") != sys.argv[1])
PY
}
check && exit 0
# The same interpreter as the project's venv when there is one (Rucio 41 wants Python >= 3.9).
python=python3
if [ -x "$root/.venv/bin/python" ]; then
  python="$("$root/.venv/bin/python" -c 'import sys; print(sys._base_executable)')"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
{
  [ -x "$venv/bin/pip" ] || "$python" -m venv "$venv"
  "$venv/bin/pip" install -q "rucio[postgresql]==$RUCIO_VERSION" gunicorn
} >"$log" 2>&1 || { cat "$log" >&2; echo "install-rucio: failed (log above)" >&2; exit 1; }
check || { echo "install-rucio: rucio $RUCIO_VERSION still not importable from $venv" >&2; exit 1; }
