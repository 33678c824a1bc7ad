"""Repository configuration: the ``federation.yaml`` file at a repository's root."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from federation import yamlio
from federation.errors import ConfigError

CONFIG_NAME = "federation.yaml"
DEFAULT_SQLITE_NAME = "registry.sqlite3"


@dataclass
class RepoConfig:
    """Where a repository's registry lives and how its datastore lays out files."""

    root: Path
    db: str | None = None  # None: the embedded SQLite file inside the root
    templates: dict[str, str] = field(default_factory=dict)

    @property
    def db_url(self) -> str:
        if self.db is None:
            return f"sqlite:///{self.root / DEFAULT_SQLITE_NAME}"
        return self.db

    @classmethod
    def load(cls, root: str | Path) -> RepoConfig:
        root = Path(root).absolute()
        path = root / CONFIG_NAME
        if not path.is_file():
            hint = " (create one with 'fed create')" if not root.exists() else ""
            raise ConfigError(f"{root} is not a federation repository: no {CONFIG_NAME}{hint}")
        try:
            data = yamlio.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping")
        registry = data.get("registry") or {}
        datastore = data.get("datastore") or {}
        if not isinstance(registry, dict) or not isinstance(datastore, dict):
            raise ConfigError(f"{path}: 'registry' and 'datastore' must be mappings")
        db = registry.get("db")
        if db is not None and not isinstance(db, str):
            raise ConfigError(f"{path}: registry 'db' must be a database URL string, got {db!r}")
        templates = datastore.get("templates") or {}
        if not isinstance(templates, dict):
            raise ConfigError(f"{path}: datastore 'templates' must map dataset types to templates")
        return cls(root=root, db=db, templates=dict(templates))

    @staticmethod
    def read_overrides(path: str | Path) -> dict[str, Any]:
        """A user's seed config: optional ``templates`` mapping."""
        try:
            data = yamlio.safe_load(Path(path).read_bytes().decode("utf-8-sig")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config {path} is not UTF-8 text (byte {exc.start})") from None
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        if not isinstance(data, dict) or set(data) - {"templates"}:
            raise ConfigError(f"config {path} may only hold a 'templates' mapping")
        return data

    def save(self) -> None:
        data: dict[str, Any] = {"registry": {"db": self.db}, "datastore": {}}
        if self.templates:
            data["datastore"]["templates"] = self.templates
        (self.root / CONFIG_NAME).write_text(
            "# federation repository configuration\n" + yaml.safe_dump(data, sort_keys=False))
