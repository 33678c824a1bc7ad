"""The content of two files of one storage class, compared as the class says.

* ``FitsImage``: every HDU holding an image, matched in order (by name when the
  HDUs have names); headers are not compared (they record who made the file);
* ``NumpyArray``: the array (a structured one field by field);
* ``FitsTable``: column by column (:mod:`.tables`);
* ``JSON``, ``YAML``: structurally, numbers within the tolerance (:mod:`.structures`);
* ``Bytes``, or a class without a content comparison: the bytes, which differ
  (identical bytes are recognised by checksum before any file is read).

Files are read with the project's formatters, so what is compared is what
``Butler.get`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.compare.arrays import compare_arrays
from federation.compare.model import Difference, Histogram, Part, Tolerance
from federation.compare.structures import compare_structures
from federation.compare.tables import compare_tables
from federation.datastore.storage_classes import get_storage_class

#: Storage classes whose content is compared (others are compared by bytes only).
READ = frozenset({"FitsImage", "NumpyArray", "FitsTable", "JSON", "YAML"})
IMAGES = frozenset({"FitsImage", "NumpyArray"})


@dataclass
class Content:
    """What the contents of two files showed: per-part statistics, why they differ, and
    (for images, when asked) A - B of the first image with where it is beyond."""

    parts: list[Part] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    image: tuple[str, Any, Any] | None = None  # (part name, A - B, beyond) of a 2-D plane

    @property
    def stats(self) -> Difference | None:
        if not self.parts:
            return None
        total = Difference()
        for part in self.parts:
            total.add(part.stats)
        return total


def compare_files(storage_class: str, path_a: Path, path_b: Path, tolerance: Tolerance, *,
                  histogram: Histogram | None = None, keep_image: bool = False) -> Content:
    """Compare the files of one pair (``path_b`` is the reference)."""
    if storage_class not in READ:
        return Content(reasons=["the bytes differ"])
    formatter = get_storage_class(storage_class).formatter
    a, b = formatter.read(path_a), formatter.read(path_b)
    if storage_class == "FitsImage":
        return _images(_image_hdus(a), _image_hdus(b), tolerance, histogram, keep_image)
    if storage_class == "NumpyArray":
        return _images([("array", a, "")], [("array", b, "")], tolerance, histogram,
                       keep_image)
    if storage_class == "FitsTable":
        found = compare_tables(a, b, tolerance, histogram)
        return Content(found.parts, found.reasons)
    found = compare_structures(a, b, tolerance, histogram)
    return Content(found.parts, found.reasons)


def _image_hdus(hdul: Any) -> list[tuple[str, Any, str]]:
    """(name, data, unit) of every HDU holding an image."""
    from astropy.io import fits

    kinds = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
    found = []
    for index, hdu in enumerate(hdul):
        if isinstance(hdu, kinds) and hdu.data is not None:
            name = hdu.name if hdu.name and hdu.name != "PRIMARY" else f"HDU {index}"
            found.append((name, hdu.data, str(hdu.header.get("BUNIT", "")).strip()))
    return found


def _images(a: list[tuple[str, Any, str]], b: list[tuple[str, Any, str]],
            tolerance: Tolerance, histogram: Histogram | None, keep_image: bool) -> Content:
    found = Content()
    if [n for n, _, _ in a] != [n for n, _, _ in b]:
        found.reasons.append(f"image HDUs {[n for n, _, _ in a]} in A, "
                             f"{[n for n, _, _ in b]} in B")
        return found
    for (name, data_a, unit_a), (_, data_b, unit_b) in zip(a, b, strict=True):
        label = name if len(a) > 1 else ""
        if unit_a != unit_b:
            found.reasons.append(f"{name}: unit {unit_a or '(none)'} in A, "
                                 f"{unit_b or '(none)'} in B")
            continue
        if histogram is not None and unit_a and not histogram.unit:
            histogram.unit = unit_a
        flat = keep_image and found.image is None and getattr(data_a, "ndim", 0) >= 2
        outcome = compare_arrays(data_a, data_b, tolerance, name=label, histogram=histogram,
                                 keep_diff=flat)
        found.reasons += outcome.reasons
        if outcome.stats is not None:
            found.parts.append(Part(name, outcome.stats, unit_a))
        if flat and outcome.diff is not None:
            found.image = (name, _plane(outcome.diff), _plane(outcome.beyond))
    return found


def _plane(array: Any) -> Any:
    """The first 2-D plane of an array of two or more dimensions."""
    return array.reshape(-1, *array.shape[-2:])[0]
