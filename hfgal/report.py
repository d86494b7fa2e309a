"""Study report: Table 1, Table 2, variant table, accuracy-vs-cost plots, best confusion matrix, report.md, push.

Everything is computed from the `test` metrics of each run's results.json (the best-on-validation checkpoint,
evaluated once on test), so every number in the tables can be traced to the runs it averages.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import shutil
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .constants import GZ10_CITATION, GZ10_CLASSES, HFGAL_CITATION
from .study import ERROR_FILE, read_results
from .study_plan import (
    PUBLISHED_TABLE1,
    PUBLISHED_TABLE2,
    STUDY_FILE,
    TABLE2_COLUMNS,
    Entry,
    PlannedRun,
    Study,
    load_study,
)
from .utils import HfgalError, atomic_output_dir, output_lock

REPORT_DIR = "report"
PLOTS = ("accuracy_vs_params.png", "accuracy_vs_co2.png", "confusion_matrix_best.png")
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
    results: list[dict] = dataclasses.field(default_factory=list)
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
        acc = [100 * r["test"]["accuracy"] for r in self.results]
        n = len(acc)
        mean = statistics.fmean(acc)
        std = statistics.stdev(acc) if n > 1 else None
        if n > 1:
            from scipy.stats import t

            half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
            ci, ci_kind = (mean - half, mean + half), "seeds"
        else:
            lo, hi = self.results[0]["test"].get("accuracy_ci95") or (math.nan, math.nan)
            ci, ci_kind = (100 * lo, 100 * hi), "bootstrap"

        def avg(get) -> float:
            values = [get(r) for r in self.results]
            values = [float(v) for v in values if v is not None]
            return statistics.fmean(values) if values else math.nan

        return {
            "n_seeds": n,
            "seeds": [r.get("seed") for r in self.results],
            "accuracy_mean": mean,
            "accuracy_std": std,
            "accuracy_ci95_low": ci[0],
            "accuracy_ci95_high": ci[1],
            "ci_kind": ci_kind,
            "macro_f1_mean": avg(lambda r: 100 * r["test"]["macro_f1"]),
            "balanced_accuracy_mean": avg(lambda r: 100 * r["test"]["balanced_accuracy"]),
            "params_m": avg(lambda r: r.get("params_total", math.nan) / 1e6),
            "co2_kg_mean": avg(lambda r: (r.get("carbon") or {}).get("emissions_kg")),
            "energy_kwh_mean": avg(lambda r: (r.get("carbon") or {}).get("energy_kwh")),
            "train_seconds_mean": avg(lambda r: r.get("train_seconds")),
            "images_per_second_mean": avg(lambda r: r.get("train_images_per_second")),
        }


def collect_groups(study: Study, out_dir: Path) -> list[Group]:
    """Group the study's runs by (entry, column, variant) and read each run's results or error."""
    groups: dict[tuple, Group] = {}
    entries = {e.name: e for e in study.entries}
    for run in study.runs:
        key = (run.entry, run.column, run.variant)
        group = groups.setdefault(key, Group(entries[run.entry], run.column, run.variant, []))
        group.runs.append(run)
        run_dir = out_dir / "runs" / run.slug
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


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
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
]


def _stat_row(group: Group, stats: dict | None) -> dict:
    row = {field: (stats or {}).get(field) for field in _STAT_FIELDS}
    row["n_seeds"] = (stats or {}).get("n_seeds", 0)
    row["runs"] = " ".join(r.slug for r in group.runs)
    row["failed"] = len(group.failed)
    return row


# --------------------------------------------------------------------------- tables


def table1(groups: list[Group]) -> tuple[str, str]:
    """Table 1 (one row per pretrained checkpoint) as markdown and CSV; accuracies in %."""
    rows, csv_rows = [], []
    footnote = False
    for group in groups:
        if group.entry.table != 1 or group.variant:
            continue
        s = group.stats()
        ci = "—"
        if s:
            ci = f"[{s['accuracy_ci95_low']:.2f}, {s['accuracy_ci95_high']:.2f}]"
            if s["ci_kind"] == "bootstrap":
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
    md = _markdown_table(header, rows, "llrrrrrrrr")
    md += (
        "\nMean ± sample standard deviation over seeds of the test accuracy; 95 % CI: Student-t interval of the "
        "seed mean" + ("; † one seed: the test-set bootstrap interval of that run" if footnote else "") + ". "
        "CO2 (kg CO2eq) and time (training wall-clock) are means per run.\n"
    )
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
    md = _markdown_table(header, rows, "lrrr")
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
        settings = {k: v for k, v in group.runs[0].args.items() if k in ("d4_augment", "tta", "linear_probe")}
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
                **{k: settings.get(k) for k in ("d4_augment", "tta", "linear_probe")},
                "delta_to_base": delta,
                **_stat_row(group, s),
            }
        )
    header = ["Model", "Variant", "Settings", "Test acc. %", "Δ vs base", "Macro-F1 %", "CO2 (kg)", "Seeds"]
    md = _markdown_table(header, rows, "lllrrrrr")
    md += "\nEach variant changes one setting of the base run; Δ is the difference of seed means to the base.\n"
    fields = ["model", "column", "variant", "d4_augment", "tta", "linear_probe", "delta_to_base", *_STAT_FIELDS]
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
    return _markdown_table(header, rows, "rllrrrrrr")


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
            "Acc. % published",
            "Δ",
            "Params ours",
            "Params published",
            "CO2 kg ours",
            "CO2 kg published",
            "Time ours",
            "Time published",
        ]
        parts.append("Table 1\n\n" + _markdown_table(header, rows, "lrrrrrrrrr"))
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
        parts.append("Table 2\n\n" + _markdown_table(header, rows, "lrrrrrr"))
    return "\n".join(parts)


# --------------------------------------------------------------------------- plots


def plot_accuracy_vs(groups: list[Group], x_key: str, xlabel: str, path: Path, title: str) -> Path | None:
    """Scatter of test accuracy (mean, error bar = std over seeds) against a cost, one labelled point per model."""
    points = []
    for group in groups:
        s = group.stats()
        if s and not group.variant and not math.isnan(s[x_key]):
            points.append((s[x_key], s["accuracy_mean"], s["accuracy_std"] or 0.0, group))
    if not points:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    styles = {
        None: ("o", "C0", "Table 1"),
        "none": ("s", "C3", "Table 2: no pretraining"),
        "imagenet": ("^", "C1", "Table 2: ImageNet"),
        "zoobot": ("D", "C2", "Table 2: Zoobot"),
    }
    seen, placed = set(), []
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_span, y_span = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    for x, y, err, group in points:
        marker, color, legend = styles[group.column]
        ax.errorbar(x, y, yerr=err, fmt=marker, color=color, capsize=3, label=None if legend in seen else legend)
        seen.add(legend)
        # Models at (nearly) the same spot get their labels stacked instead of printed over each other.
        near = sum(abs(x - px) < 0.03 * x_span and abs(y - py) < 0.03 * y_span for px, py in placed)
        placed.append((x, y))
        ax.annotate(group.label, (x, y), textcoords="offset points", xytext=(5, 4 - 11 * near), fontsize=8)
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Test accuracy % (mean ± std over seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, format="png")
    return path


def plot_best_confusion(groups: list[Group], path: Path) -> tuple[Group, list[dict]] | None:
    """Confusion matrix summed over the seeds of the most accurate model, and its most confused class pairs."""
    from .metrics import most_confused_pairs, plot_confusion_matrix

    ranked = [(g.stats()["accuracy_mean"], i, g) for i, g in enumerate(groups) if g.results]
    if not ranked:
        return None
    best = max(ranked, key=lambda t: (t[0], -t[1]))[2]
    matrices = [r["test"]["confusion_matrix"] for r in best.results]
    size = len(matrices[0])
    confusion = [[sum(m[i][j] for m in matrices) for j in range(size)] for i in range(size)]
    names = list((best.results[0]["test"].get("per_class") or {}).keys())
    names = names if len(names) == size else list(GZ10_CLASSES[:size])
    seeds = ", ".join(str(r.get("seed")) for r in best.results)
    plot_confusion_matrix(confusion, names, path, title=f"{best.label}: test confusion, seeds {seeds} summed")
    return best, most_confused_pairs(confusion, names, k=5)


# --------------------------------------------------------------------------- report


def _run_facts(groups: list[Group]) -> str:
    results = [r for g in groups for r in g.results]
    if not results:
        return ""
    first = results[0]
    hw = first.get("hardware") or {}
    carbon = first.get("carbon") or {}
    versions = first.get("versions") or {}
    device = f"{hw.get('gpu_count')}× {hw.get('gpu')}" if hw.get("gpu") else f"CPU {hw.get('cpu', '?')}"
    ver = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    return (
        f"Hardware of the first run: {device}, {hw.get('num_processes', 1)} process(es). Carbon: codecarbon "
        f"offline tracker, country {carbon.get('country_iso_code')}, mode {carbon.get('tracking_mode')}. "
        f"Versions: {ver}.\n"
    )


def build_report(study_dir: str | os.PathLike) -> dict[str, Any]:
    """Compute every table of a study folder (no files written).

    Returns:
        A mapping with the study, groups and markdown/CSV texts: table1, table2, variants, published.
    """
    out_dir = Path(study_dir).absolute()
    if not (out_dir / STUDY_FILE).is_file():
        raise HfgalError(f"{out_dir} has no {STUDY_FILE}; pass a folder written by recipes/study.py")
    study = load_study(out_dir / STUDY_FILE)
    groups = collect_groups(study, out_dir)
    has = {t: any(e.table == t for e in study.entries) for t in (1, 2)}
    return {
        "study": study,
        "groups": groups,
        "table1": table1(groups) if has[1] else None,
        "table2": table2(groups, study) if has[2] else None,
        "variants": variants_table(groups),
        "published": published_comparison(groups, study),
        "leaderboard": leaderboard(groups),
    }


def write_report(study_dir: str | os.PathLike) -> Path:
    """Write `<study_dir>/report/`: tables (md + csv), plots, the best model's confusion matrix and report.md.

    The folder is built aside and swapped in whole, so an interrupted report leaves the previous complete one.

    Args:
        study_dir: folder written by recipes/study.py.

    Returns:
        Path of report.md.
    """
    return _write_report(Path(study_dir).absolute())[0]


def _write_report(out_dir: Path) -> tuple[Path, dict[str, Any]]:
    built = build_report(out_dir)
    study, groups = built["study"], built["groups"]
    with output_lock(out_dir / REPORT_DIR, "study report"), atomic_output_dir(out_dir / REPORT_DIR, True) as tmp:
        sections = [f"# Study `{study.name}`\n", f"{study.description}\n" if study.description else ""]
        finished = sum(len(g.results) for g in groups)
        failed = [item for g in groups for item in g.failed]
        pending = [run for g in groups for run in g.pending]
        sections.append(
            f"Dataset `{study.dataset}`, seeds {', '.join(map(str, study.seeds))}: {finished} of {len(study.runs)} "
            f"runs finished, {len(failed)} failed, {len(pending)} not run yet. All numbers are test-split metrics of "
            "the best-on-validation checkpoint, read from each run's `results.json`.\n"
        )
        sections.append(_run_facts(groups))
        if built["leaderboard"]:
            sections.append(f"## Leaderboard\n\n{built['leaderboard']}")
        for key, title in (
            ("table1", "Table 1: pretrained backbones"),
            ("table2", "Table 2: pretraining"),
            ("variants", "Variants"),
        ):
            if built[key]:
                md, text = built[key]
                (tmp / f"{key}.md").write_text(md)
                (tmp / f"{key}.csv").write_text(text)
                sections.append(f"## {title}\n\n{md}")
        if built["published"]:
            sections.append(f"## Compared with the seed study (published numbers)\n\n{built['published']}")
        plots = [
            plot_accuracy_vs(
                groups,
                "params_m",
                "Parameters (M)",
                tmp / "accuracy_vs_params.png",
                "GZ10 test accuracy vs model size",
            ),
            plot_accuracy_vs(
                groups,
                "co2_kg_mean",
                "CO2 per run (kg CO2eq)",
                tmp / "accuracy_vs_co2.png",
                "GZ10 test accuracy vs training emissions",
            ),
        ]
        if any(plots):
            sections.append("## Accuracy and cost\n\n" + "".join(f"![{p.stem}]({p.name})\n" for p in plots if p))
        best = plot_best_confusion(groups, tmp / "confusion_matrix_best.png")
        if best:
            group, pairs = best
            rows = [[p["true"], p["predicted"], p["count"], f"{100 * p['rate']:.1f}"] for p in pairs]
            sections.append(
                f"## Confusions of the best model ({group.label})\n\n"
                "![confusion matrix](confusion_matrix_best.png)\n\nMost confused class pairs (seeds summed):\n\n"
                + _markdown_table(["True class", "Predicted as", "Count", "% of true class"], rows, "llrr")
            )
        if failed:
            lines = []
            for run, error in failed:
                tail = "\n".join(error.strip().splitlines()[-12:])
                first = (error.splitlines() or ["failed (empty error.txt)"])[0]
                lines.append(f"- `{run.slug}`: {first}\n\n```text\n{tail}\n```\n")
            sections.append("## Failed runs\n\nRe-running the study retries them.\n\n" + "\n".join(lines))
        if pending:
            sections.append("## Not run yet\n\n" + "".join(f"- `{run.slug}`\n" for run in pending))
        if any(e.table == 2 for e in study.entries):
            sections.append(f"## Caveat on the Zoobot column\n\n{ZOOBOT_CAVEAT}\n")
        (tmp / "report.md").write_text("\n".join(s for s in sections if s))
        _share_permissions(tmp)
    return out_dir / REPORT_DIR / "report.md", built


def _share_permissions(folder: Path) -> None:
    # Temporary folders and files are created owner-only; a report is meant to be read by the whole group.
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


# --------------------------------------------------------------------------- push


def stage_study(study_dir: str | os.PathLike, staging: str | os.PathLike, repo_id: str) -> list[str]:
    """Fill `staging` with what a study dataset repo holds: card, study.yaml, report files, every results.json.

    Weights, checkpoints and logs are never staged. Returns the staged paths (relative, sorted).
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    from .utils import hub_card_template

    out_dir, staging = Path(study_dir).absolute(), Path(staging)
    report_md, built = _write_report(out_dir)
    study, groups = built["study"], built["groups"]
    for path in report_md.parent.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, staging / path.name)
    shutil.copy2(out_dir / STUDY_FILE, staging / STUDY_FILE)
    for group in groups:
        for run in group.runs:
            results = out_dir / "runs" / run.slug / "results.json"
            if read_results(results.parent) is not None:
                (staging / "runs" / run.slug).mkdir(parents=True)
                shutil.copy2(results, staging / "runs" / run.slug / "results.json")
    configs = [{"config_name": key, "data_files": f"{key}.csv"} for key in ("table1", "table2", "variants")]
    configs = [c for c in configs if (staging / c["data_files"]).is_file()]
    dataset = study.dataset
    card_data = DatasetCardData(
        pretty_name=f"hfgal study {study.name}: GZ10 backbone leaderboard",
        license="apache-2.0",
        tags=["astronomy", "galaxy-morphology", "galaxy10", "benchmark", "leaderboard", "hfgal"],
        task_categories=["image-classification"],
        size_categories=["n<1K"],
        source_datasets=[dataset] if "/" in dataset and not Path(dataset).exists() else None,
        configs=configs or None,
    )
    card = DatasetCard.from_template(
        card_data,
        template_path=str(hub_card_template("study_card.md")),
        study=study,
        repo_id=repo_id,
        leaderboard=built["leaderboard"],
        first_config=configs[0]["config_name"] if configs else None,
        hfgal_citation=f"{HFGAL_CITATION}\n{GZ10_CITATION}",
        finished=sum(len(g.results) for g in groups),
        failed=sum(len(g.failed) for g in groups),
        table1=built["table1"][0] if built["table1"] else None,
        table2=built["table2"][0] if built["table2"] else None,
        variants=built["variants"][0] if built["variants"] else None,
        published=built["published"],
        plots=[name for name in PLOTS if (staging / name).is_file()],
        zoobot_caveat=ZOOBOT_CAVEAT if built["table2"] else None,
    )
    card.save(staging / "README.md")
    return sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())


def push_study(study_dir: str | os.PathLike, repo_id: str, *, private: bool | None = None) -> str:
    """Publish a study as a Hub dataset repo in one commit: leaderboard card, tables, plots, report, results.json.

    Args:
        study_dir: folder written by recipes/study.py.
        repo_id: `namespace/name` of the dataset repo (created if missing).
        private: visibility of a newly created repo.

    Returns:
        The commit URL.
    """
    from .hub import upload_one_commit, validate_repo_id

    validate_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="hfgal-study-push-") as staging:
        stage_study(study_dir, staging, repo_id)
        study_name = load_study(Path(study_dir).absolute() / STUDY_FILE).name
        return upload_one_commit(
            staging,
            repo_id,
            repo_type="dataset",
            private=private,
            commit_message=f"Upload hfgal study {study_name}: tables, plots, report, results",
        )
