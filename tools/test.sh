#!/usr/bin/env bash
# Set up the project (first run only), make sure PostgreSQL is up and a Rucio server is
# installed, run lint and the tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/tools/bootstrap.sh"
"$root/tools/install-servers.sh"
"$root/tools/start-postgres.sh"
"$root/tools/install-rucio.sh"  # the Rucio server the Rucio tests run against
export FED_TEST_RUCIO=1  # ... so they must run, never skip
cd "$root"
.venv/bin/ruff check federation tests tools
exec .venv/bin/pytest "$@"
