"""The HTML report of a comparison: ``index.html`` and its plots, in one directory.

It shows the verdict, the two sides and the tolerance, the summary per dataset
type, a histogram of |A - B| per dataset type (values within and beyond the
tolerance stacked), the worst pairs with their statistics and reasons, a
difference image (A - B, and the pixels beyond the tolerance) of the worst image
pair, and the data IDs found on one side only. The plots are drawn with
matplotlib's Agg renderer (no display needed) and the page with a jinja2
template; it is written to a temporary directory beside the target and moved
into place only when complete.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from federation.compare.model import LOG_EDGES, Comparison, ImageDiff, Kind, TypeSummary
from federation.compare.report_page import PAGE

WORST = 20  # pairs in the table of worst pairs
ONE_SIDE = 200  # data IDs listed per side in "only on one side"
_WHAT = {"FitsImage": "pixels", "NumpyArray": "array values", "FitsTable": "table values",
         "JSON": "numbers", "YAML": "numbers"}


def write_report(comparison: Comparison, directory: Path) -> Path:
    """Write the report into ``directory`` (created if needed); returns its index.html."""
    directory = directory.absolute()
    directory.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        _render(comparison, temp)
        directory.mkdir(exist_ok=True)  # with the usual permissions (not mkdtemp's 0700)
        for item in temp.iterdir():
            os.replace(item, directory / item.name)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return directory / "index.html"


def _render(comparison: Comparison, folder: Path) -> None:
    import jinja2

    histograms = {}
    for index, summary in enumerate(comparison.summaries):
        if sum(summary.histogram.within) + sum(summary.histogram.beyond):
            name = f"histogram-{index:02d}-{_safe(summary.dataset_type)}.png"
            _histogram(summary, folder / name)
            histograms[summary.dataset_type] = name
    image = None
    if comparison.worst_image is not None:
        image = "difference.png"
        _difference(comparison.worst_image, folder / image)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = _number
    page = env.from_string(PAGE).render(
        c=comparison, kinds=list(Kind), histograms=histograms, image=image,
        worst=comparison.worst(WORST), what=_WHAT,
        only_a=[p for p in comparison.pairs if p.kind is Kind.ONLY_A],
        only_b=[p for p in comparison.pairs if p.kind is Kind.ONLY_B], limit=ONE_SIDE,
        created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    (folder / "index.html").write_text(page, encoding="utf-8")


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "0" if value == 0 else f"{value:.3g}"
    return str(value)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60]


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _histogram(summary: TypeSummary, path: Path) -> None:
    """|A - B| of every compared value of a dataset type, log-binned, within and beyond
    the tolerance stacked."""
    histogram = summary.histogram
    edges = 10.0 ** np.asarray(LOG_EDGES)
    within = np.asarray(histogram.within, dtype=float)
    beyond = np.asarray(histogram.beyond, dtype=float)
    used = np.flatnonzero(within + beyond)
    low, high = max(used[0] - 4, 0), min(used[-1] + 5, len(within))
    figure = _figure(7.5, 3.8)
    axes = figure.add_subplot()
    axes.stairs(within[low:high], edges[low:high + 1], fill=True, color="#4a7fb5",
                label="within tolerance")
    axes.stairs(within[low:high] + beyond[low:high], edges[low:high + 1],
                baseline=within[low:high], fill=True, color="#c0392b",
                label="beyond tolerance")
    axes.set_xscale("log")
    axes.set_yscale("log", nonpositive="clip")
    axes.set_ylim(0.8, float((within + beyond).max()) * 3)
    unit = f" [{histogram.unit}]" if histogram.unit else ""
    what = _WHAT.get(summary.storage_class, "values")
    axes.set_xlabel(f"|A − B| per value{unit} (log scale)")
    axes.set_ylabel(f"number of {what}")
    axes.set_title(f"{summary.dataset_type} ({summary.storage_class}): "
                   f"|A − B| of {histogram.total:,} compared {what}")
    if histogram.zeros:
        axes.text(0.99, 0.97, f"{histogram.zeros:,} {what} equal (|A − B| = 0), not shown",
                  transform=axes.transAxes, ha="right", va="top", fontsize=8)
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(True, which="major", alpha=0.3)
    figure.savefig(path)


def _difference(image: ImageDiff, path: Path) -> None:
    """A - B of the worst image pair, with a colour bar, beside the pixels beyond the
    tolerance (NaN on one side shows black on the left, and counts as beyond)."""
    from matplotlib.colors import ListedColormap

    diff = np.asarray(image.diff, dtype=float)
    beyond = np.asarray(image.beyond, dtype=bool)
    finite = np.abs(diff[np.isfinite(diff)])
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    figure = _figure(11, 4.6)
    left, right = figure.subplots(1, 2)
    shown = left.imshow(diff, origin="lower", interpolation="nearest", vmin=-limit,
                        vmax=limit, cmap=_diverging())
    unit = image.pair.unit
    figure.colorbar(shown, ax=left, label=f"A − B [{unit}]" if unit else "A − B")
    left.set_title(f"A − B ({image.part})")
    flagged = int(np.count_nonzero(beyond))
    right.imshow(beyond, origin="lower", interpolation="nearest", vmin=0, vmax=1,
                 cmap=ListedColormap(["#eeeeee", "#c0392b"]))
    right.set_title(f"beyond tolerance: {flagged:,} of {beyond.size:,} pixels (red)")
    for axes in (left, right):
        axes.set_xlabel("x [pixel]")
        axes.set_ylabel("y [pixel]")
    figure.suptitle(f"worst image pair: {image.pair.describe()} ({image.pair.kind.label})")
    figure.savefig(path)


def _diverging() -> Any:
    from matplotlib import colormaps

    return colormaps["RdBu_r"].with_extremes(bad="black")
