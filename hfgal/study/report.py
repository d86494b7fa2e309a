"""Study report: the tables of `hfgal.study.tables`, accuracy-vs-cost plots, the best confusion matrix, report.md.

Everything is computed from the `test` metrics of each run's results.json (the best-on-validation checkpoint,
evaluated once on test), so every number in the report can be traced to the runs it averages.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..constants import GZ10_CLASSES
from ..errors import HfgalError
from ..io import atomic_output_dir, output_lock
from .plan import STUDY_FILE, Study, load_study
from .tables import (
    ZOOBOT_CAVEAT,
    Group,
    collect_groups,
    is_equivariant,
    leaderboard,
    markdown_table,
    published_comparison,
    table1,
    table2,
    variants_table,
)

REPORT_DIR = "report"
PLOTS = ("accuracy_vs_params.png", "accuracy_vs_co2.png", "confusion_matrix_best.png")


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
        "equivariant": ("P", "C4", "equivariant (from scratch)"),
    }
    seen, placed = set(), []
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_span, y_span = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    for x, y, err, group in points:
        marker, color, legend = styles["equivariant" if is_equivariant(group) else group.column]
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
    from ..runs import most_confused_pairs, plot_confusion_matrix

    ranked = [(g.stats()["accuracy_mean"], i, g) for i, g in enumerate(groups) if g.results]
    if not ranked:
        return None
    best = max(ranked, key=lambda t: (t[0], -t[1]))[2]
    matrices = [r.test.confusion_matrix for r in best.results]
    size = len(matrices[0])
    confusion = [[sum(m[i][j] for m in matrices) for j in range(size)] for i in range(size)]
    names = list(best.results[0].test.per_class)
    names = names if len(names) == size else list(GZ10_CLASSES[:size])
    seeds = ", ".join(str(r.seed) for r in best.results)
    plot_confusion_matrix(confusion, names, path, title=f"{best.label}: test confusion, seeds {seeds} summed")
    return best, most_confused_pairs(confusion, names, k=5)


# --------------------------------------------------------------------------- report


def protocol_box(study: Study, groups: list[Group]) -> str:
    """What produced the numbers, read from the runs' own records: data source, split, selection rule, recipe,
    seeds, how runs shared the machine and what their energy counts, and which cells are stand-ins."""
    records = [r for g in groups for r in g.results]
    lines = [f"Protocol: **{study.protocol.name}**." if study.protocol else "Protocol: none named (the study's own)."]

    def values(get) -> str:
        found = sorted({str(get(r)) for r in records if get(r) is not None})
        return ", ".join(f"`{v}`" for v in found) or "n/a"

    lines.append(f"Data: {values(lambda r: r.dataset)} (revision {values(lambda r: r.dataset_revision)}).")
    lines.append(f"Split: {values(lambda r: r.split or r.split_scheme)}.")
    selection = "checkpoint with the best validation accuracy; the test split evaluated once with it"
    selection = study.protocol.selection if study.protocol else selection
    lines.append(f"Selection: {selection}.")
    if study.protocol:
        lines.append(f"Recipe: {study.protocol.recipe}.")
    lines.append(
        "Settings as run: learning rate "
        + values(lambda r: r.training.learning_rate)
        + "; effective batch "
        + values(lambda r: r.training.effective_batch_size)
        + "; schedule "
        + values(lambda r: r.training.lr_scheduler_type)
        + "; label smoothing "
        + values(lambda r: r.training.label_smoothing_factor)
        + "; D4 augmentation "
        + values(lambda r: r.d4_augment)
        + "; images "
        + values(lambda r: r.preprocessing)
        + "."
    )
    lines.append(f"Seeds: {', '.join(map(str, study.seeds))}.")
    if records:
        shared = max(r.carbon.concurrency for r in records)
        modes = values(lambda r: r.carbon.tracking_mode)
        resumed = sum(r.carbon.segments > 1 for r in records)
        sharing = (
            f"up to {shared} runs shared a machine, each booking its share (codecarbon {modes} tracking)"
            if shared > 1
            else f"each run had its machine to itself (codecarbon {modes} tracking)"
        )
        lines.append(
            f"Costs: {sharing}; {resumed} run(s) were interrupted and resumed, their time and CO2 counting every "
            "segment"
            + (
                "; some resumed runs could not account for their first segments"
                if any(not r.carbon.complete for r in records)
                else ""
            )
            + "."
        )
    notes = sorted({f"{e.name} / {c.name}: {c.note}" for e in study.entries for c in e.columns if c.note})
    if notes:
        lines.append("Stand-ins and gaps: " + "; ".join(notes) + ".")
    return "## Protocol\n\n" + "".join(f"- {line}\n" for line in lines)


def _run_facts(groups: list[Group]) -> str:
    results = [r for g in groups for r in g.results]
    if not results:
        return ""
    first = results[0]
    hw, carbon = first.hardware, first.carbon
    ver = ", ".join(f"{k} {v}" for k, v in first.versions.items() if v)
    return (
        f"Hardware of the first run: {hw.describe()}, {hw.num_processes} process(es). Carbon: codecarbon "
        f"offline tracker, country {carbon.country_iso_code}. Versions: {ver}.\n"
    )


def build_report(study_dir: str | os.PathLike) -> dict[str, Any]:
    """Compute every table of a study folder (no files written).

    Returns:
        A mapping with the study, groups and markdown/CSV texts: table1, table2, variants, published.
    """
    out_dir = Path(study_dir).absolute()
    if not (out_dir / STUDY_FILE).is_file():
        raise HfgalError(f"{out_dir} has no {STUDY_FILE}; pass a folder written by `hfgal study run`")
    study = load_study(out_dir / STUDY_FILE)
    groups = collect_groups(study, out_dir)
    has = {t: any(e.table == t for e in study.entries) for t in (1, 2)}
    return {
        "study": study,
        "groups": groups,
        "table1": table1(groups) if any(g.entry.table == 1 and not is_equivariant(g) for g in groups) else None,
        "table2": table2(groups, study) if has[2] else None,
        "equivariant": table1(groups, equivariant=True) if any(map(is_equivariant, groups)) else None,
        "variants": variants_table(groups),
        "published": published_comparison(groups, study),
        "leaderboard": leaderboard(groups),
    }


def write_report(study_dir: str | os.PathLike) -> Path:
    """Write `<study_dir>/report/`: tables (md + csv), plots, the best model's confusion matrix and report.md.

    The folder is built aside and swapped in whole, so an interrupted report leaves the previous complete one.

    Args:
        study_dir: folder written by `hfgal study run` (or recipes/study.py).

    Returns:
        Path of report.md.
    """
    return write_report_files(Path(study_dir).absolute())[0]


REPORT_TABLES = (
    ("table1", "Table 1: pretrained backbones"),
    ("table2", "Table 2: pretraining"),
    ("equivariant", "Equivariant (from scratch)"),
    ("variants", "Variants"),
)


def write_report_files(out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """`write_report`, also returning what `build_report` computed (for publishing the study)."""
    built = build_report(out_dir)
    study, groups = built["study"], built["groups"]
    with output_lock(out_dir / REPORT_DIR, "study report"), atomic_output_dir(out_dir / REPORT_DIR, True) as tmp:
        sections = _summary_sections(study, groups, built["leaderboard"])
        for key, title in REPORT_TABLES:
            if built[key]:
                md, text = built[key]
                (tmp / f"{key}.md").write_text(md)
                (tmp / f"{key}.csv").write_text(text)
                sections.append(f"## {title}\n\n{md}")
        sections.append(_published_section(study, built["published"]))
        sections += _figure_sections(groups, tmp)
        sections += _outcome_sections(study, groups)
        (tmp / "report.md").write_text("\n".join(s for s in sections if s))
        _share_permissions(tmp)
    return out_dir / REPORT_DIR / "report.md", built


def _summary_sections(study: Study, groups: list[Group], leaderboard: str | None) -> list[str]:
    """The report's opening: title, what finished, the protocol box, the runs' hardware and the leaderboard."""
    finished = sum(len(g.results) for g in groups)
    failed = sum(len(g.failed) for g in groups)
    pending = sum(len(g.pending) for g in groups)
    return [
        f"# Study `{study.name}`\n",
        f"{study.description}\n" if study.description else "",
        f"Dataset `{study.dataset}`, seeds {', '.join(map(str, study.seeds))}: {finished} of {len(study.runs)} "
        f"runs finished, {failed} failed, {pending} not run yet. All numbers are test-split metrics of the "
        "best-on-validation checkpoint, read from each run's `results.json`.\n",
        protocol_box(study, groups),
        _run_facts(groups),
        f"## Leaderboard\n\n{leaderboard}" if leaderboard else "",
    ]


def _published_section(study: Study, published: str) -> str:
    """Our numbers beside the seed study's published ones, with how far they are comparable."""
    if not published:
        return ""
    if study.protocol is not None and study.protocol.name == "poster":
        intro = "Same protocol as the seed study, so the difference is the seed study's own spread.\n\n"
    else:
        intro = (
            "**Not comparable one for one:** the seed study ran another protocol (its Hub copy and split, its "
            "recipe, the best epoch on test); the differences mix protocol and model. "
            "`hfgal study run --config poster` reproduces its protocol.\n\n"
        )
    return f"## Compared with the seed study (published numbers)\n\n{intro}{published}"


def _figure_sections(groups: list[Group], folder: Path) -> list[str]:
    """Draw the accuracy-vs-cost plots and the best model's confusion matrix into `folder`; their sections."""
    sections = []
    plots = [
        plot_accuracy_vs(
            groups, "params_m", "Parameters (M)", folder / PLOTS[0], "GZ10 test accuracy vs model size"
        ),
        plot_accuracy_vs(
            groups, "co2_kg_mean", "CO2 per run (kg CO2eq)", folder / PLOTS[1],
            "GZ10 test accuracy vs training emissions",
        ),
    ]  # fmt: skip
    if any(plots):
        sections.append("## Accuracy and cost\n\n" + "".join(f"![{p.stem}]({p.name})\n" for p in plots if p))
    best = plot_best_confusion(groups, folder / PLOTS[2])
    if best:
        group, pairs = best
        rows = [[p["true"], p["predicted"], p["count"], f"{100 * p['rate']:.1f}"] for p in pairs]
        sections.append(
            f"## Confusions of the best model ({group.label})\n\n"
            f"![confusion matrix]({PLOTS[2]})\n\nMost confused class pairs (seeds summed):\n\n"
            + markdown_table(["True class", "Predicted as", "Count", "% of true class"], rows, "llrr")
        )
    return sections


def _outcome_sections(study: Study, groups: list[Group]) -> list[str]:
    """Failed runs (with their error's tail), runs not run yet, and the caveat on the Zoobot column."""
    sections = []
    failed = [item for g in groups for item in g.failed]
    if failed:
        lines = []
        for run, error in failed:
            tail = "\n".join(error.strip().splitlines()[-12:])
            first = (error.splitlines() or ["failed (empty error.txt)"])[0]
            lines.append(f"- `{run.slug}`: {first}\n\n```text\n{tail}\n```\n")
        sections.append("## Failed runs\n\nRe-running the study retries them.\n\n" + "\n".join(lines))
    pending = [run for g in groups for run in g.pending]
    if pending:
        sections.append("## Not run yet\n\n" + "".join(f"- `{run.slug}`\n" for run in pending))
    if any(e.table == 2 for e in study.entries):
        sections.append(f"## Caveat on the Zoobot column\n\n{ZOOBOT_CAVEAT}\n")
    return sections


def _share_permissions(folder: Path) -> None:
    # Temporary folders and files are created owner-only; a report is meant to be read by the whole group.
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)
