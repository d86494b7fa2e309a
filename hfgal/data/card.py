"""The GZ10 dataset card, rendered from `hub_cards/dataset_card.md` by a pure function of the `SplitInfo`.

What GZ10 is, the class table with counts per split, how the split was made (scheme, seed, linking radius, sky
groups found, close pairs crossing it at 1", 10" and the cutout width), provenance, citation, licence and known
caveats.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..constants import (
    GZ10_CITATION,
    GZ10_CLASS_COUNTS,
    GZ10_CLASSES,
    GZ10_CUTOUT_ARCSEC,
    GZ10_DESCRIPTIONS,
    GZ10_PXSCALE,
    GZ10_ZENODO_RECORD,
)
from ..errors import HfgalError
from ..hub.access import is_hub_id
from ..io import card_template
from .split import SPLITS, SplitInfo

if TYPE_CHECKING:
    from huggingface_hub import DatasetCard

DATASET_TAGS = ["astronomy", "galaxy-morphology", "galaxy10", "hfgal"]
DATASET_LICENSE_DETAILS = (
    "The Galaxy10 DECaLS release (Leung & Bovy, https://github.com/henrysky/Galaxy10, Zenodo 10.5281/zenodo.10845026) "
    "does not state a licence clearly. Its images come from the DESI Legacy Imaging Surveys (Dey et al. 2019) and its "
    "labels from Galaxy Zoo DECaLS volunteers (Walmsley et al. 2022): follow the terms of those sources and cite them."
)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def _source_label(source: str | None) -> str | None:
    """Where the data came from, without the local directory layout of whoever built it."""
    if not source:
        return None
    if source.startswith("synthetic") or is_hub_id(source):
        return f"`{source}`"
    if source.startswith("zenodo:"):
        return f"`{Path(source).name}` from Zenodo record {GZ10_ZENODO_RECORD}"
    return f"`{Path(source).name}`"


def render_dataset_card(info: SplitInfo, repo_id: str | None = None) -> DatasetCard:
    """Render the GZ10 dataset card from the split info of a built dataset (its `split_info.json`).

    Args:
        info: how the split was made and what it holds; its `counts` (10 per split) are required, the sky groups
            and close pairs are described when counted.
        repo_id: the Hub dataset id the card will live in (used in the loading snippet).

    Returns:
        A `huggingface_hub.DatasetCard`; `datasets`' own push adds the `configs`/`dataset_info` metadata.

    Raises:
        HfgalError: the split info lacks the class counts of a split (one line).
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    counts = info.counts or {}
    missing = [s for s in SPLITS if len(counts.get(s) or []) != len(GZ10_CLASSES)]
    if missing:
        raise HfgalError(
            f"split info has no 10 class counts for {', '.join(missing)}; rebuild the dataset with `hfgal data build`"
        )
    class_rows = []
    for i, name in enumerate(GZ10_CLASSES):
        row = {s: int(counts[s][i]) for s in SPLITS}
        class_rows.append(
            {"index": i, "name": name, "description": GZ10_DESCRIPTIONS[name], **row, "total": sum(row.values())}
        )
    totals = {s: sum(r[s] for r in class_rows) for s in (*SPLITS, "total")}
    num_rows = int(info.num_rows or totals["total"])
    source = info.source
    synthetic = source.startswith("synthetic")
    pretty_name = "Synthetic GZ10-like galaxies" if synthetic else "Galaxy10 DECaLS"
    repo_ref = repo_id or "USER/galaxy10_decals"

    card_data = DatasetCardData(
        pretty_name=pretty_name,
        license="other",
        license_name="galaxy10-decals-sources",
        license_link="https://github.com/henrysky/Galaxy10",
        license_details=DATASET_LICENSE_DETAILS,
        task_categories=["image-classification"],
        task_ids=["multi-class-image-classification"],
        annotations_creators=["machine-generated" if synthetic else "crowdsourced"],
        size_categories=[_size_category(num_rows)],
        tags=[*DATASET_TAGS, *(["synthetic"] if synthetic else [])],
    )
    rare = GZ10_CLASS_COUNTS[4] / sum(GZ10_CLASS_COUNTS)
    return DatasetCard.from_template(
        card_data,
        template_path=str(card_template("dataset_card.md")),
        pretty_name=pretty_name,
        synthetic=synthetic,
        source=source,
        source_label=_source_label(source),
        gz10_total=sum(GZ10_CLASS_COUNTS),
        num_rows=num_rows,
        class_rows=class_rows,
        totals=totals,
        split_text=_split_text(info),
        close_pair_rows=_close_pair_rows(info),
        rare_share=f"{100 * rare:.1f} %",
        pxscale=GZ10_PXSCALE,
        repo_ref=repo_ref,
        citation=GZ10_CITATION,
    )


def _split_text(info: SplitInfo) -> str:
    """How the split was made, in prose: the split itself, the sky groups, and whether close pairs cross it."""
    parts = [f"Split: {info.description}."]
    sep = info.separation_arcsec
    if sep is None:
        parts.append(
            "The source has no sky coordinates, so duplicates and overlapping cutouts could not be searched for."
        )
        return " ".join(parts)
    if info.grouped:
        groups, grouped_rows = int(info.duplicate_groups or 0), int(info.grouped_rows or 0)
        parts.append(f"{groups} such groups of two or more galaxies ({grouped_rows} rows) were found.")
    rows = info.close_pairs or []
    widest = max(rows, key=lambda r: r["within_arcsec"]) if rows else None
    cross = widest["cross_split"] if widest else int(info.cross_split_pairs or 0)
    within = widest["within_arcsec"] if widest else float(sep)
    table = " (table below)" if rows else ""
    if cross == 0:
        parts.append(f'No pair of galaxies closer than {within:g}" sits on both sides of a split{table}.')
    else:
        parts.append(
            f'{cross} pairs of galaxies closer than {within:g}" ended in different splits{table}: their images '
            "share pixels, so the evaluation splits are slightly optimistic."
        )
    return " ".join(parts)


def _close_pair_rows(info: SplitInfo) -> list[dict]:
    """One table row per radius of the split info's `close_pairs`: pairs closer than it, and how many cross."""
    rows = []
    for row in info.close_pairs or []:
        radius = float(row["within_arcsec"])
        note = " (cutout width)" if abs(radius - GZ10_CUTOUT_ARCSEC) < 1e-3 else ""
        rows.append({"within": f'{radius:g}"{note}', "pairs": int(row["pairs"]), "cross": int(row["cross_split"])})
    return rows
