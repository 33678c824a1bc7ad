"""What a sync or bundle carries: collections, dataset types, a data ID expression, files."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from federation.errors import InputError


@dataclass(frozen=True)
class Selection:
    """A subset of a repository, named by globs and an optional `where` expression.

    A cursor belongs to a (source, selection) pair; :attr:`key` identifies
    the selection in cursor tables.
    """

    collections: tuple[str, ...] = ("*",)
    dataset_types: tuple[str, ...] = ("*",)
    where: str | None = None
    bind: tuple[tuple[str, Any], ...] = field(default=())
    files: bool = True
    #: a release, whole: its collections, every dataset and file they hold, its manifest
    #: and its verifications (``collections`` is then just the release's name)
    release: str | None = None

    @classmethod
    def make(cls, collections=None, dataset_types=None, where: str | None = None,
             bind: dict[str, Any] | None = None, files: bool = True,
             release: str | None = None) -> Selection:
        if release is not None:
            if collections or dataset_types or (where and where.strip()):
                raise InputError("--release selects a release whole: give it without -c, -t "
                                 "or --where")
            if not isinstance(release, str) or not release.strip():
                raise InputError("--release needs a release name")
            return cls((release.strip(),), ("*",), None, (), files, release.strip())
        collections = tuple(collections or ("*",))
        dataset_types = tuple(dataset_types or ("*",))
        for pattern in collections + dataset_types:
            if not isinstance(pattern, str) or not pattern.strip():
                raise InputError(f"invalid selection pattern {pattern!r}")
        where = where.strip() if where and where.strip() else None
        return cls(collections, dataset_types, where, tuple(sorted((bind or {}).items())), files)

    @property
    def is_full(self) -> bool:
        """Everything: all collections and types, no data ID filter."""
        return self.collections == ("*",) and self.dataset_types == ("*",) and not self.where

    @property
    def bind_dict(self) -> dict[str, Any]:
        return dict(self.bind)

    def to_dict(self) -> dict[str, Any]:
        found = {"collections": list(self.collections),
                 "dataset_types": list(self.dataset_types),
                 "where": self.where, "bind": self.bind_dict, "files": self.files}
        return found if self.release is None else found | {"release": self.release}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Selection:
        if not isinstance(data, dict):
            raise InputError("a selection must be a mapping")
        if data.get("release") is not None:
            return cls.make(release=data["release"], files=bool(data.get("files", True)))
        return cls.make(data.get("collections"), data.get("dataset_types"), data.get("where"),
                        data.get("bind"), bool(data.get("files", True)))

    @property
    def key(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def matches_collection(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.collections)

    def matches_type(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.dataset_types)

    def describe(self) -> str:
        if self.release is not None:
            return f"release {self.release}; " + ("with files" if self.files else "records only")
        parts = [f"collections {', '.join(self.collections)}",
                 f"dataset types {', '.join(self.dataset_types)}"]
        if self.where:
            parts.append(f"where {self.where!r}")
        parts.append("with files" if self.files else "records only")
        return "; ".join(parts)
