"""The benchmark study: a YAML grid of fine-tuning runs, run one process per run, resumable, then reported.

A study YAML names models (Table 1: one pretrained checkpoint per row; Table 2: one architecture per row with
no-pretraining / ImageNet / Zoobot columns), seeds and optional variants. `plan_study` expands it into one
`PlannedRun` per (model, pretraining, variant, seed), each with its own run folder and exact command;
`run_study` launches them as separate processes so a crash loses one run, never the study.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .utils import HfgalError, atomic_write_json, atomic_write_text, output_lock

DEFAULT_LAUNCHER = "accelerate launch --num_processes 1"
DEFAULT_SEEDS = (0, 1, 2)
TABLE2_COLUMNS = ("none", "imagenet", "zoobot")
VARIANT_KEYS = ("d4_augment", "tta", "linear_probe")
STUDY_FILE = "study.yaml"
RUN_RECORD = "study_run.json"  # the command a run folder was launched with, to spot stale runs
RUN_LOG = "study_run.log"
ERROR_FILE = "error.txt"

# The seed study's published numbers (poster, DESIGN.md), compared side by side with ours in the report.
PUBLISHED_TABLE1: dict[str, dict[str, Any]] = {
    "Swinv2 Base": {"accuracy": 85.96, "params_m": 86.9, "co2_kg": 0.022, "time": "2h28"},
    "DINOv2 Base": {"accuracy": 85.63, "params_m": 86.6, "co2_kg": 0.018, "time": "1h54"},
    "ViT Base": {"accuracy": 86.02, "params_m": 86.1, "co2_kg": 0.024, "time": "2h41"},
    "BEiT Base": {"accuracy": 86.02, "params_m": 85.7, "co2_kg": 0.015, "time": "1h31"},
    "ConvNeXtV2 Nano": {"accuracy": 86.87, "params_m": 15.0, "co2_kg": 0.010, "time": "1h02"},
    "ConvNeXtV2 Tiny": {"accuracy": 87.31, "params_m": 27.9, "co2_kg": 0.011, "time": "1h09"},
    "EfficientNet B7": {"accuracy": 85.74, "params_m": 66.0, "co2_kg": 0.022, "time": "2h29"},
    "ResNet101": {"accuracy": 85.12, "params_m": 48.0, "co2_kg": 0.012, "time": "1h32"},
    "VGG16": {"accuracy": 84.05, "params_m": 138.0, "co2_kg": 0.010, "time": "1h03"},
}
PUBLISHED_TABLE2: dict[str, dict[str, float]] = {
    "MaxViT Base": {"none": 76.04, "imagenet": 82.70, "zoobot": 87.71},
    "ConvNeXt Nano": {"none": 65.54, "imagenet": 85.57, "zoobot": 86.19},
    "EfficientNet B0": {"none": 74.41, "imagenet": 80.16, "zoobot": 86.64},
}

_STUDY_KEYS = {"name", "description", "dataset", "seeds", "defaults", "config", "runs", "include"}
_STUDY_KEYS |= {"variants", "variant_args"}
_COMMON_ENTRY_KEYS = {"name", "family", "table", "args", "config", "model_config_overrides", "published"}
_COMMON_ENTRY_KEYS |= {"variants", "variant_args"}
_ENTRY_KEYS = {1: _COMMON_ENTRY_KEYS | {"model", "init", "note"}, 2: _COMMON_ENTRY_KEYS | {"pretraining"}}
_COLUMN_KEYS = {"model", "init", "args", "model_config_overrides", "note"}
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
        "dataset": raw.get("dataset"),
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
    defaults = _check_args(config.get("defaults"), "defaults", source)
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
            columns, cells = [], []
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
                init = cell.get("init", "scratch" if column == "none" else "pretrained")
                cell_args = {**args, **_check_args(cell.get("args"), f"run {name!r} {column} args", source)}
                cell_overrides = {**(overrides or {}), **(cell.get("model_config_overrides") or {})} or None
                cells.append((column, model, init, cell_args, cell_overrides))
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
        runs=tuple(runs),
        config=config,
    )


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


# --------------------------------------------------------------------------- run folders


def read_results(run_dir: str | os.PathLike) -> dict | None:
    """The run's results.json if it is complete, else None (missing, half-written or `complete` false)."""
    try:
        data = json.loads((Path(run_dir) / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("complete") is True else None


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether the run folder holds a `checkpoint-*` folder to resume from."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any(p.is_dir() for p in run_dir.glob("checkpoint-*"))


def _run_spec(run: PlannedRun) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(run)))


def run_status(run: PlannedRun, out_dir: str | os.PathLike) -> str:
    """Where a planned run stands in `out_dir`.

    Returns:
        `done` (complete results.json), `stale` (its folder was launched for a different run spec, e.g. after
        the study changed under --force), `failed` (error.txt, no results), `resume` (checkpoints, no results)
        or `new`.
    """
    run_dir = Path(out_dir) / "runs" / run.slug
    try:
        recorded = json.loads((run_dir / RUN_RECORD).read_text()).get("run")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is not None and recorded != _run_spec(run):
        return "stale"
    if read_results(run_dir) is not None:
        return "done"
    if (run_dir / ERROR_FILE).is_file():
        return "failed"
    return "resume" if has_checkpoint(run_dir) else "new"


def run_command(
    run: PlannedRun,
    out_dir: str | os.PathLike,
    recipe: str | os.PathLike,
    launcher: str = DEFAULT_LAUNCHER,
    resume: bool = False,
) -> list[str]:
    """The exact argv that trains `run`: launcher, recipe, flags; `--resume_from_checkpoint true` when resuming.

    Args:
        run: the planned run.
        out_dir: the study folder (the run folder is `out_dir/runs/<slug>`).
        recipe: path of recipes/finetune.py.
        launcher: command prefix, e.g. "accelerate launch --num_processes 1" or "python".
        resume: add `--resume_from_checkpoint true` (the recipe resumes from the latest checkpoint-*).

    Returns:
        The argv list.
    """
    run_dir = Path(out_dir).absolute() / "runs" / run.slug
    argv = [*shlex.split(launcher), str(Path(recipe).absolute()), *run.recipe_args(run_dir)]
    return argv + ["--resume_from_checkpoint", "true"] if resume else argv


def _study_record(study: Study) -> str:
    import yaml

    return yaml.safe_dump(study.config, sort_keys=False, allow_unicode=True)


def prepare_output_dir(study: Study, out_dir: Path, force: bool = False) -> None:
    """Record the study config in `out_dir/study.yaml`, refusing a folder that holds a different study.

    Raises:
        HfgalError: `out_dir` holds another study (or this study with a changed config) and `force` is False.
    """
    import yaml

    record = out_dir / STUDY_FILE
    if record.is_file():
        try:
            old = yaml.safe_load(record.read_text())
        except yaml.YAMLError:
            old = None
        old = old if isinstance(old, dict) else {}
        if old != study.config and not force:
            if old.get("name") != study.name:
                what = f"study {old.get('name')!r}"
            else:
                changed = ", ".join(k for k in study.config if old.get(k) != study.config[k])
                what = f"study {study.name!r} with a different config ({changed})"
            raise HfgalError(
                f"{out_dir} holds results of {what}; choose another --output-dir or pass --force to run "
                f"{study.name!r} there (runs whose settings changed are re-run)"
            )
    elif (out_dir / "runs").is_dir() and any((out_dir / "runs").iterdir()) and not force:
        raise HfgalError(
            f"{out_dir} holds run folders but no {STUDY_FILE}; choose another --output-dir or pass --force"
        )
    atomic_write_text(record, _study_record(study))


def _record_run(run: PlannedRun, run_dir: Path, argv: list[str]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"slug": run.slug, "run": _run_spec(run), "command": shlex.join(argv)}
    atomic_write_json(run_dir / RUN_RECORD, record)


def _launch(
    run: PlannedRun, out_dir: Path, recipe: Path, launcher: str, gpu: str | None = None, log_tail: int = 40
) -> dict:
    """Run one fine-tune as its own process (on `gpu` alone when given); record its spec, log and error.txt."""
    import time

    run_dir = out_dir / "runs" / run.slug
    status = run_status(run, out_dir)
    if status == "stale" or (run_dir.exists() and not has_checkpoint(run_dir)):
        # Nothing of a stale run, or of a killed or failed attempt without checkpoint, is worth keeping.
        shutil.rmtree(run_dir, ignore_errors=True)
    resume = has_checkpoint(run_dir)
    argv = run_command(run, out_dir, recipe, launcher, resume=resume)
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    (run_dir / "results.json").unlink(missing_ok=True)  # a non-complete one from a killed attempt
    _record_run(run, run_dir, argv)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    start = time.monotonic()
    with open(run_dir / RUN_LOG, "ab") as log:
        device = f"CUDA_VISIBLE_DEVICES={gpu} " if gpu is not None else ""
        log.write(f"$ {device}{shlex.join(argv)}\n".encode())
        log.flush()
        try:
            code = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
        except OSError as err:  # the launcher itself is missing
            log.write(f"{err}\n".encode())
            code = 127
    seconds = time.monotonic() - start
    if code == 0 and read_results(run_dir) is not None:
        return {"slug": run.slug, "status": "done", "seconds": seconds, "resumed": resume}
    tail = (run_dir / RUN_LOG).read_text(errors="replace").splitlines()[-log_tail:]
    reason = f"exit code {code}" if code else "exit code 0 but no complete results.json"
    text = f"{reason}\ncommand: {shlex.join(argv)}\n--- last {len(tail)} log lines ---\n" + "\n".join(tail) + "\n"
    atomic_write_text(run_dir / ERROR_FILE, text)
    return {"slug": run.slug, "status": "failed", "seconds": seconds, "resumed": resume, "reason": reason}


def run_study(
    config_path: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    recipe: str | os.PathLike,
    launcher: str = DEFAULT_LAUNCHER,
    jobs: int = 1,
    dry_run: bool = False,
    emit_commands: str | os.PathLike | None = None,
    force: bool = False,
    report: bool = True,
    gpus: Sequence[str] | None = None,
) -> int:
    """Run every unfinished run of a study, one process each, then write the report.

    Finished runs (complete results.json for the same run spec) are skipped; a run folder with checkpoints is
    resumed with `--resume_from_checkpoint true`; a failing run gets `error.txt` and the study goes on.

    Args:
        config_path: the study YAML.
        output_dir: the study folder (default `studies/<name>`).
        recipe: path of recipes/finetune.py.
        launcher: command prefix of every run.
        jobs: runs at a time (each its own process).
        dry_run: print the plan and the exact commands; launch and write nothing.
        emit_commands: write the commands of the unfinished runs to this file, one per line, and stop
            (for a SLURM job array); `study.yaml` is recorded so `hfgal study report` works afterwards.
        force: reuse an output folder that holds a different study (or this study with changed settings).
        report: write the report at the end.
        gpus: device ids; runs go one per GPU (as many at a time as GPUs, `CUDA_VISIBLE_DEVICES` set per run)
            instead of `jobs` runs sharing every visible device.

    Returns:
        0 when every run finished, 1 when some failed.
    """
    study = load_study(config_path)
    out_dir = Path(output_dir or Path("studies") / study.name).absolute()
    recipe = Path(recipe).absolute()
    if jobs < 1:
        raise HfgalError(f"--jobs {jobs} must be at least 1")
    gpus = [str(g).strip() for g in gpus or [] if str(g).strip()]
    if gpus:
        jobs = len(gpus)
    if not dry_run and not recipe.is_file():
        raise HfgalError(f"fine-tuning recipe {recipe} not found; pass --recipe PATH/TO/finetune.py")
    if dry_run:
        print_plan(study, out_dir, recipe, launcher)
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    with output_lock(out_dir, "study runner"):
        prepare_output_dir(study, out_dir, force=force)
        todo = [run for run in study.runs if run_status(run, out_dir) != "done"]
        if emit_commands is not None:
            lines = []
            for run in todo:
                # Array tasks may be pre-empted and requeued, so every line resumes (the recipe starts fresh
                # when the folder has no checkpoint).
                argv = run_command(run, out_dir, recipe, launcher, resume=True)
                run_dir = out_dir / "runs" / run.slug
                if run_status(run, out_dir) == "stale":
                    shutil.rmtree(run_dir)
                _record_run(run, run_dir, argv)
                lines.append(shlex.join(argv))
            atomic_write_text(emit_commands, "".join(f"{line}\n" for line in lines))
            print(f"wrote {len(lines)} commands to {emit_commands}; when they are done: hfgal study report {out_dir}")
            return 0
        done = len(study.runs) - len(todo)
        print(f"study {study.name!r}: {done}/{len(study.runs)} runs finished, running {len(todo)} in {out_dir}")
        outcomes = _run_all(todo, out_dir, recipe, launcher, jobs, gpus)
        if report:
            from .report import write_report

            print(f"report: {write_report(out_dir)}", flush=True)
    failed = [o["slug"] for o in outcomes if o["status"] != "done"]
    if failed:
        print(f"{len(failed)} of {len(study.runs)} runs failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def print_plan(study: Study, out_dir: Path, recipe: Path, launcher: str = DEFAULT_LAUNCHER) -> None:
    """Print every run of the study with its status and exact command (what --dry-run shows)."""
    statuses = {run.slug: run_status(run, out_dir) for run in study.runs}
    todo = sum(status != "done" for status in statuses.values())
    print(f"study {study.name!r}: {len(study.runs)} runs ({todo} to run) in {out_dir}")
    for entry in study.entries:
        for column in entry.columns:
            if column.model is None:
                print(f"  [n/a]    {entry.name} / {column.name}: {column.note}")
    for run in study.runs:
        argv = run_command(run, out_dir, recipe, launcher, resume=statuses[run.slug] == "resume")
        print(f"  [{statuses[run.slug]}] {run.slug}\n    {shlex.join(argv)}")


def _run_all(
    todo: Sequence[PlannedRun], out_dir: Path, recipe: Path, launcher: str, jobs: int, gpus: Sequence[str] = ()
) -> list[dict]:
    import queue

    free_gpus: queue.Queue = queue.Queue()
    for gpu in gpus:
        free_gpus.put(gpu)

    def one(run: PlannedRun) -> dict:
        gpu = free_gpus.get() if gpus else None
        try:
            print(f"[start] {run.slug}" + (f" on GPU {gpu}" if gpu is not None else ""), flush=True)
            outcome = _launch(run, out_dir, recipe, launcher, gpu=gpu)
        finally:
            if gpu is not None:
                free_gpus.put(gpu)
        where = out_dir / "runs" / run.slug / ERROR_FILE
        why = f" ({outcome['reason']}; see {where})" if "reason" in outcome else ""
        print(f"[{outcome['status']}] {run.slug} in {outcome['seconds']:.0f}s{why}", flush=True)
        return outcome

    if jobs == 1:
        return [one(run) for run in todo]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, todo))


# --------------------------------------------------------------------------- CLI


def register_cli(subparsers) -> None:
    """Add `hfgal study report DIR` and `hfgal study push DIR --repo-id ID`."""
    study = subparsers.add_parser("study", help="report or publish a benchmark study (run it with recipes/study.py)")
    sub = study.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    report = sub.add_parser("report", help="write Table 1, Table 2, plots and report.md from a study folder")
    report.add_argument("study_dir", help="folder written by recipes/study.py (holds study.yaml and runs/)")
    report.set_defaults(func=_report_command)
    push = sub.add_parser("push", help="publish tables, plots, report and every results.json as a Hub dataset")
    push.add_argument("study_dir", help="folder written by recipes/study.py")
    push.add_argument("--repo-id", required=True, help="dataset repo, USER/NAME")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.set_defaults(func=_push_command)


def _report_command(args) -> int:
    from .report import write_report

    path = write_report(args.study_dir)
    print(path)
    return 0


def _push_command(args) -> int:
    from .report import push_study

    url = push_study(args.study_dir, args.repo_id, private=args.private or None)
    print(url)
    return 0
