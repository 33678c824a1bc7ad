#!/usr/bin/env bash
# Set up the project (first run only), make sure PostgreSQL is up, run lint and the tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/tools/bootstrap.sh"
"$root/tools/install-servers.sh"
"$root/tools/start-postgres.sh"
cd "$root"
.venv/bin/ruff check federation tests tools
exec .venv/bin/pytest "$@"
