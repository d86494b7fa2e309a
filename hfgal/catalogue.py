"""Catalogue tables: one row per galaxy, one probability column per GZ10 class, written as CSV or Parquet (or a FITS
binary table with the `astro` extra).

A finished run's `predictions.csv` (its validation and test galaxies as the selected model scored them) and
`hfgal predict`'s output are such tables, with the same probability columns (`p_barred_spiral`, ...), so a catalogue
from a new survey and the run's own test catalogue read alike. Floats are written at full precision: a value read
back is the value computed.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import HfgalError
from .io import atomic_file, atomic_write_text

FORMATS = {".csv": "csv", ".parquet": "parquet", ".fits": "fits", ".fit": "fits"}


def column_key(class_name: str) -> str:
    """`"Edge-on with Bulge"` -> `"edge_on_with_bulge"`: a class name as a column-name fragment."""
    return re.sub(r"[^a-z0-9]+", "_", class_name.lower()).strip("_")


def probability_columns(class_names: Sequence[str]) -> list[str]:
    """One probability column per class, in class order: `p_<class>`."""
    return [f"p_{column_key(name)}" for name in class_names]


def table_format(path: str | os.PathLike) -> str:
    """`csv`, `parquet` or `fits`, from the file's suffix.

    Raises:
        HfgalError: another suffix.
    """
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise HfgalError(f"{path}: unknown table format; name the file .csv, .parquet or .fits")
    return fmt


def write_table(path: str | os.PathLike, columns: dict[str, Any]) -> Path:
    """Write equal-length columns as a table (format from the suffix), atomically.

    A missing value (None) is an empty CSV cell, a Parquet null, and in FITS a NaN (numbers) or an empty string.
    A 2-D array `(rows, D)` is one vector column in Parquet (a fixed-size list) and FITS (a `DE` column), and `D`
    columns `<name>_0 .. <name>_{D-1}` in CSV, which has no array type.

    Args:
        path: `.csv`, `.parquet` or `.fits`.
        columns: column name -> values (str, int, float or None) or a 2-D numpy array, one row per galaxy.

    Raises:
        HfgalError: unknown format, columns of different lengths, or a missing optional library.
    """
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise HfgalError(f"columns of different lengths {sorted(lengths)}; a catalogue has one row per galaxy")
    fmt = table_format(path)
    if fmt == "csv":
        return atomic_write_text(path, csv_text(columns))
    if fmt == "parquet":
        pq = _optional("pyarrow.parquet", "pip install pyarrow (or 'hfgal[train]')")
        with atomic_file(path, "wb") as f:
            pq.write_table(_arrow_table(columns), f)
        return Path(path)
    table = _optional("astropy.table", "pip install 'hfgal[astro]'")
    with atomic_file(path, "wb") as f:
        table.Table({name: _fits_column(values) for name, values in columns.items()}).write(f, format="fits")
    return Path(path)


def _arrow_table(columns: dict[str, Any]) -> Any:
    import numpy as np
    import pyarrow as pa

    arrays = {}
    for name, values in columns.items():
        if isinstance(values, np.ndarray) and values.ndim == 2:
            flat = pa.array(np.ascontiguousarray(values).ravel())
            arrays[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        elif all(v is None for v in values):
            arrays[name] = pa.nulls(len(values), pa.float64())  # e.g. RA/Dec of a folder without FITS files
        else:
            arrays[name] = pa.array(list(values))
    return pa.table(arrays)


def _fits_column(values: Any) -> Any:
    import numpy as np

    if isinstance(values, np.ndarray):
        return values
    values = list(values)
    if any(isinstance(v, str) for v in values):
        return ["" if v is None else v for v in values]
    return [float("nan") if v is None else v for v in values]


def csv_text(columns: dict[str, Any]) -> str:
    """The columns as CSV text (header first; floats in their shortest exact form; None as an empty cell; a 2-D
    array as columns `<name>_0 .. <name>_{D-1}`)."""
    import numpy as np

    flat: dict[str, Any] = {}
    for name, values in columns.items():
        if isinstance(values, np.ndarray) and values.ndim == 2:
            flat.update((f"{name}_{i}", values[:, i].tolist()) for i in range(values.shape[1]))
        else:
            flat[name] = values
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(flat)
    for row in zip(*flat.values(), strict=True):
        writer.writerow(["" if v is None else repr(float(v)) if isinstance(v, float) else v for v in row])
    return buffer.getvalue()


def _optional(module: str, install: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise HfgalError(f"writing this table needs {module.split('.')[0]}; {install}") from None
