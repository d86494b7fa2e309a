"""Study plans: a study YAML checked and expanded into one `PlannedRun` per (model, pretraining, variant, seed).

A study YAML names models (Table 1: one pretrained checkpoint per row; Table 2: one architecture per row with
no-pretraining / ImageNet / Zoobot columns), seeds and optional variants. `load_study` checks every key (unknown
ones are one-line errors), resolves `include`s and recipe configs, and `plan_study` gives each run its own
folder name and exact recipe arguments. Running them is `hfgal.study.runner`'s job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import HfgalError
from .protocols import PUBLISHED_TABLE1, PUBLISHED_TABLE2, Protocol, check_one_architecture, protocol

DEFAULT_SEEDS = (0, 1, 2)
TABLE2_COLUMNS = ("none", "imagenet", "zoobot")
VARIANT_KEYS = ("d4_augment", "tta", "linear_probe")

# A study folder: study.yaml (the resolved config), runs/<slug>/ (one fine-tuning run folder each, plus the runner's
# record of how it was launched, its log and, when it failed, error.txt) and report/.
STUDY_FILE = "study.yaml"
RUNS_DIR = "runs"
RUN_RECORD = "study_run.json"  # the command a run folder was launched with, to spot stale runs
RUN_LOG = "study_run.log"
ERROR_FILE = "error.txt"

_STUDY_KEYS = {"name", "description", "dataset", "seeds", "defaults", "config", "runs", "include"}
_STUDY_KEYS |= {"variants", "variant_args", "protocol"}
_COMMON_ENTRY_KEYS = {"name", "family", "table", "args", "config", "model_config_overrides", "published"}
_COMMON_ENTRY_KEYS |= {"variants", "variant_args"}
_ENTRY_KEYS = {
    1: _COMMON_ENTRY_KEYS | {"model", "init", "note"},
    2: _COMMON_ENTRY_KEYS | {"pretraining", "architecture"},
}
_COLUMN_KEYS = {"model", "init", "args", "model_config_overrides", "note", "architecture"}
# Flags the runner sets itself for every run; a study sets them through the schema, not through `args`.
_RESERVED_ARGS = {"model", "model_name_or_path", "init", "seed", "output_dir", "dataset", "config"}
_RESERVED_ARGS |= {"resume_from_checkpoint", "model_config_overrides"}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_FLAG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
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


def _check_keys(mapping: Any, allowed: set[str], where: str, source: str) -> dict:
    if not isinstance(mapping, dict):
        raise HfgalError(f"{source}: {where} must be a mapping, got {type(mapping).__name__}; fix the study YAML")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise HfgalError(
            f"{source}: unknown key '{unknown[0]}' in {where}; allowed keys are {', '.join(sorted(allowed))}"
        )
    return mapping


def _check_args(args: Any, where: str, source: str) -> dict[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise HfgalError(f"{source}: {where} must be a mapping of finetune flags; fix the study YAML")
    for key in args:
        if not isinstance(key, str) or not _FLAG_RE.match(key):
            raise HfgalError(f"{source}: '{key}' in {where} is not a finetune flag name; use e.g. learning_rate")
        if key in _RESERVED_ARGS:
            raise HfgalError(
                f"{source}: '{key}' in {where} is set by the study runner; use the entry's model/init/config/"
                f"model_config_overrides keys or the study's dataset/seeds instead"
            )
    return dict(args)


def _resolve_path(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    path = Path(value)
    return str(path if path.is_absolute() else (base / path).resolve())


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise HfgalError(f"study config {path} not found; pass one of recipes/study/*.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise HfgalError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise HfgalError(f"{path}: a study YAML must be a mapping with name, runs, ...; fix the file")
    return data


def _check_variant_args(spec: Any, where: str, source: str) -> dict[str, dict]:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise HfgalError(f"{source}: {where} must map a variant label (e.g. linear_probe-true) to finetune flags")
    return {str(label): _check_args(args, f"{where}.{label}", source) for label, args in spec.items()}


def _check_entry(raw: Any, source: str) -> dict:
    table = raw.get("table") if isinstance(raw, dict) else None
    if table not in (1, 2):
        name = raw.get("name") if isinstance(raw, dict) else raw
        raise HfgalError(f"{source}: run {name!r} needs 'table: 1' or 'table: 2'")
    return _check_keys(raw, _ENTRY_KEYS[table], f"run {raw.get('name')!r} (table {table})", source)


def _resolve_variants(spec: Any, where: str, source: str) -> dict[str, list[bool]]:
    spec = _check_keys(spec or {}, set(VARIANT_KEYS), where, source)
    out = {}
    for key, values in spec.items():
        if not isinstance(values, list) or not values or not all(isinstance(v, bool) for v in values):
            raise HfgalError(f"{source}: {where}.{key} must be a list of true/false; e.g. [true, false]")
        if len(set(values)) != len(values):
            raise HfgalError(f"{source}: {where}.{key} repeats a value; list each of true/false once")
        out[key] = values
    return out


def resolve_study_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a study YAML (and its `include`s) into the self-contained config that `study.yaml` records.

    Every key is validated: an unknown key raises `HfgalError` naming the key and the file. Included files
    contribute their runs, with their own `defaults` and `config` folded into each run so they keep meaning
    the same thing; relative paths (`config`, `include`) are resolved against the YAML's folder.

    Args:
        path: the study YAML.

    Returns:
        A mapping with name, description, dataset, seeds, defaults, config, variants, variant_args and runs.
    """
    path = Path(path).resolve()
    raw = _check_keys(_read_yaml(path), _STUDY_KEYS, "the study", str(path))
    base = path.parent
    if not isinstance(raw.get("name"), str) or not _NAME_RE.match(raw["name"]):
        raise HfgalError(f"{path}: 'name' must be a lower-case slug like table1; set it in the study YAML")
    seeds = raw.get("seeds", list(DEFAULT_SEEDS))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise HfgalError(f"{path}: 'seeds' must be a non-empty list of non-negative integers, e.g. [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise HfgalError(f"{path}: 'seeds' lists a seed twice; list each seed once")
    runs = [dict(_check_entry(r, str(path))) for r in raw.get("runs") or []]
    for run in runs:
        if run.get("config"):
            run["config"] = _resolve_path(run["config"], base)
    for inc in raw.get("include") or []:
        sub = resolve_study_config(_resolve_path(inc, base))
        for run in sub["runs"]:
            # An included file's defaults, config and variants stay attached to its own runs.
            run = dict(run)
            run["args"] = {**sub["defaults"], **(run.get("args") or {})}
            run["config"] = run.get("config") or sub["config"]
            if sub["variants"] and "variants" not in run:
                run["variants"] = sub["variants"]
                run["variant_args"] = {**sub["variant_args"], **(run.get("variant_args") or {})}
            runs.append({k: v for k, v in run.items() if v not in (None, {}) or k == "table"})
    if not runs:
        raise HfgalError(f"{path}: the study has no runs; add entries under 'runs' or an 'include'")
    config = {
        "name": raw["name"],
        "description": str(raw.get("description") or ""),
        "protocol": raw.get("protocol"),
        # A protocol brings its data source; a study may still name its own (a local copy, say).
        "dataset": raw.get("dataset") or getattr(protocol(raw.get("protocol"), str(path)), "dataset", None),
        "seeds": seeds,
        "defaults": _check_args(raw.get("defaults"), "defaults", str(path)),
        "config": _resolve_path(raw.get("config"), base),
        "variants": _resolve_variants(raw.get("variants"), "variants", str(path)),
        "variant_args": _check_variant_args(raw.get("variant_args"), "variant_args", str(path)),
        "runs": runs,
    }
    if not isinstance(config["dataset"], str) or not config["dataset"]:
        raise HfgalError(f"{path}: 'dataset' must name the dataset (Hub id, folder or synthetic:N)")
    return config


def plan_study(config: dict[str, Any], source: str = "study.yaml") -> Study:
    """Expand a resolved study config into its rows and one `PlannedRun` per (model, pretraining, variant, seed).

    Args:
        config: the mapping from `resolve_study_config` (or a recorded `study.yaml`).
        source: file name used in error messages.

    Returns:
        The `Study`; run order is entry by entry, column by column, variant by variant, then seed.
    """
    config = _check_keys(config, _STUDY_KEYS, "the study", source)
    seeds = tuple(config.get("seeds") or DEFAULT_SEEDS)
    chosen = protocol(config.get("protocol"), source)
    # The protocol's settings come first: the study's defaults, rows, cells and variants may refine them.
    defaults = {**(chosen.args if chosen else {}), **_check_args(config.get("defaults"), "defaults", source)}
    study_variants = _resolve_variants(config.get("variants"), "variants", source)
    study_variant_args = _check_variant_args(config.get("variant_args"), "variant_args", source)
    entries, runs, names = [], [], set()
    for raw in config["runs"]:
        raw = _check_entry(raw, source)
        table = raw["table"]
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise HfgalError(f"{source}: run name {name!r} must be a lower-case slug like convnextv2-tiny")
        if name in names:
            raise HfgalError(f"{source}: two runs are named {name!r}; give each row its own name")
        names.add(name)
        published = raw.get("published")
        known = PUBLISHED_TABLE1 if table == 1 else PUBLISHED_TABLE2
        if published is not None and published not in known:
            raise HfgalError(
                f"{source}: run {name!r} published: {published!r} is not a row of the seed study's Table {table}; "
                f"use one of {', '.join(known)}"
            )
        args = {**defaults, **_check_args(raw.get("args"), f"run {name!r} args", source)}
        variants = (
            _resolve_variants(raw["variants"], f"run {name!r} variants", source)
            if "variants" in raw
            else study_variants
        )
        variant_args = {
            **study_variant_args,
            **_check_variant_args(raw.get("variant_args"), f"run {name!r} variant_args", source),
        }
        overrides = raw.get("model_config_overrides")
        if overrides is not None and not isinstance(overrides, dict):
            raise HfgalError(f"{source}: run {name!r} model_config_overrides must be a mapping")
        family = str(raw.get("family") or name)
        entry_config = raw.get("config") or config.get("config")
        if table == 1:
            if not isinstance(raw.get("model"), str):
                raise HfgalError(f"{source}: Table 1 run {name!r} needs 'model' (a Hub id or named config)")
            init = raw.get("init", "pretrained")
            entries.append(Entry(name, family, 1, published, model=raw["model"], note=raw.get("note")))
            cells = [(None, raw["model"], init, args, overrides)]
        else:
            columns, cells, architectures = [], [], {}
            spec = _check_keys(raw.get("pretraining"), set(TABLE2_COLUMNS), f"run {name!r} pretraining", source)
            for column in TABLE2_COLUMNS:
                cell = spec.get(column)
                cell = cell if isinstance(cell, dict) else {"model": cell}
                cell = _check_keys(cell, _COLUMN_KEYS, f"run {name!r} pretraining.{column}", source)
                model = cell.get("model")
                note = cell.get("note") or (ZOOBOT_UNAVAILABLE if column == "zoobot" and model is None else None)
                columns.append(Column(column, model, note))
                if model is None:
                    continue
                architectures[column] = (model, cell.get("architecture") or raw.get("architecture"))
                init = cell.get("init", "scratch" if column == "none" else "pretrained")
                cell_args = {**args, **_check_args(cell.get("args"), f"run {name!r} {column} args", source)}
                cell_overrides = {**(overrides or {}), **(cell.get("model_config_overrides") or {})} or None
                cells.append((column, model, init, cell_args, cell_overrides))
            check_one_architecture(name, architectures, source)
            entries.append(Entry(name, family, 2, published, columns=tuple(columns)))
        for column, model, init, cell_args, cell_overrides in cells:
            if init not in ("pretrained", "scratch"):
                raise HfgalError(f"{source}: run {name!r} init {init!r} must be 'pretrained' or 'scratch'")
            for variant, extra in _variant_grid(variants, variant_args, name, source):
                for seed in seeds:
                    slug = "__".join(p for p in (name, column, variant, f"seed{seed}") if p)
                    runs.append(
                        PlannedRun(
                            slug=slug,
                            entry=name,
                            family=family,
                            table=table,
                            column=column,
                            variant=variant,
                            seed=int(seed),
                            model=model,
                            init=init,
                            dataset=config["dataset"],
                            args={**cell_args, **extra},
                            config=entry_config,
                            model_config_overrides=cell_overrides,
                        )
                    )
    return Study(
        name=config["name"],
        description=config.get("description") or "",
        dataset=config["dataset"],
        seeds=seeds,
        entries=tuple(entries),
        runs=tuple(_share_training(runs)),
        config=config,
        protocol=chosen,
    )


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
    """Parse and plan a study YAML (a recipe under recipes/study/ or a study folder's recorded study.yaml)."""
    path = Path(path)
    if path.is_dir():
        path = path / STUDY_FILE
    return plan_study(resolve_study_config(path), source=str(path))
