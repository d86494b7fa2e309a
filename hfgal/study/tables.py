"""Study tables: the runs of each table cell over seeds (`Group`), Table 1, Table 2, variants, the leaderboard and
the side-by-side comparison with the published numbers, as markdown and CSV.

Every number comes from the `test` metrics of a run's results.json (the best-on-validation checkpoint, evaluated
once on test), so each cell can be traced to the runs it averages.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..constants import EQUIVARIANT_CONFIG_PREFIX, EQUIVARIANT_MODEL_TYPE
from ..runs import RunRecord, read_results
from .plan import ERROR_FILE, Entry, PlannedRun, Study
from .protocols import PUBLISHED_TABLE1, PUBLISHED_TABLE2
from .schema import TABLE2_COLUMNS, VARIANT_KEYS

_SUPERSCRIPTS = "¹²³⁴⁵⁶⁷⁸⁹"
COLUMN_TITLES = {"none": "No pretraining", "imagenet": "ImageNet", "zoobot": "Zoobot"}
ZOOBOT_CAVEAT = (
    "Zoobot encoders were pretrained on Galaxy Zoo volunteer votes, and Galaxy10 DECaLS labels come from the same "
    "Galaxy Zoo DECaLS campaign: the Zoobot pretraining very probably saw galaxies (and their votes) that are in "
    "our GZ10 test split, so the Zoobot column can overstate what the pretraining brings to unseen galaxies."
)


@dataclasses.dataclass
class Group:
    """The runs of one table cell (entry, pretraining column, variant) over seeds, with their statistics."""

    entry: Entry
    column: str | None
    variant: str
    runs: list[PlannedRun]
    results: list[RunRecord] = dataclasses.field(default_factory=list)
    failed: list[tuple[PlannedRun, str]] = dataclasses.field(default_factory=list)
    pending: list[PlannedRun] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        parts = [self.entry.name, COLUMN_TITLES.get(self.column, ""), self.variant]
        return " / ".join(p for p in parts if p)

    @property
    def model(self) -> str:
        return self.runs[0].model

    def stats(self) -> dict[str, Any] | None:
        """Mean/std over seeds of the test metrics and costs; None when no run finished."""
        if not self.results:
            return None
        acc = [100 * r.test.accuracy for r in self.results]
        n = len(acc)
        mean = statistics.fmean(acc)
        std = statistics.stdev(acc) if n > 1 else None
        if n > 1:
            from scipy.stats import t

            half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
            ci, ci_kind = (mean - half, mean + half), "seeds"
        else:
            lo, hi = self.results[0].test.accuracy_ci95 or (math.nan, math.nan)
            ci, ci_kind = (100 * lo, 100 * hi), "wilson"  # one seed: the spread over its test images

        def avg(get) -> float:
            values = [get(r) for r in self.results]
            values = [float(v) for v in values if v is not None]
            return statistics.fmean(values) if values else math.nan

        return {
            "n_seeds": n,
            "seeds": [r.seed for r in self.results],
            "accuracy_mean": mean,
            "accuracy_std": std,
            "accuracy_ci95_low": ci[0],
            "accuracy_ci95_high": ci[1],
            "ci_kind": ci_kind,
            "macro_f1_mean": avg(lambda r: 100 * r.test.macro_f1),
            "balanced_accuracy_mean": avg(lambda r: 100 * r.test.balanced_accuracy),
            "params_m": avg(lambda r: None if r.params_total is None else r.params_total / 1e6),
            "co2_kg_mean": avg(lambda r: r.carbon.emissions_kg),
            "energy_kwh_mean": avg(lambda r: r.carbon.energy_kwh),
            "train_seconds_mean": avg(lambda r: r.train_seconds),
            "images_per_second_mean": avg(lambda r: r.train_images_per_second),
            # Diagnostic only (--test_each_eval): the best test accuracy over the evaluations, the seed study's way.
            "selected_on_test_mean": avg(
                lambda r: 100 * r.selection_on_test.test_accuracy if r.selection_on_test else None
            ),
        }


def collect_groups(study: Study, out_dir: Path) -> list[Group]:
    """Group the study's runs by (entry, column, variant) and read each run's results or error."""
    groups: dict[tuple, Group] = {}
    entries = {e.name: e for e in study.entries}
    for run in study.runs:
        key = (run.entry, run.column, run.variant)
        group = groups.setdefault(key, Group(entries[run.entry], run.column, run.variant, []))
        group.runs.append(run)
        run_dir = run.run_dir(out_dir)
        results = read_results(run_dir)
        if results is not None:
            group.results.append(results)
        elif (run_dir / ERROR_FILE).is_file():
            group.failed.append((run, (run_dir / ERROR_FILE).read_text(errors="replace")))
        else:
            group.pending.append(run)
    return list(groups.values())


# --------------------------------------------------------------------------- formatting


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _acc(stats: dict | None) -> str:
    if stats is None:
        return "—"
    std = stats["accuracy_std"]
    return f"{stats['accuracy_mean']:.2f} ± {std:.2f}" if std is not None else f"{stats['accuracy_mean']:.2f}"


def _hmm(seconds: float) -> str:
    if seconds is None or math.isnan(seconds):
        return "—"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}" if minutes else f"{seconds:.0f}s"


def _params(millions: float | None) -> str:
    if millions is None or math.isnan(millions):
        return "—"
    return f"{millions:.1f}" if millions >= 1 else f"{millions:.3g}"


def _co2(kg: float) -> str:
    return "—" if kg is None or math.isnan(kg) else f"{kg:.3g}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _csv(header: Sequence[str], rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


_STAT_FIELDS = [
    "n_seeds",
    "accuracy_mean",
    "accuracy_std",
    "accuracy_ci95_low",
    "accuracy_ci95_high",
    "ci_kind",
    "macro_f1_mean",
    "balanced_accuracy_mean",
    "params_m",
    "co2_kg_mean",
    "energy_kwh_mean",
    "train_seconds_mean",
    "images_per_second_mean",
    "selected_on_test_mean",
]


def _stat_row(group: Group, stats: dict | None) -> dict:
    row = {field: (stats or {}).get(field) for field in _STAT_FIELDS}
    row["n_seeds"] = (stats or {}).get("n_seeds", 0)
    row["runs"] = " ".join(r.slug for r in group.runs)
    row["failed"] = len(group.failed)
    return row


# --------------------------------------------------------------------------- tables


def is_equivariant(group: Group) -> bool:
    """A row of hfgal's rotation-equivariant GCNNs (a named config, or runs that recorded that model type)."""
    named = group.model.startswith(EQUIVARIANT_CONFIG_PREFIX)
    return named or any(r.model_type == EQUIVARIANT_MODEL_TYPE for r in group.results)


EQUIVARIANT_NOTE = (
    "Rotation-equivariant GCNNs trained from scratch (no pretraining). Published reference: a D16 GCNN reached "
    "95.52 ± 0.18 % (Pandya et al. 2023, arXiv:2311.01500) on its own random split, not duplicate-aware.\n"
)


def table1(groups: list[Group], equivariant: bool = False) -> tuple[str, str]:
    """Table 1 (one row per pretrained checkpoint) as markdown and CSV; accuracies in %. With `equivariant`, the
    same table of the rotation-equivariant GCNN rows instead (they are left out of Table 1)."""
    rows, csv_rows = [], []
    footnote = False
    for group in groups:
        if group.entry.table != 1 or group.variant or is_equivariant(group) != equivariant:
            continue
        s = group.stats()
        ci = "—"
        if s:
            ci = f"[{s['accuracy_ci95_low']:.2f}, {s['accuracy_ci95_high']:.2f}]"
            if s["ci_kind"] == "wilson":
                ci, footnote = ci + "†", True
        rows.append(
            [
                group.entry.name,
                f"`{group.model}`",
                _acc(s),
                ci,
                _num(s and s["macro_f1_mean"]),
                _params(s and s["params_m"]),
                _co2(s and s["co2_kg_mean"]),
                _hmm(s and s["train_seconds_mean"]),
                _num(s and s["images_per_second_mean"], 1),
                f"{len(group.results)}/{len(group.runs)}",
            ]
        )
        csv_rows.append({"model": group.entry.name, "checkpoint": group.model, **_stat_row(group, s)})
    header = [
        "Model",
        "Checkpoint",
        "Test acc. % (mean ± std)",
        "95 % CI",
        "Macro-F1 %",
        "Params (M)",
        "CO2 (kg)",
        "Time",
        "Images/s",
        "Seeds",
    ]
    md = markdown_table(header, rows, "llrrrrrrrr")
    md += (
        "\nMean ± sample standard deviation over seeds of the test accuracy; 95 % CI: Student-t interval of the "
        "seed mean" + ("; † one seed: the Wilson interval of that run's test accuracy" if footnote else "") + ". "
        "CO2 (kg CO2eq) and time (training wall-clock) are means per run.\n"
    ) + (f"\n{EQUIVARIANT_NOTE}" if equivariant else "")
    return md, _csv(["model", "checkpoint", *_STAT_FIELDS, "runs", "failed"], csv_rows)


def table2(groups: list[Group], study: Study) -> tuple[str, str]:
    """Table 2 (rows = architectures, columns = no pretraining / ImageNet / Zoobot) as markdown and CSV."""
    cells = {(g.entry.name, g.column): g for g in groups if g.entry.table == 2 and not g.variant}
    rows, csv_rows, notes = [], [], []
    for entry in (e for e in study.entries if e.table == 2):
        stats = {c.name: cells[(entry.name, c.name)].stats() if c.model else None for c in entry.columns}
        means = [s["accuracy_mean"] for s in stats.values() if s]
        best = max(means) if means else None
        row = [entry.name]
        for column in entry.columns:
            s = stats[column.name]
            mark = ""
            if column.note:
                if column.note not in notes:
                    notes.append(column.note)
                mark = _SUPERSCRIPTS[notes.index(column.note) % len(_SUPERSCRIPTS)]
            if column.model is None:
                row.append(f"n/a{mark}")
            elif s is None:
                row.append(f"—{mark}")
            else:
                delta = s["accuracy_mean"] - best
                text = _acc(s)
                text = f"**{text}**" if delta == 0 else f"{text} ({delta:+.2f})"
                row.append(text + mark)
            group = cells.get((entry.name, column.name))
            csv_rows.append(
                {
                    "model": entry.name,
                    "column": column.name,
                    "checkpoint": column.model,
                    "available": column.model is not None,
                    "note": column.note,
                    "delta_to_best": None if s is None else s["accuracy_mean"] - best,
                    **(_stat_row(group, s) if group else {"n_seeds": 0}),
                }
            )
        rows.append(row)
    header = ["Model", *(COLUMN_TITLES[c] for c in TABLE2_COLUMNS)]
    md = markdown_table(header, rows, "lrrr")
    md += (
        "\nTest accuracy % (mean ± std over seeds); in brackets the difference to the best column of the row "
        "(bold). No pretraining: the architecture initialised at random.\n"
    )
    md += "".join(f"\n{_SUPERSCRIPTS[i % len(_SUPERSCRIPTS)]} {note}\n" for i, note in enumerate(notes))
    header = ["model", "column", "checkpoint", "available", "note", "delta_to_best", *_STAT_FIELDS, "runs", "failed"]
    return md, _csv(header, csv_rows)


def variants_table(groups: list[Group]) -> tuple[str, str] | None:
    """Variant runs (D4 augmentation, TTA, linear probe) next to their base runs, or None without variants."""
    by_key = {(g.entry.name, g.column, g.variant): g for g in groups}
    with_variants = {(g.entry.name, g.column) for g in groups if g.variant}
    if not with_variants:
        return None
    rows, csv_rows = [], []
    for group in groups:
        if (group.entry.name, group.column) not in with_variants:
            continue
        s = group.stats()
        base = by_key[(group.entry.name, group.column, "")].stats()
        delta = s["accuracy_mean"] - base["accuracy_mean"] if s and base and group.variant else None
        settings = {k: v for k, v in group.runs[0].args.items() if k in VARIANT_KEYS}
        rows.append(
            [
                " / ".join(p for p in (group.entry.name, COLUMN_TITLES.get(group.column, "")) if p),
                group.variant or "base",
                ", ".join(f"{k}={str(v).lower()}" for k, v in settings.items()),
                _acc(s),
                "" if not group.variant else (f"{delta:+.2f}" if delta is not None else "—"),
                _num(s and s["macro_f1_mean"]),
                _co2(s and s["co2_kg_mean"]),
                f"{len(group.results)}/{len(group.runs)}",
            ]
        )
        csv_rows.append(
            {
                "model": group.entry.name,
                "column": group.column,
                "variant": group.variant or "base",
                **{k: settings.get(k) for k in VARIANT_KEYS},
                "delta_to_base": delta,
                **_stat_row(group, s),
            }
        )
    header = ["Model", "Variant", "Settings", "Test acc. %", "Δ vs base", "Macro-F1 %", "CO2 (kg)", "Seeds"]
    md = markdown_table(header, rows, "lllrrrrr")
    md += "\nEach variant changes one setting of the base run; Δ is the difference of seed means to the base.\n"
    fields = ["model", "column", "variant", *VARIANT_KEYS, "delta_to_base", *_STAT_FIELDS]
    return md, _csv([*fields, "runs", "failed"], csv_rows)


def leaderboard(groups: list[Group]) -> str | None:
    """Every finished model (Table 1 rows, Table 2 cells, variants) ranked by mean test accuracy, as markdown."""
    ranked = sorted(((g.stats(), g) for g in groups if g.results), key=lambda t: (-t[0]["accuracy_mean"], t[1].label))
    if not ranked:
        return None
    rows = [
        [
            str(rank),
            group.label,
            f"`{group.model}`",
            _acc(s),
            _num(s["macro_f1_mean"]),
            _params(s["params_m"]),
            _co2(s["co2_kg_mean"]),
            _hmm(s["train_seconds_mean"]),
            str(s["n_seeds"]),
        ]
        for rank, (s, group) in enumerate(ranked, start=1)
    ]
    header = ["#", "Model", "Checkpoint", "Test acc. %", "Macro-F1 %", "Params (M)", "CO2 (kg)", "Time", "Seeds"]
    return markdown_table(header, rows, "rllrrrrrr")


def published_comparison(groups: list[Group], study: Study) -> str:
    """Markdown comparing our seed means with the seed study's published numbers (rows it published)."""
    parts = []
    rows = []
    for group in groups:
        if group.entry.table != 1 or group.variant or group.entry.published is None:
            continue
        pub, s = PUBLISHED_TABLE1[group.entry.published], group.stats()
        delta = f"{s['accuracy_mean'] - pub['accuracy']:+.2f}" if s else "—"
        rows.append(
            [
                f"{group.entry.name} ({group.entry.published})",
                _acc(s),
                _num(s and s["selected_on_test_mean"]),
                f"{pub['accuracy']:.2f}",
                delta,
                _params(s and s["params_m"]),
                f"{pub['params_m']:.1f}",
                _co2(s and s["co2_kg_mean"]),
                f"{pub['co2_kg']:.3f}",
                _hmm(s and s["train_seconds_mean"]),
                pub["time"],
            ]
        )
    if rows:
        header = [
            "Model",
            "Acc. % ours",
            "Best epoch on test % (diagnostic)",
            "Acc. % published",
            "Δ",
            "Params ours",
            "Params published",
            "CO2 kg ours",
            "CO2 kg published",
            "Time ours",
            "Time published",
        ]
        parts.append(
            "Table 1\n\n"
            + markdown_table(header, rows, "lrrrrrrrrrr")
            + "\nOurs: the checkpoint chosen on validation, test evaluated once. The diagnostic column is what "
            "choosing the epoch on test (the seed study's selection) gives on the same runs (—: test was not scored "
            "at each evaluation); its excess over ours is the optimism of that selection, not a result.\n"
        )
    rows = []
    cells = {(g.entry.name, g.column): g for g in groups if g.entry.table == 2 and not g.variant}
    for entry in study.entries:
        if entry.table != 2 or entry.published is None:
            continue
        pub = PUBLISHED_TABLE2[entry.published]
        row = [f"{entry.name} ({entry.published})"]
        for column in TABLE2_COLUMNS:
            group = cells.get((entry.name, column))
            row += [_acc(group.stats() if group else None), f"{pub[column]:.2f}"]
        rows.append(row)
    if rows:
        header = ["Model"] + [f"{COLUMN_TITLES[c]} {who}" for c in TABLE2_COLUMNS for who in ("ours", "published")]
        parts.append("Table 2\n\n" + markdown_table(header, rows, "lrrrrrr"))
    return "\n".join(parts)
