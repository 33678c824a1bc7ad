"""Storage classes: the named Python types a dataset type may hold.

A dataset type names its storage class (``"FitsImage"``); the storage class
names the :class:`~federation.datastore.formatters.Formatter` that writes and
reads its files. The set is fixed in code so that every site of a federation
agrees on what each name means; besides it, ``daf_butler:NAME`` names an LSST butler
storage class this project cannot interpret (``daf_butler:StructuredDataDict``, brought
in by ``fed import-butler``): its files are kept and read as opaque bytes, and the name
goes back out with ``fed export-butler``.
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.datastore.formatters import (
    BytesFormatter,
    FitsImageFormatter,
    FitsTableFormatter,
    Formatter,
    JsonFormatter,
    NumpyFormatter,
    YamlFormatter,
)
from federation.errors import DatasetTypeError

__all__ = ["DAF_BUTLER_PREFIX", "StorageClass", "get_storage_class", "storage_class_names"]

DAF_BUTLER_PREFIX = "daf_butler:"


@dataclass(frozen=True)
class StorageClass:
    """A named in-memory type together with the formatter that persists it."""

    name: str
    formatter: Formatter
    description: str


def _make(name: str, formatter_cls: type[Formatter], description: str) -> StorageClass:
    return StorageClass(name=name, formatter=formatter_cls(name), description=description)


_STORAGE_CLASSES: dict[str, StorageClass] = {
    sc.name: sc
    for sc in (
        _make("Bytes", BytesFormatter, "opaque file; put bytes/bytearray/memoryview, get bytes"),
        _make("JSON", JsonFormatter, "JSON-compatible value (dict, list, str, number, bool, None)"),
        _make("YAML", YamlFormatter, "JSON-compatible value stored as YAML"),
        _make("NumpyArray", NumpyFormatter, "numpy.ndarray stored as .npy (no pickles)"),
        _make("FitsImage", FitsImageFormatter,
              "image: put numpy.ndarray or astropy HDU, get astropy.io.fits.HDUList"),
        _make("FitsTable", FitsTableFormatter, "astropy.table.Table stored as a FITS binary table"),
    )
}


def storage_class_names() -> list[str]:
    """Return the names of all storage classes, in a stable documented order."""
    return list(_STORAGE_CLASSES)


def get_storage_class(name: str) -> StorageClass:
    """Return the storage class called ``name``; DatasetTypeError if there is none."""
    if isinstance(name, str) and name.startswith(DAF_BUTLER_PREFIX) \
            and name[len(DAF_BUTLER_PREFIX):].isidentifier() and len(name) <= 64:
        return StorageClass(name, BytesFormatter(name), "an LSST butler storage class, kept "
                            "as opaque bytes")
    try:
        return _STORAGE_CLASSES[name]
    except (KeyError, TypeError):
        known = ", ".join(_STORAGE_CLASSES)
        raise DatasetTypeError(f"unknown storage class {name!r}; known: {known}") from None
