"""The study YAML schema: typed models of a study file, its Table 1 and Table 2 rows, pretraining cells and
variants, and the one-line `HfgalError` a file that does not fit them gets.

Every model forbids unknown keys (a misspelt `lerning_rate` is an error, not a silently ignored setting) and is
strict (`seeds: ["0"]` is not read as `[0]`). `validate_study` turns pydantic's report into one line naming the
file, where in it the problem is (`run 'vit-base' (table 1)`, `variants`, ...) and what to do.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from ..errors import HfgalError
from .protocols import PROTOCOLS, PUBLISHED_TABLE1, PUBLISHED_TABLE2

DEFAULT_SEEDS = (0, 1, 2)
TABLE2_COLUMNS = ("none", "imagenet", "zoobot")
# Flags the runner sets itself for every run; a study sets them through the schema, not through `args`.
RESERVED_ARGS = {"model", "model_name_or_path", "init", "seed", "output_dir", "dataset", "config"}
RESERVED_ARGS |= {"resume_from_checkpoint", "model_config_overrides"}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_FLAG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _problem(message: str) -> PydanticCustomError:
    # One error type for the schema's own checks: `message` says what is wrong, then (after ';') what to do.
    # No template context: pydantic would read braces in the user's own values as placeholders.
    return PydanticCustomError("study", message)


# --------------------------------------------------------------------------- value types


def _slug(name: str) -> str:
    if not _NAME_RE.match(name):
        raise _problem(f"{name!r} must be a lower-case slug (letters, digits, . _ -) like convnextv2-tiny")
    return name


def _flags(args: dict[str, Any]) -> dict[str, Any]:
    for key in args:
        if not _FLAG_RE.match(key):
            raise _problem(f"{key!r} is not a finetune flag name; use e.g. learning_rate")
        if key in RESERVED_ARGS:
            raise _problem(
                f"{key!r} is set by the study runner; use the entry's model/init/config/model_config_overrides keys "
                "or the study's dataset/seeds instead"
            )
    return args


def _seeds(seeds: list[int]) -> list[int]:
    if not seeds or any(seed < 0 for seed in seeds):
        raise _problem("must be a non-empty list of non-negative integers, e.g. [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise _problem("lists a seed twice; list each seed once")
    return seeds


def _toggle(values: list[bool]) -> list[bool]:
    if not values:
        raise _problem("must be a list of true/false, e.g. [true, false]")
    if len(set(values)) != len(values):
        raise _problem("repeats a value; list each of true/false once")
    return values


def _protocol(name: str) -> str:
    if name not in PROTOCOLS:
        raise _problem(f"unknown protocol {name!r}; use one of {', '.join(PROTOCOLS)} (or leave it out)")
    return name


def _model_id_alone(cell: Any) -> Any:
    # A Table 2 cell is a mapping, or just its model id (`none: timm/convnext_nano.in12k`), or null (unavailable).
    return {"model": cell} if cell is None or isinstance(cell, str) else cell


Slug = Annotated[str, AfterValidator(_slug)]
FlagArgs = Annotated[dict[str, Any], AfterValidator(_flags)]  # finetune flags: `learning_rate: 1.0e-3`
Init = Literal["pretrained", "scratch"]
Toggle = Annotated[list[bool], AfterValidator(_toggle)]
VariantKey = Literal["d4_augment", "tta", "linear_probe"]  # the settings a variant may change, one at a time
VARIANT_KEYS: tuple[str, ...] = typing.get_args(VariantKey)
Variants = dict[VariantKey, Toggle]  # ordered as written: the grid's order
VariantArgs = dict[str, FlagArgs]  # variant label (e.g. linear_probe-true) -> extra flags of that variant


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())


# --------------------------------------------------------------------------- rows


class Cell(_Schema):
    """One Table 2 column of a row: the model it fine-tunes (None: unavailable, `note` says why)."""

    model: str | None = None
    init: Init | None = None  # default: scratch for the `none` column, pretrained otherwise
    args: FlagArgs = {}
    model_config_overrides: dict[str, Any] | None = None
    note: str | None = None
    architecture: str | None = None  # the timm architecture, where the model id does not say it


class Pretraining(_Schema):
    """The three pretraining columns of a Table 2 row."""

    none: Annotated[Cell, BeforeValidator(_model_id_alone)] = Cell()
    imagenet: Annotated[Cell, BeforeValidator(_model_id_alone)] = Cell()
    zoobot: Annotated[Cell, BeforeValidator(_model_id_alone)] = Cell()

    def cells(self) -> list[tuple[str, Cell]]:
        """(column, cell) in table order: no pretraining, ImageNet, Zoobot."""
        return [(column, getattr(self, column)) for column in TABLE2_COLUMNS]


class _Row(_Schema):
    name: Slug
    family: str | None = None  # default: the row's name
    args: FlagArgs = {}
    config: str | None = None  # a recipe YAML (`--config` of the recipe)
    model_config_overrides: dict[str, Any] | None = None
    published: str | None = None  # the seed study's row this one compares with
    variants: Variants | None = None  # replaces the study's variants for this row (null: none)
    variant_args: VariantArgs = {}


def _published(published: str | None, table: int, known: Mapping[str, Any]) -> str | None:
    if published is not None and published not in known:
        raise _problem(f"{published!r} is not a row of the seed study's Table {table}; use one of {', '.join(known)}")
    return published


class Table1Row(_Row):
    """A Table 1 row: one checkpoint."""

    table: Literal[1]
    model: str  # a Hub id, a local folder or a named config
    init: Init = "pretrained"
    note: str | None = None

    @field_validator("published")
    @classmethod
    def _seed_study_row(cls, published: str | None) -> str | None:
        return _published(published, 1, PUBLISHED_TABLE1)


class Table2Row(_Row):
    """A Table 2 row: one architecture, without pretraining, with ImageNet and with Zoobot pretraining."""

    table: Literal[2]
    pretraining: Pretraining
    architecture: str | None = None  # for every cell that does not declare its own

    @field_validator("published")
    @classmethod
    def _seed_study_row(cls, published: str | None) -> str | None:
        return _published(published, 2, PUBLISHED_TABLE2)


Row = Annotated[Table1Row | Table2Row, Field(discriminator="table")]


class StudyFile(_Schema):
    """A study YAML (or the resolved `study.yaml` a study folder records)."""

    name: Slug
    description: str | None = None
    protocol: Annotated[str, AfterValidator(_protocol)] | None = None
    dataset: str | None = None  # default: the protocol's
    seeds: Annotated[list[int], AfterValidator(_seeds)] = list(DEFAULT_SEEDS)
    defaults: FlagArgs = {}
    config: str | None = None
    variants: Variants = {}
    variant_args: VariantArgs = {}
    runs: list[Row] = []
    include: list[str] = []  # other study YAMLs whose runs join this study


# --------------------------------------------------------------------------- one-line errors


def validate_study(raw: Any, source: str | Path) -> StudyFile:
    """Check a study mapping against the schema.

    Args:
        raw: the parsed YAML.
        source: the file it came from, named in the error.

    Raises:
        HfgalError: one line naming the file, the place in it and what is wrong, for the first problem found.
    """
    try:
        return StudyFile.model_validate(raw)
    except ValidationError as err:
        errors = err.errors()
        # A misspelt key is the likeliest cause of a missing one (`modle:` and no `model:`): name it first.
        unknown = [e for e in errors if e["type"] == "extra_forbidden" or e["loc"][-1:] == ("[key]",)]
        raise HfgalError(_one_line((unknown or errors)[0], raw, str(source))) from None


def _one_line(error: Mapping[str, Any], raw: Any, source: str) -> str:
    loc, kind, context = tuple(error["loc"]), error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = ", ".join(_keys_at(loc[:-1]))
        return f"{source}: unknown key '{loc[-1]}' in {_where(loc[:-1], raw)}; allowed keys are {allowed}"
    if kind == "literal_error" and loc[-1] == "[key]":  # a mapping keyed by a fixed set (variants)
        return f"{source}: unknown key '{loc[-2]}' in {_where(loc[:-2], raw)}; allowed keys are {context['expected']}"
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        return f"{source}: {_where(loc, raw)} needs 'table: 1' or 'table: 2'; add it to the row"
    if kind == "missing":
        return f"{source}: {_where(loc[:-1], raw)} needs '{loc[-1]}'; add it to the study YAML"
    if kind == "study":
        return f"{source}: {_where(loc, raw)}: {error['msg']}"
    return f"{source}: {_where(loc, raw)}: {error['msg'][:1].lower()}{error['msg'][1:]}; fix the study YAML"


def _where(loc: tuple, raw: Any) -> str:
    """`('runs', 1, 2, 'pretraining', 'zoobot')` -> `run 'effnet-b0' (table 2) pretraining.zoobot`."""
    head, path = "", []
    if loc[:1] == ("runs",) and len(loc) > 1 and isinstance(loc[1], int):
        run = raw["runs"][loc[1]] if isinstance(raw, Mapping) and isinstance(raw.get("runs"), list) else None
        name = run.get("name") if isinstance(run, Mapping) else None
        head = f"run {name!r}" if name is not None else f"run #{loc[1] + 1}"
        loc = loc[2:]
        if loc and isinstance(loc[0], int):  # the row's table, which chose its model
            head, loc = f"{head} (table {loc[0]})", loc[1:]
    for part in loc:
        if isinstance(part, int):
            path.append(f"[{part}]")
        elif part != "[key]":
            path.append(f".{part}" if path else str(part))
    text = " ".join(p for p in (head, "".join(path)) if p)
    return text or "the study"


def _keys_at(loc: tuple) -> list[str]:
    """The keys the schema allows at `loc` (for 'allowed keys are ...')."""
    node: Any = StudyFile
    for part in loc:
        node = _inner(node, part)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _inner(node: Any, part: Any) -> Any:
    """The type one step (`part`: a field, list index, mapping key or row table) inside `node`."""
    while typing.get_origin(node) in (Annotated, typing.Union, types.UnionType):
        args = [a for a in typing.get_args(node) if a is not type(None)]
        if typing.get_origin(node) is Annotated or len(args) == 1:
            node = args[0]
        else:  # the rows: the table number picks the model
            return next(m for m in args if m.model_fields["table"].annotation == Literal[part])
    if isinstance(node, type) and issubclass(node, BaseModel):
        return node.model_fields[part].annotation
    return typing.get_args(node)[-1]  # list[X] -> X, dict[K, V] -> V
