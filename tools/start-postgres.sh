#!/usr/bin/env bash
# Start the local PostgreSQL server (127.0.0.1:5432) if it is not accepting connections.
set -euo pipefail
host="${PGHOST:-127.0.0.1}"
if command -v pg_isready >/dev/null && pg_isready -q -h "$host" -p 5432; then
  exit 0
fi
if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  for _ in $(seq 1 30); do
    pg_isready -q -h "$host" -p 5432 && exit 0
    sleep 1
  done
fi
echo "warning: PostgreSQL is not running on $host:5432; its tests will be skipped (or fail under CI)" >&2
