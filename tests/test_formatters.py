"""Round trips, type checks and corrupt-file handling of every storage class."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest

from federation.datastore.formatters import Formatter
from federation.datastore.storage_classes import (
    StorageClass,
    get_storage_class,
    storage_class_names,
)
from federation.errors import DatasetTypeError, DatastoreError


def _path(tmp_path: pathlib.Path, sc: StorageClass) -> pathlib.Path:
    # An odd temporary-style name: formatters must write to exactly this path.
    return tmp_path / f"dataset{sc.formatter.extension}.tmp-1234"


def test_names_and_lookup() -> None:
    assert storage_class_names() == ["Bytes", "JSON", "YAML", "NumpyArray", "FitsImage",
                                     "FitsTable"]
    for name in storage_class_names():
        sc = get_storage_class(name)
        assert sc.name == name and isinstance(sc.formatter, Formatter) and sc.description
    formats = {n: (get_storage_class(n).formatter.name, get_storage_class(n).formatter.extension)
               for n in storage_class_names()}
    assert formats == {"Bytes": ("bytes", ".dat"), "JSON": ("json", ".json"),
                       "YAML": ("yaml", ".yaml"), "NumpyArray": ("npy", ".npy"),
                       "FitsImage": ("fits_image", ".fits"), "FitsTable": ("fits_table", ".fits")}


def test_unknown_storage_class() -> None:
    with pytest.raises(DatasetTypeError, match=r"unknown storage class 'Nope'; known: Bytes, JSON"):
        get_storage_class("Nope")


@pytest.mark.parametrize("obj", [b"\x00\x01abc", bytearray(b"xyz"), memoryview(b"mv"), b""])
def test_bytes_round_trip(tmp_path: pathlib.Path, obj: object) -> None:
    sc = get_storage_class("Bytes")
    path = _path(tmp_path, sc)
    sc.formatter.write(obj, path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    result = sc.formatter.read(path)
    assert type(result) is bytes and result == bytes(obj)


VALUES = [{"b": 1, "a": [1, 2.5, None, True, "s"], "n": {"x": {}}}, [1, "two"], "text",
          42, 1.5, False, None]


@pytest.mark.parametrize("name", ["JSON", "YAML"])
@pytest.mark.parametrize("obj", VALUES)
def test_text_round_trip(tmp_path: pathlib.Path, name: str, obj: object) -> None:
    sc = get_storage_class(name)
    path = _path(tmp_path, sc)
    sc.formatter.write(obj, path)
    assert sc.formatter.read(path) == obj


def test_json_sorted_keys(tmp_path: pathlib.Path) -> None:
    fmt = get_storage_class("JSON").formatter
    fmt.write({"z": 1, "a": 2}, tmp_path / "x.json")
    text = (tmp_path / "x.json").read_text()
    assert text.index('"a"') < text.index('"z"') and json.loads(text) == {"a": 2, "z": 1}


def test_numpy_round_trip(tmp_path: pathlib.Path) -> None:
    sc = get_storage_class("NumpyArray")
    structured = np.array([(1, 2.0)], dtype=[("i", "<i4"), ("f", ">f8")])
    for arr in (np.arange(12, dtype=np.int16).reshape(3, 4), np.array([]), structured,
                np.asfortranarray(np.ones((2, 3)))):
        path = _path(tmp_path, sc)
        sc.formatter.write(arr, path)
        assert path.exists() and not path.with_name(path.name + ".npy").exists()
        result = sc.formatter.read(path)
        assert result.dtype == arr.dtype and np.array_equal(result, arr)


WRONG = [("Bytes", "a string"), ("Bytes", [1, 2]), ("JSON", {1, 2}), ("JSON", b"raw"),
         ("YAML", object()), ("NumpyArray", [1, 2, 3]),
         ("NumpyArray", np.array([object()], dtype=object))]


@pytest.mark.parametrize(("name", "obj"), WRONG)
def test_wrong_type_rejected_before_write(tmp_path: pathlib.Path, name: str, obj: object) -> None:
    sc = get_storage_class(name)
    with pytest.raises(DatastoreError, match=rf"^storage class {name} expects .+, got "):
        sc.formatter.validate(obj)
    with pytest.raises(DatastoreError, match=rf"^storage class {name} expects"):
        sc.formatter.write(obj, _path(tmp_path, sc))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["JSON", "YAML"])
def test_unserializable_nested_value_writes_nothing(tmp_path: pathlib.Path, name: str) -> None:
    sc = get_storage_class(name)
    with pytest.raises(DatastoreError, match=f"storage class {name} cannot serialize"):
        sc.formatter.write({"a": [1, {"b": object()}]}, _path(tmp_path, sc))
    assert list(tmp_path.iterdir()) == []


CORRUPT = [("JSON", b'{"a": [1, 2'), ("JSON", b"\xff\xfe\x00"), ("YAML", b"a: [1, 2\n  b: {"),
           ("NumpyArray", b"\x93NUMPY garbage"), ("NumpyArray", b"")]


@pytest.mark.parametrize(("name", "content"), CORRUPT)
def test_corrupt_file(tmp_path: pathlib.Path, name: str, content: bytes) -> None:
    path = tmp_path / "bad.file"
    path.write_bytes(content)
    with pytest.raises(DatastoreError, match=f"cannot read {name} from .*bad.file: ") as info:
        get_storage_class(name).formatter.read(path)
    assert "\n" not in str(info.value)


def test_truncated_npy(tmp_path: pathlib.Path) -> None:
    fmt = get_storage_class("NumpyArray").formatter
    fmt.write(np.arange(1000.0), tmp_path / "a.npy")
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "a.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatastoreError, match="a.npy"):
        fmt.read(tmp_path / "a.npy")


@pytest.mark.parametrize("name", storage_class_names())
def test_missing_file(tmp_path: pathlib.Path, name: str) -> None:
    if name.startswith("Fits"):
        pytest.importorskip("astropy")
    with pytest.raises(DatastoreError, match="absent"):
        get_storage_class(name).formatter.read(tmp_path / "absent")


# --- FITS ------------------------------------------------------------------


def test_fits_image_round_trip(tmp_path: pathlib.Path) -> None:
    fits = pytest.importorskip("astropy.io.fits")
    sc = get_storage_class("FitsImage")
    image = np.arange(20, dtype=np.float32).reshape(4, 5)
    header = fits.Header({"OBJECT": "M31"})
    inputs = [image, fits.PrimaryHDU(image, header=header), fits.ImageHDU(image * 2, name="SCI"),
              fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, name="A")])]
    for i, obj in enumerate(inputs):
        path = tmp_path / f"img{i}.fits"
        sc.formatter.write(obj, path)
        hdul = sc.formatter.read(path)
        assert isinstance(hdul, fits.HDUList)
        path.unlink()  # fully in memory: data still readable after the file is gone
        data = hdul[-1].data
        expected = image * 2 if i == 2 else image
        assert np.array_equal(data, expected) and not isinstance(data, np.memmap)
    assert hdul[-1].name == "A"
    sc.formatter.write(inputs[1], tmp_path / "h.fits")
    assert sc.formatter.read(tmp_path / "h.fits")[0].header["OBJECT"] == "M31"


@pytest.mark.parametrize("obj", ["text", np.array([True]), [[1.0]]])
def test_fits_image_wrong_type(tmp_path: pathlib.Path, obj: object) -> None:
    pytest.importorskip("astropy")
    fmt = get_storage_class("FitsImage").formatter
    with pytest.raises(DatastoreError, match="^storage class FitsImage expects"):
        fmt.write(obj, tmp_path / "x.fits")
    assert list(tmp_path.iterdir()) == []


def test_fits_table_round_trip(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("astropy")
    from astropy.table import Table

    sc = get_storage_class("FitsTable")
    table = Table({"id": [1, 2, 3], "flux": [1.5, 2.5, np.nan], "name": ["a", "bb", "ccc"]},
                  meta={"SURVEY": "HSC"})
    path = _path(tmp_path, sc)
    sc.formatter.write(table, path)
    result = sc.formatter.read(path)
    path.unlink()
    assert isinstance(result, Table) and result.colnames == ["id", "flux", "name"]
    assert list(result["name"]) == ["a", "bb", "ccc"] and result.meta["SURVEY"] == "HSC"
    assert np.array_equal(result["flux"], table["flux"], equal_nan=True)
    with pytest.raises(DatastoreError, match="^storage class FitsTable expects astropy.table"):
        sc.formatter.write({"id": [1]}, path)
    assert not path.exists()


@pytest.mark.parametrize("name", ["FitsImage", "FitsTable"])
def test_fits_corrupt_and_truncated(tmp_path: pathlib.Path, name: str) -> None:
    pytest.importorskip("astropy")
    from astropy.table import Table

    fmt = get_storage_class(name).formatter
    (tmp_path / "garbage.fits").write_bytes(b"not a fits file at all" * 200)
    with pytest.raises(DatastoreError, match=f"cannot read {name} from .*garbage.fits: "):
        fmt.read(tmp_path / "garbage.fits")
    obj = np.ones((50, 50)) if name == "FitsImage" else Table({"a": np.arange(5000)})
    fmt.write(obj, tmp_path / "good.fits")
    data = (tmp_path / "good.fits").read_bytes()
    for cut in (len(data) - 3000, 2880 + 100, 1000):
        (tmp_path / "cut.fits").write_bytes(data[:cut])
        with pytest.raises(DatastoreError, match="cut.fits") as info:
            fmt.read(tmp_path / "cut.fits")
        assert "\n" not in str(info.value)


def test_fits_without_astropy(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate the optional extra being absent: imports of astropy fail.
    for mod in [m for m in sys.modules if m == "astropy" or m.startswith("astropy.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "astropy", None)
    for name in ("FitsImage", "FitsTable"):
        fmt = get_storage_class(name).formatter
        with pytest.raises(DatastoreError, match=rf"{name} needs astropy: pip install "
                                                 r"'federation\[fits\]'"):
            fmt.write(np.zeros(3), tmp_path / "x.fits")
        with pytest.raises(DatastoreError, match="needs astropy"):
            fmt.read(tmp_path / "x.fits")
    assert list(tmp_path.iterdir()) == []
