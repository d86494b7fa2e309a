"""Study plans: a study YAML checked and expanded into one `PlannedRun` per (model, pretraining, variant, seed).

A study YAML names models (Table 1: one pretrained checkpoint per row; Table 2: one architecture per row with
no-pretraining / ImageNet / Zoobot columns), seeds and optional variants. `resolve_study_config` checks it against
the schema (`hfgal.study.schema`: unknown keys are one-line errors) and folds in its `include`s and recipe configs;
`plan_study` gives each run its own folder name and exact recipe arguments. Running them is
`hfgal.study.runner`'s job.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import HfgalError
from ..io import shipped_file
from .protocols import Protocol, check_one_architecture, protocol
from .schema import StudyFile, Table1Row, Table2Row, validate_study

# A study folder: study.yaml (the resolved config), runs/<slug>/ (one fine-tuning run folder each, plus the runner's
# record of how it was launched, its log and, when it failed, error.txt) and report/.
STUDY_FILE = "study.yaml"
RUNS_DIR = "runs"
RUN_RECORD = "study_run.json"  # the command a run folder was launched with, to spot stale runs
RUN_LOG = "study_run.log"
ERROR_FILE = "error.txt"
ZOOBOT_UNAVAILABLE = "not published by Zoobot"


# --------------------------------------------------------------------------- plan


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One fine-tuning run of a study: what it trains and where its run folder lives.

    `column` is the Table 2 pretraining column (`none`, `imagenet`, `zoobot`) or None for Table 1 rows;
    `variant` is "" for the base run or e.g. "tta-true"; `args` holds every finetune flag except the ones
    built from the other fields.
    """

    slug: str
    entry: str
    family: str
    table: int
    column: str | None
    variant: str
    seed: int
    model: str
    init: str
    dataset: str
    args: dict[str, Any]
    config: str | None = None
    model_config_overrides: dict[str, Any] | None = None
    # The run whose training this one shares: they differ in evaluation only (the `tta` variant vs its base run).
    shares_training_of: str | None = None

    def run_dir(self, study_dir: str | os.PathLike) -> Path:
        """This run's folder inside a study folder."""
        return Path(study_dir) / RUNS_DIR / self.slug

    def recipe_args(self, output_dir: str | os.PathLike) -> list[str]:
        """The finetune flags of this run (without launcher and recipe path)."""
        argv = ["--config", self.config] if self.config else []
        argv += ["--model", self.model, "--init", self.init, "--seed", str(self.seed)]
        argv += ["--output_dir", str(output_dir), "--dataset", self.dataset]
        if self.model_config_overrides:
            argv += ["--model_config_overrides", json.dumps(self.model_config_overrides, sort_keys=True)]
        for key, value in self.args.items():
            argv += [f"--{key}", *_flag_values(value)]
        return argv


@dataclasses.dataclass(frozen=True)
class Column:
    """A Table 2 cell definition: the model of one pretraining column, or why it is unavailable."""

    name: str
    model: str | None
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class Entry:
    """A row of Table 1 or Table 2 as the study YAML declares it."""

    name: str
    family: str
    table: int
    published: str | None
    model: str | None = None  # Table 1
    columns: tuple[Column, ...] = ()  # Table 2
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class Study:
    """A parsed study: its resolved config (what `study.yaml` records), rows and planned runs."""

    name: str
    description: str
    dataset: str
    seeds: tuple[int, ...]
    entries: tuple[Entry, ...]
    runs: tuple[PlannedRun, ...]
    config: dict[str, Any]
    protocol: Protocol | None = None


def _flag_values(value: Any) -> list[str]:
    # HfArgumentParser wants explicit booleans and space-separated lists.
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _flag_values(item)]
    if isinstance(value, dict):
        return [json.dumps(value, sort_keys=True)]
    return [str(value)]


# --------------------------------------------------------------------------- finding and reading study YAMLs


def shipped_studies() -> list[str]:
    """Names of the study YAMLs shipped with hfgal (`recipes/study/*.yaml`, `hfgal.recipes` in a wheel)."""
    anchor = shipped_file("recipes", "study/smoke.yaml")  # the offline check ships with every install
    return sorted(path.stem for path in anchor.parent.glob("*.yaml")) if anchor else []


def find_study_config(config: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """The study YAML that `config` names: a path (relative to `base`, by default the working directory), or the
    name of a study shipped with hfgal (`full`, `smoke`, ...), found in an install as in a checkout.

    Raises:
        HfgalError: a name that is neither a file nor a shipped study.
    """
    text = str(config)
    path = Path(base or ".") / text
    if path.exists() or "/" in text or os.sep in text or text.endswith((".yaml", ".yml")):
        return path.resolve()
    shipped = shipped_file("recipes", f"study/{text}.yaml")
    if shipped is None:
        raise HfgalError(
            f"study config {text!r}: no such file and no study of that name shipped with hfgal; pass a path to a "
            f"study YAML or one of {', '.join(shipped_studies())}"
        )
    return shipped


def _recipe_config(value: str | None, base: Path) -> str | None:
    # A recipe YAML next to the study YAML (a path, resolved against its folder) or a recipe shipped with hfgal by
    # name (`offline`), which the recipe finds itself.
    if value is None or ("/" not in value and not value.endswith((".yaml", ".yml"))):
        return value
    path = Path(value)
    return str(path if path.is_absolute() else (base / path).resolve())


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        names = ", ".join(shipped_studies())
        raise HfgalError(f"study config {path} not found; pass a study YAML or a shipped study's name ({names})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise HfgalError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise HfgalError(f"{path}: a study YAML must be a mapping with name, runs, ...; fix the file")
    return data


def resolve_study_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a study YAML (and its `include`s) into the self-contained config that `study.yaml` records.

    The file is checked against the schema (`hfgal.study.schema`): an unknown key or a bad value raises
    `HfgalError` naming the file, the place and the problem. Included files contribute their runs, with their own
    `defaults` and `config` folded into each run so they keep meaning the same thing; relative paths (`config`,
    `include`) are resolved against the YAML's folder, so shipped studies work from an install too.

    Args:
        path: the study YAML.

    Returns:
        A mapping with name, description, protocol, dataset, seeds, defaults, config, variants, variant_args, runs.
    """
    path = Path(path).resolve()
    raw = _read_yaml(path)
    study = validate_study(raw, path)
    base = path.parent
    runs = [dict(run) for run in raw.get("runs") or []]  # recorded as written, recipe configs resolved
    for run in runs:
        if run.get("config"):
            run["config"] = _recipe_config(run["config"], base)
    for include in study.include:
        runs += _included_runs(resolve_study_config(find_study_config(include, base)))
    if not runs:
        raise HfgalError(f"{path}: the study has no runs; add entries under 'runs' or an 'include'")
    chosen = protocol(study.protocol, str(path))
    config = {
        "name": study.name,
        "description": study.description or "",
        "protocol": study.protocol,
        # A protocol brings its data source; a study may still name its own (a local copy, say).
        "dataset": study.dataset or (chosen.dataset if chosen else None),
        "seeds": study.seeds,
        "defaults": study.defaults,
        "config": _recipe_config(study.config, base),
        "variants": study.variants,
        "variant_args": study.variant_args,
        "runs": runs,
    }
    if not config["dataset"]:
        raise HfgalError(f"{path}: 'dataset' must name the dataset (Hub id, folder or synthetic:N)")
    return config


def _included_runs(included: dict[str, Any]) -> list[dict]:
    """The runs of an included study, each carrying its file's defaults, recipe config and variants."""
    runs = []
    for run in included["runs"]:
        run = dict(run)
        run["args"] = {**included["defaults"], **(run.get("args") or {})}
        run["config"] = run.get("config") or included["config"]
        if included["variants"] and "variants" not in run:
            run["variants"] = included["variants"]
            run["variant_args"] = {**included["variant_args"], **(run.get("variant_args") or {})}
        runs.append({k: v for k, v in run.items() if v not in (None, {}) or k == "table"})
    return runs


# --------------------------------------------------------------------------- expanding the rows


class _Cell(NamedTuple):
    """What one table cell trains: its column (None for Table 1), model, init, flags and config overrides."""

    column: str | None
    model: str
    init: str
    args: dict[str, Any]
    overrides: dict[str, Any] | None


def plan_study(config: dict[str, Any], source: str = "study.yaml") -> Study:
    """Expand a resolved study config into its rows and one `PlannedRun` per (model, pretraining, variant, seed).

    Args:
        config: the mapping from `resolve_study_config` (or a recorded `study.yaml`).
        source: file name used in error messages.

    Returns:
        The `Study`; run order is entry by entry, column by column, variant by variant, then seed.
    """
    study = validate_study(config, source)
    chosen = protocol(study.protocol, source)
    dataset = study.dataset or (chosen.dataset if chosen else None)
    if not dataset:
        raise HfgalError(f"{source}: 'dataset' must name the dataset (Hub id, folder or synthetic:N)")
    # The protocol's settings come first: the study's defaults, rows, cells and variants may refine them.
    defaults = {**(chosen.args if chosen else {}), **study.defaults}
    entries, runs = [], []
    for row in study.runs:
        if any(entry.name == row.name for entry in entries):
            raise HfgalError(f"{source}: two runs are named {row.name!r}; give each row its own name")
        args = {**defaults, **row.args}
        entry, cells = _table1_cells(row, args) if row.table == 1 else _table2_cells(row, args, source)
        entries.append(entry)
        runs += _runs_of_row(row, cells, study, dataset, source)
    return Study(
        name=study.name,
        description=study.description or "",
        dataset=dataset,
        seeds=tuple(study.seeds),
        entries=tuple(entries),
        runs=tuple(_share_training(runs)),
        config=config,
        protocol=chosen,
    )


def _table1_cells(row: Table1Row, args: dict[str, Any]) -> tuple[Entry, list[_Cell]]:
    entry = Entry(row.name, row.family or row.name, 1, row.published, model=row.model, note=row.note)
    return entry, [_Cell(None, row.model, row.init, args, row.model_config_overrides)]


def _table2_cells(row: Table2Row, args: dict[str, Any], source: str) -> tuple[Entry, list[_Cell]]:
    """The columns of a Table 2 row (an unavailable one flagged with its note) and the cells that train."""
    columns, cells, architectures = [], [], {}
    for column, cell in row.pretraining.cells():
        note = cell.note or (ZOOBOT_UNAVAILABLE if column == "zoobot" and cell.model is None else None)
        columns.append(Column(column, cell.model, note))
        if cell.model is None:
            continue
        architectures[column] = (cell.model, cell.architecture or row.architecture)
        init = cell.init or ("scratch" if column == "none" else "pretrained")
        overrides = {**(row.model_config_overrides or {}), **(cell.model_config_overrides or {})} or None
        cells.append(_Cell(column, cell.model, init, {**args, **cell.args}, overrides))
    check_one_architecture(row.name, architectures, source)
    return Entry(row.name, row.family or row.name, 2, row.published, columns=tuple(columns)), cells


def _runs_of_row(
    row: Table1Row | Table2Row, cells: list[_Cell], study: StudyFile, dataset: str, source: str
) -> list[PlannedRun]:
    """One run per cell, variant and seed, in that order."""
    # A row's own `variants` (even an empty one) replaces the study's.
    variants = (row.variants or {}) if "variants" in row.model_fields_set else study.variants
    grid = _variant_grid(variants, {**study.variant_args, **row.variant_args}, row.name, source)
    return [
        PlannedRun(
            slug="__".join(p for p in (row.name, cell.column, variant, f"seed{seed}") if p),
            entry=row.name,
            family=row.family or row.name,
            table=row.table,
            column=cell.column,
            variant=variant,
            seed=seed,
            model=cell.model,
            init=cell.init,
            dataset=dataset,
            args={**cell.args, **extra},
            config=row.config or study.config,
            model_config_overrides=cell.overrides,
        )
        for cell in cells
        for variant, extra in grid
        for seed in study.seeds
    ]


def _share_training(runs: list[PlannedRun]) -> list[PlannedRun]:
    """Mark each run that differs from its cell's base run in `tta` alone: it evaluates the base run's model.

    Test-time averaging changes only the final evaluation, so training it again would give the same model (same
    seed, same settings) for the compute and CO2 of a whole run.
    """
    base = {(r.entry, r.column, r.seed): r for r in runs if r.variant == ""}

    def training(run: PlannedRun) -> tuple:
        args = {k: v for k, v in run.args.items() if k != "tta"}
        return (run.model, run.init, run.dataset, run.config, json.dumps(run.model_config_overrides), args)

    shared = []
    for run in runs:
        twin = base.get((run.entry, run.column, run.seed))
        if run.variant and twin and run.args.get("tta") != twin.args.get("tta") and training(run) == training(twin):
            run = dataclasses.replace(run, shares_training_of=twin.slug)
        shared.append(run)
    return shared


def _variant_grid(variants: dict[str, list[bool]], variant_args: dict, name: str, source: str):
    """One-factor-at-a-time variants: the base run takes each list's first value, each other value one run."""
    if not variants:
        return [("", {})]
    base = {key: values[0] for key, values in variants.items()}
    grid = [("", dict(base))]
    for key, values in variants.items():
        for value in values[1:]:
            grid.append((f"{key}-{str(value).lower()}", {**base, key: value}))
    labels = {label for label, _ in grid if label}
    for label in variant_args:
        if label not in labels:
            raise HfgalError(
                f"{source}: variant_args names {label!r}, which is not a variant of run {name!r}; "
                f"use one of {', '.join(sorted(labels)) or '(none)'}"
            )
    return [(label, {**variant_args.get(label, {}), **values}) for label, values in grid]


def load_study(path: str | os.PathLike) -> Study:
    """Parse and plan a study: a YAML file, a shipped study's name (`full`) or a study folder (its study.yaml)."""
    path = Path(path)
    path = path / STUDY_FILE if path.is_dir() else find_study_config(path)
    return plan_study(resolve_study_config(path), source=str(path))
