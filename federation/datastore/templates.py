"""File templates: where inside a datastore a dataset's file goes.

A template such as ``"{run}/{dataset_type}/{visit}_{detector:03d}"`` maps a
run, dataset type, data ID and dataset UUID to a relative POSIX path. Fields
written ``{name:?}`` are optional and vanish, with one adjacent separator, when
the data ID lacks them. Values are sanitized so that no path can escape the
datastore root, and templates are checked to give distinct datasets distinct
paths. Templates are parsed once; :meth:`FileTemplate.format` is a hot path.
"""

from __future__ import annotations

import re
import string
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from federation.errors import ConfigError, DatastoreError

__all__ = ["DEFAULT_TEMPLATE", "FileTemplate", "FileTemplates"]

DEFAULT_TEMPLATE = (
    "{run}/{dataset_type}/{day_obs:?}/{dataset_type}_{instrument:?}_{band:?}"
    "_{physical_filter:?}_{exposure:?}_{visit:?}_{detector:?}_{skymap:?}_{tract:?}_{patch:?}"
)

_SPECIAL = frozenset({"run", "dataset_type", "id"})
_SEPARATORS = "_-"
_DROPPED = "\0"  # marks a dropped optional field until empty components are removed
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")
_UNSAFE_LITERAL = re.compile(r"[^A-Za-z0-9._+/-]")
_EXTENSION = re.compile(r"(\.[A-Za-z0-9_+-]+)*")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    spec: str
    optional: bool


@lru_cache(maxsize=1024)
def _sanitize(value: str) -> str:
    """Percent-encode unsafe characters: injective, so distinct values keep distinct paths."""
    return _UNSAFE.sub(_escape, value)


def _escape(match: re.Match) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode())


def _sanitize_run(run: str) -> str:
    return "/".join(_sanitize(part) for part in run.split("/"))


@lru_cache(maxsize=256)
def _parse(template: str) -> tuple[tuple[str | _Field, ...], frozenset[str]]:
    """Split a template into literal and field parts, raising ConfigError if malformed."""
    if not isinstance(template, str) or not template.startswith("{run}"):
        raise ConfigError(f"file template {template!r} must begin with '{{run}}'")
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"file template {template!r} is malformed: {exc}") from None
    parts: list[str | _Field] = []
    for literal, name, spec, conversion in pieces:
        if _UNSAFE_LITERAL.search(literal):
            raise ConfigError(
                f"file template {template!r} has literal text {literal!r} with characters"
                " outside [A-Za-z0-9._+-/]"
            )
        if literal:
            parts.append(literal)
        if name is None:
            continue
        if not name.isidentifier() or conversion or "{" in (spec or ""):
            raise ConfigError(f"file template {template!r} has a bad field {{{name}}}")
        spec = spec or ""
        optional = spec.endswith("?")
        spec = spec.removesuffix("?")
        if spec and not _spec_is_usable(spec):
            raise ConfigError(f"file template {template!r}: bad format spec {spec!r} for {name}")
        parts.append(_Field(name, spec, optional))
    literal_only = "".join(p if isinstance(p, str) else "x" for p in parts)
    if any(c in ("", ".", "..") for c in literal_only.split("/")):
        raise ConfigError(f"file template {template!r} has an empty, '.' or '..' path component")
    return tuple(parts), frozenset(p.name for p in parts if isinstance(p, _Field))


def _spec_is_usable(spec: str) -> bool:
    for sample in (0, "x"):
        try:
            format(sample, spec)
            return True
        except (ValueError, TypeError):
            pass
    return False


class FileTemplate:
    """One parsed file template; :meth:`format` turns a dataset into a relative path."""

    __slots__ = ("template", "fields", "_parts")

    def __init__(self, template: str) -> None:
        self._parts, self.fields = _parse(template)
        self.template = template

    def __repr__(self) -> str:
        return f"FileTemplate({self.template!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileTemplate) and other.template == self.template

    def __hash__(self) -> int:
        return hash(self.template)

    def missing_dimensions(self, dimensions: Sequence[str]) -> list[str]:
        """Return the required dimensions this template omits ([] if it uses ``{id}``)."""
        if "id" in self.fields:
            return []
        return [d for d in dimensions if d not in self.fields]

    def format(
        self,
        *,
        run: str,
        dataset_type: str,
        data_id: Mapping[str, str | int],
        dataset_id: uuid.UUID,
        extension: str,
    ) -> str:
        """Return the relative POSIX path (with ``extension``) for one dataset."""
        out: list[str] = []
        last_is_literal = False  # whether out[-1] came from template text
        drop_next = False  # a dropped field still owes one separator after it
        dropped_any = False
        for part in self._parts:
            if isinstance(part, str):
                if drop_next and part[0] in _SEPARATORS:
                    part = part[1:]
                drop_next = False
                out.append(part)
                last_is_literal = True
                continue
            name = part.name
            if name == "run":
                value: object = run
            elif name == "dataset_type":
                value = dataset_type
            elif name == "id":
                value = dataset_id.hex
            else:
                value = data_id.get(name)
            if value is None:
                if not part.optional:
                    raise DatastoreError(
                        f"file template {self.template!r} needs {name!r}, which data ID"
                        f" {dict(data_id)} of {dataset_type} lacks"
                    )
                if last_is_literal and out[-1] and out[-1][-1] in _SEPARATORS:
                    out[-1] = out[-1][:-1]
                else:
                    drop_next = True
                out.append(_DROPPED)
                last_is_literal = False
                dropped_any = True
                continue
            drop_next = False
            last_is_literal = False
            text = value if isinstance(value, str) and not part.spec else self._render(part, value)
            out.append(_sanitize_run(text) if name == "run" else _sanitize(text))
        components = "".join(out).split("/")
        if dropped_any:
            # A component made only of dropped fields vanishes; any other empty one is an error.
            components = [
                c.replace(_DROPPED, "") for c in components if not c or c.strip(_DROPPED)
            ]
        for component in components:
            if component in ("", ".", ".."):
                raise DatastoreError(
                    f"file template {self.template!r} gives path component {component!r} for"
                    f" {dataset_type} in run {run!r} with data ID {dict(data_id)}"
                )
        if extension:
            if not _EXTENSION.fullmatch(extension):
                raise DatastoreError(f"bad file extension {extension!r}")
            components[-1] += extension
        return "/".join(components)

    def _render(self, part: _Field, value: object) -> str:
        try:
            return format(value, part.spec)
        except (ValueError, TypeError) as exc:
            raise DatastoreError(
                f"file template {self.template!r} cannot format {part.name}={value!r}"
                f" with {part.spec!r}: {exc}"
            ) from None


class FileTemplates:
    """The templates of one datastore: a default plus per-dataset-type overrides.

    ``config`` maps ``"default"`` and/or dataset type names to template strings;
    all are validated here so that a bad configuration fails at startup.
    """

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        config = dict(config or {})
        for key, value in config.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ConfigError(f"file template entry {key!r}: {value!r} must map str to str")
        self._default = FileTemplate(config.pop("default", DEFAULT_TEMPLATE))
        if "dataset_type" not in self._default.fields and "id" not in self._default.fields:
            raise ConfigError(
                f"default file template {self._default.template!r} lacks {{dataset_type}}"
                " (or {id}): paths of different dataset types would collide"
            )
        self._overrides = {name: FileTemplate(text) for name, text in config.items()}
        self._cache: dict[tuple[str, tuple[str, ...]], FileTemplate] = {}

    def for_type(self, dataset_type: str, required_dimensions: Sequence[str]) -> FileTemplate:
        """Return the template for a dataset type, checked to give unique paths.

        The built-in default gains ``_{id}`` when it omits a required dimension
        (e.g. from a custom universe); a configured template that does so is an error.
        """
        key = (dataset_type, tuple(required_dimensions))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        template = self._overrides.get(dataset_type, self._default)
        missing = template.missing_dimensions(key[1])
        if missing:
            if template.template != DEFAULT_TEMPLATE:
                source = dataset_type if dataset_type in self._overrides else "default"
                raise ConfigError(
                    f"file template {template.template!r} (configured for {source!r}) lacks"
                    f" required dimension(s) {', '.join(missing)} of dataset type"
                    f" {dataset_type!r} and has no {{id}}: paths would collide"
                )
            template = FileTemplate(template.template + "_{id}")
        self._cache[key] = template
        return template
