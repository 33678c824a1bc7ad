"""Formatters: how one storage class is written to and read from a single file.

A formatter knows nothing about paths inside the datastore, temporary names or
atomic renames; the datastore hands it the exact path to write or read. Every
formatter checks the object type in :meth:`Formatter.validate` so that a wrong
object is rejected before any file is created, and turns every read failure
(missing, truncated or corrupt file) into a one-line :class:`DatastoreError`.

Astropy is an optional dependency, imported only by the FITS formatters.
"""

from __future__ import annotations

import json
import pathlib
import warnings
from types import ModuleType
from typing import IO, Any

import yaml

from federation import yamlio
from federation.errors import DatastoreError

__all__ = [
    "BytesFormatter", "FitsImageFormatter", "FitsTableFormatter", "Formatter",
    "JsonFormatter", "NumpyFormatter", "YamlFormatter",
]

_JSON_TYPES = (dict, list, str, int, float, bool, type(None))
_JSON_TYPE_NAMES = "dict, list, str, int, float, bool or None"
# astropy warnings that mean the file is damaged, not merely unusual.
_FITS_DAMAGE = r"(File may have been truncated|Error validating header)"


def _one_line(exc: BaseException) -> str:
    """Return an exception's message collapsed onto one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _type_name(obj: object) -> str:
    cls = type(obj)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class Formatter:
    """Base class: write and read one Python object type as one file format.

    Subclasses set ``name``, ``extension`` and ``storage_class`` (used in
    messages) and implement :meth:`validate`, :meth:`_write` and :meth:`_read`.
    """

    name: str = ""
    extension: str = ""
    storage_class: str = ""

    def __init__(self, storage_class: str | None = None) -> None:
        if storage_class is not None:
            self.storage_class = storage_class

    def _reject(self, obj: object, expected: str) -> DatastoreError:
        return DatastoreError(
            f"storage class {self.storage_class} expects {expected}, got {_type_name(obj)}"
        )

    def validate(self, obj: Any) -> None:
        """Raise DatastoreError if ``obj`` cannot be written by this formatter."""
        raise NotImplementedError

    def write(self, obj: Any, path: pathlib.Path) -> None:
        """Validate ``obj`` and write it to exactly ``path``.

        On failure the partially written file is removed and DatastoreError raised.
        """
        self.validate(obj)
        payload = self._prepare(obj)
        path = pathlib.Path(path)
        try:
            with open(path, "wb") as stream:
                self._write(payload, stream)
        except Exception as exc:  # formatter libraries raise many types
            path.unlink(missing_ok=True)
            if isinstance(exc, DatastoreError):
                raise
            raise DatastoreError(
                f"cannot write {self.storage_class} to {path}: {_one_line(exc)}"
            ) from exc

    def read(self, path: pathlib.Path) -> Any:
        """Read the object stored at ``path``; any failure is a DatastoreError."""
        path = pathlib.Path(path)
        try:
            return self._read(path)
        except DatastoreError:
            raise
        except Exception as exc:
            raise DatastoreError(
                f"cannot read {self.storage_class} from {path}: {_one_line(exc)}"
            ) from exc

    def _prepare(self, obj: Any) -> Any:
        """Convert a validated object to what :meth:`_write` needs (before any file exists)."""
        return obj

    def _write(self, obj: Any, stream: IO[bytes]) -> None:
        stream.write(obj)

    def _read(self, path: pathlib.Path) -> Any:
        raise NotImplementedError


class BytesFormatter(Formatter):
    """Opaque bytes, stored verbatim."""

    name, extension, storage_class = "bytes", ".dat", "Bytes"

    def validate(self, obj: Any) -> None:
        if not isinstance(obj, bytes | bytearray | memoryview):
            raise self._reject(obj, "bytes, bytearray or memoryview")

    def _read(self, path: pathlib.Path) -> bytes:
        return path.read_bytes()


class _TextFormatter(Formatter):
    """JSON-compatible values serialized as UTF-8 text in memory before the file is opened."""

    def _dump(self, obj: Any) -> str:
        raise NotImplementedError

    def _load(self, text: str) -> Any:
        raise NotImplementedError

    def validate(self, obj: Any) -> None:
        if not isinstance(obj, _JSON_TYPES):
            raise self._reject(obj, _JSON_TYPE_NAMES)

    def _prepare(self, obj: Any) -> bytes:
        # Nested unsupported values (sets, objects, mixed key types) fail here.
        try:
            return self._dump(obj).encode("utf-8")
        except Exception as exc:
            raise DatastoreError(
                f"storage class {self.storage_class} cannot serialize value: {_one_line(exc)}"
            ) from exc

    def _read(self, path: pathlib.Path) -> Any:
        return self._load(path.read_text(encoding="utf-8"))


class JsonFormatter(_TextFormatter):
    """JSON-compatible values written with sorted keys."""

    name, extension, storage_class = "json", ".json", "JSON"

    def _dump(self, obj: Any) -> str:
        return json.dumps(obj, sort_keys=True, indent=2) + "\n"

    def _load(self, text: str) -> Any:
        return json.loads(text)


class YamlFormatter(_TextFormatter):
    """JSON-compatible values written with ``yaml.safe_dump``."""

    name, extension, storage_class = "yaml", ".yaml", "YAML"

    def _dump(self, obj: Any) -> str:
        return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False)

    def _load(self, text: str) -> Any:
        return yamlio.safe_load(text)


def _numpy() -> ModuleType:
    """numpy, imported when an array is first stored or read (it costs a tenth of a second
    of start-up that most commands never need)."""
    import numpy

    return numpy


class NumpyFormatter(Formatter):
    """A numpy array as a ``.npy`` file, never pickled."""

    name, extension, storage_class = "npy", ".npy", "NumpyArray"

    def validate(self, obj: Any) -> None:
        if not isinstance(obj, _numpy().ndarray):
            raise self._reject(obj, "numpy.ndarray")
        if obj.dtype.hasobject:
            raise self._reject(obj, "a numpy.ndarray without Python objects (dtype=object)")

    def _write(self, obj: Any, stream: IO[bytes]) -> None:
        # A stream, not a path: np.save would append ".npy" to a temporary name.
        _numpy().save(stream, obj, allow_pickle=False)

    def _read(self, path: pathlib.Path) -> Any:
        with open(path, "rb") as stream:
            np = _numpy()
            result = np.load(stream, allow_pickle=False)
            if not isinstance(result, np.ndarray):  # e.g. an .npz archive
                raise ValueError(f"not a .npy file (found {_type_name(result)})")
        return result


def _astropy_fits(storage_class: str) -> ModuleType:
    """Import astropy.io.fits lazily: astropy is the optional ``fits`` extra."""
    try:
        from astropy.io import fits
    except ImportError as exc:
        raise DatastoreError(
            f"storage class {storage_class} needs astropy: pip install 'federation[fits]'"
        ) from exc
    return fits


def _astropy_table(storage_class: str) -> Any:
    """Import astropy.table.Table lazily, with the same message if astropy is missing."""
    _astropy_fits(storage_class)
    from astropy.table import Table

    return Table


class FitsImageFormatter(Formatter):
    """An image (numpy array or astropy HDU/HDUList) as a FITS file; read as an HDUList."""

    name, extension, storage_class = "fits_image", ".fits", "FitsImage"

    def validate(self, obj: Any) -> None:
        fits = _astropy_fits(self.storage_class)
        expected = "numpy.ndarray or astropy.io.fits HDU/HDUList"
        if isinstance(obj, _numpy().ndarray):
            if obj.dtype.kind not in "iuf":
                raise self._reject(obj, f"{expected} of numeric dtype (not {obj.dtype})")
        elif not isinstance(obj, fits.HDUList | fits.PrimaryHDU | fits.ImageHDU
                            | fits.CompImageHDU):
            raise self._reject(obj, expected)

    def _prepare(self, obj: Any) -> Any:
        fits = _astropy_fits(self.storage_class)
        if isinstance(obj, _numpy().ndarray):
            return fits.HDUList([fits.PrimaryHDU(obj)])
        if isinstance(obj, fits.HDUList):
            return obj
        if isinstance(obj, fits.PrimaryHDU):
            return fits.HDUList([obj])
        return fits.HDUList([fits.PrimaryHDU(), obj])

    def _write(self, obj: Any, stream: IO[bytes]) -> None:
        obj.writeto(stream)

    def _read(self, path: pathlib.Path) -> Any:
        # Every HDU is copied into memory and the file closed; damage is an error.
        fits = _astropy_fits(self.storage_class)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=_FITS_DAMAGE)
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                return fits.HDUList([hdu.copy() for hdu in hdul])


class FitsTableFormatter(Formatter):
    """An ``astropy.table.Table`` as a FITS binary table."""

    name, extension, storage_class = "fits_table", ".fits", "FitsTable"

    def validate(self, obj: Any) -> None:
        if not isinstance(obj, _astropy_table(self.storage_class)):
            raise self._reject(obj, "astropy.table.Table")

    def _write(self, obj: Any, stream: IO[bytes]) -> None:
        obj.write(stream, format="fits")

    def _read(self, path: pathlib.Path) -> Any:
        table_cls = _astropy_table(self.storage_class)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=_FITS_DAMAGE)
            return table_cls.read(path, format="fits", memmap=False, character_as_bytes=False)
