"""Creating what a site definition names but does not exist yet."""

from __future__ import annotations

import sqlalchemy as sa

from federation.errors import ConfigError


def ensure_database(url: str) -> None:
    """Create a PostgreSQL database named in ``url`` if the server lacks it (SQLite: no-op)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "postgresql" or not parsed.database:
        return
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                  {"name": parsed.database}).first()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
    except sa.exc.DBAPIError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise ConfigError(f"cannot create database {parsed.database!r}: {reason}") from None
    finally:
        admin.dispose()
