"""Example galaxies for the demo and the Space: which files are accepted, their GZ10 class when the folder says it,
and a selection that shows every class first."""

from __future__ import annotations

import csv
import importlib.util
import os
import re
from pathlib import Path

from ..constants import GZ10_CLASSES, LABEL2ID
from ..data.imageio import FITS_SUFFIXES, IMAGE_SUFFIXES
from ..errors import HfgalError

MAX_EXAMPLES = 20
_LABELLED_NAME = re.compile(r"^(\d+)_")


def accepted_suffixes() -> tuple[str, ...]:
    """File suffixes the demo accepts: what `load_image` reads, FITS only when astropy (the `astro` extra) is in."""
    has_astropy = importlib.util.find_spec("astropy") is not None
    return IMAGE_SUFFIXES + (FITS_SUFFIXES if has_astropy else ())


def read_examples(examples_dir: str | os.PathLike) -> list[tuple[Path, int | None]]:
    """Example galaxies in a folder, with their GZ10 class when the folder says it.

    The class comes from `metadata.csv` (`file_name` plus `label` or `class_name`, as in gz10-sample and
    `hfgal data` image folders) or, failing that, from a `<label>_<n>.png` file name.

    Args:
        examples_dir: a folder of images (PNG/JPEG/..., and FITS when astropy is installed).

    Returns:
        `(path, label_or_None)` pairs sorted by file name.

    Raises:
        HfgalError: the folder does not exist or holds no usable image.
    """
    folder = Path(examples_dir).expanduser()
    if not folder.is_dir():
        raise HfgalError(f"examples folder {folder} does not exist; pass a folder of galaxy images to --examples")
    labels: dict[str, int] = {}
    metadata = folder / "metadata.csv"
    if metadata.is_file():
        with metadata.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                label = _row_label(row)
                if row.get("file_name") and label is not None:
                    labels[Path(row["file_name"]).name] = label
    suffixes = accepted_suffixes()
    found = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not path.name.lower().endswith(suffixes):
            continue
        label = labels.get(path.name)
        if label is None and (m := _LABELLED_NAME.match(path.name)) and int(m.group(1)) < len(GZ10_CLASSES):
            label = int(m.group(1))
        found.append((path, label))
    if not found:
        raise HfgalError(f"no images ({', '.join(suffixes)}) in {folder}; pass a folder of galaxy images")
    return found


def select_examples(found: list[tuple[Path, int | None]], limit: int = MAX_EXAMPLES) -> list[tuple[Path, int | None]]:
    """Pick up to `limit` examples: one per class first (class order), then round-robin over classes.

    Args:
        found: `(path, label_or_None)` as returned by `hfgal.demo.app.read_examples`.
        limit: most examples to keep.

    Returns:
        The chosen pairs; unlabelled images only fill what the labelled ones leave.
    """
    by_class: dict[int, list[tuple[Path, int | None]]] = {}
    unlabelled = []
    for item in sorted(found, key=lambda pl: _natural_key(pl[0].name)):
        if item[1] is None:
            unlabelled.append(item)
        else:
            by_class.setdefault(item[1], []).append(item)
    chosen: list[tuple[Path, int | None]] = []
    queues = [by_class[c] for c in sorted(by_class)]
    depth = 0
    while len(chosen) < limit and any(depth < len(q) for q in queues):
        for queue in queues:
            if depth < len(queue) and len(chosen) < limit:
                chosen.append(queue[depth])
        depth += 1
    return chosen + unlabelled[: limit - len(chosen)]


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _row_label(row: dict[str, str]) -> int | None:
    value = (row.get("label") or "").strip()
    if value.isdigit() and int(value) < len(GZ10_CLASSES):
        return int(value)
    return LABEL2ID.get((row.get("class_name") or value).strip())
