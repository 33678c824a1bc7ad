"""daf_butler's YAML export format (1.0.x): its tags, read and written without daf_butler.

An export (``butler export`` or ``Butler.export``) is a YAML document with
``description``, ``version``, ``universe_version``, ``universe_namespace`` and
``data``, a list of blocks (``type: dimension | collection | dataset_type |
dataset | associations``). It uses these tags:

- ``!uuid 'ce7a...'``: a dataset UUID;
- ``!butler_time/tai/iso '2013-06-17 13:00:00.000000000'``: a TAI time;
- ``!lsst.daf.butler.Timespan {begin: TIME|null, end: TIME|null}``: a validity range;
- ``!<lsst.sphgeom.ConvexPolygon> {encoded: HEX}`` (and other region classes): a region.

Here UUIDs become :class:`uuid.UUID`, times integer TAI nanoseconds since 1970
(:class:`ButlerTime`, exact to the nanosecond), timespans :class:`ButlerTimespan`
and regions :class:`Region` (the class name and the hex of its sphgeom
encoding, kept as they are). Repositories in daf_butler's universe store those
nanoseconds as they are, so times go round trips unchanged.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import IO, Any

import yaml

from federation.errors import InputError

FORMAT_VERSIONS = ("1.0.0", "1.0.1", "1.0.2")  # what daf_butler reads and writes today
WRITE_VERSION = "1.0.2"
_EPOCH = dt.datetime(1970, 1, 1)
_ISO = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?")


@dataclass(frozen=True, slots=True)
class ButlerTime:
    """A TAI time as integer nanoseconds since 1970-01-01 00:00:00 TAI."""

    ns: int

    @classmethod
    def parse(cls, text: str) -> ButlerTime:
        match = _ISO.fullmatch(text.strip())
        if not match:
            raise InputError(f"invalid daf_butler time {text!r}: expected "
                             "'YYYY-MM-DD HH:MM:SS.fffffffff'")
        whole = dt.datetime.fromisoformat(f"{match[1]}T{match[2]}") - _EPOCH
        fraction = int((match[3] or "0").ljust(9, "0"))
        return cls((whole.days * 86400 + whole.seconds) * 1_000_000_000 + fraction)

    def iso(self) -> str:
        seconds, fraction = divmod(self.ns, 1_000_000_000)
        stamp = _EPOCH + dt.timedelta(seconds=seconds)
        return f"{stamp:%Y-%m-%d %H:%M:%S}.{fraction:09d}"


@dataclass(frozen=True, slots=True)
class ButlerTimespan:
    """A validity range; None at an end means unbounded."""

    begin: ButlerTime | None
    end: ButlerTime | None


@dataclass(frozen=True, slots=True)
class Region:
    """A sky region: its sphgeom class name and the hex of its encoding."""

    kind: str
    encoded: str


# libyaml's loader and dumper where PyYAML has them (several times faster on big exports).
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Loader(_SafeLoader):  # type: ignore[misc, valid-type]
    """SafeLoader that knows daf_butler's tags (and nothing that runs code)."""


class _Dumper(_SafeDumper):  # type: ignore[misc, valid-type]
    """SafeDumper that writes daf_butler's tags."""


def _scalar(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise InputError(f"line {node.start_mark.line + 1}: {node.tag} needs a plain value")
    return str(loader.construct_scalar(node))


def _load_uuid(loader: yaml.SafeLoader, node: yaml.Node) -> uuid.UUID:
    text = _scalar(loader, node)
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InputError(f"line {node.start_mark.line + 1}: {text!r} is not a UUID") from None


def _load_time(loader: yaml.SafeLoader, node: yaml.Node) -> ButlerTime:
    return ButlerTime.parse(_scalar(loader, node))


def _load_timespan(loader: yaml.SafeLoader, node: yaml.Node) -> ButlerTimespan:
    value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    begin, end = value.get("begin"), value.get("end")
    for end_value in (begin, end):
        if end_value is not None and not isinstance(end_value, ButlerTime):
            raise InputError(f"line {node.start_mark.line + 1}: timespan ends must be "
                             "!butler_time values or null")
    return ButlerTimespan(begin, end)


def _load_region(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Region:
    value = loader.construct_mapping(node) if isinstance(node, yaml.MappingNode) else {}
    encoded = value.get("encoded")
    if not isinstance(encoded, str) or not re.fullmatch(r"(?:[0-9a-fA-F]{2})+", encoded):
        raise InputError(f"line {node.start_mark.line + 1}: region {suffix} needs an "
                         "'encoded' hex string")
    return Region(suffix, encoded.lower())


_Loader.add_constructor("!uuid", _load_uuid)
_Loader.add_constructor("!butler_time/tai/iso", _load_time)
_Loader.add_constructor("!lsst.daf.butler.Timespan", _load_timespan)
_Loader.add_multi_constructor("tag:yaml.org,2002:lsst.sphgeom.", _load_region)
_Loader.add_multi_constructor("lsst.sphgeom.", _load_region)
_Dumper.add_representer(uuid.UUID, lambda d, v: d.represent_scalar("!uuid", str(v)))
_Dumper.add_representer(ButlerTime,
                        lambda d, v: d.represent_scalar("!butler_time/tai/iso", v.iso()))
_Dumper.add_representer(ButlerTimespan, lambda d, v: d.represent_mapping(
    "!lsst.daf.butler.Timespan", {"begin": v.begin, "end": v.end}))
_Dumper.add_representer(Region, lambda d, v: d.represent_mapping(
    f"lsst.sphgeom.{v.kind}", {"encoded": v.encoded}))


def load(stream: str | bytes | IO[str] | IO[bytes], *, name: str = "export") -> dict[str, Any]:
    """Parse an export; a malformed or unsupported one is an InputError of one line."""
    try:
        document = yaml.load(stream, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{name} is not a daf_butler export: {problem}{where}") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise InputError(f"{name} is not a daf_butler export (no 'data' list)")
    version = str(document.get("version", ""))
    if version not in FORMAT_VERSIONS:
        raise InputError(f"{name}: export format {version or '(none)'} is not supported "
                         f"(supported: {', '.join(FORMAT_VERSIONS)})")
    return document


def dump(document: dict[str, Any], stream: IO[str]) -> None:
    """Write an export as daf_butler writes it."""
    yaml.dump(document, stream, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
