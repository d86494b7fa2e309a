"""A ready-to-push Hugging Face Space for the demo (`hfgal space build`) and a local server (`hfgal demo`).

The Space folder is self-contained: `app.py` (a few lines calling `hfgal.demo.app.build_demo`), a copy of the
hfgal package that built it (hfgal is not on PyPI; the Space imports the copy next to `app.py`), a pinned
`requirements.txt` of the demo's dependencies, a README with Space front matter, example galaxies, and copies of
local model folders.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import __version__
from ..constants import DEFAULT_DATASET, GZ10_CITATION, GZ10_CLASSES, GZ10_DESCRIPTIONS, HFGAL_CITATION
from ..data.imageio import DEFAULT_MAX_PIXELS, MAX_FILE_BYTES
from ..errors import HfgalError
from ..hub.access import is_hub_id
from ..io import atomic_output_dir, atomic_write_text, card_template
from ..runs import CARD_FILE, CONFUSION_FILE, MODEL_CONFIG_FILE, PROCESSOR_FILE, check_model_folder
from .app import DEFAULT_TITLE
from .examples import MAX_EXAMPLES, accepted_suffixes, read_examples, select_examples

# Files of a run folder that belong in a Space besides the weights: configs, the card (and the figure it shows).
PUBLISHED_FILES = (MODEL_CONFIG_FILE, PROCESSOR_FILE, CARD_FILE, CONFUSION_FILE)
# What the Space pins (besides hfgal itself): the demo's direct and model-defining dependencies.
PINNED_DISTRIBUTIONS = (
    "gradio",
    "torch",
    "torchvision",
    "transformers",
    "timm",
    "huggingface_hub",
    "safetensors",
    "pillow",
    "numpy",
    "matplotlib",
    "astropy",
)
SPACE_TAGS = ["astronomy", "galaxy-morphology", "image-classification", "galaxy10", "hfgal"]
SHORT_DESCRIPTION = "Classify galaxy images into the 10 Galaxy10 DECaLS classes"


# --------------------------------------------------------------------------- models


def model_files(folder: Path) -> list[Path]:
    """The publishable files of a local model folder: its weights, configs and card (with the figure it shows).

    Raises:
        HfgalError: the folder is missing, has no config.json or no safetensors weights.
    """
    weights = [folder / name for name in check_model_folder(folder)]
    extra = [folder / name for name in PUBLISHED_FILES if (folder / name).is_file()]
    if folder / CONFUSION_FILE in extra and CONFUSION_FILE not in _read(folder / CARD_FILE):
        extra.remove(folder / CONFUSION_FILE)
    return weights + extra


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def _folder_name(path: Path, taken: set[str]) -> str:
    base = re.sub(r"[^\w.-]+", "-", path.resolve().name).strip(".-") or "model"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def _plan_models(models: list[str]) -> list[dict[str, Any]]:
    """Validate every `--model` before anything is written: local folders are copied, Hub ids referenced."""
    if not models:
        raise HfgalError("no model given; pass --model with a fine-tuning output folder or a Hub repo id")
    plan, taken = [], set()
    for source in models:
        path = Path(source).expanduser()
        if path.exists() or not is_hub_id(source):
            files = model_files(path)
            name = _folder_name(path, taken)
            plan.append({"source": source, "name": name, "rel": f"models/{name}", "files": files, "hub_id": None})
        else:
            plan.append({"source": source, "name": source, "rel": None, "files": [], "hub_id": source})
    return plan


# --------------------------------------------------------------------------- examples


def _copy_examples(chosen: list[tuple[Path, int | None]], dest: Path) -> list[dict[str, Any]]:
    """Copy example files (after checking they load as images) and write their metadata.csv."""
    from ..data.imageio import load_image

    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, label in chosen:
        try:
            load_image(path)
        except HfgalError as err:
            raise HfgalError(f"example {path} is not usable ({err}); remove it from the --examples folder") from None
        shutil.copy2(path, dest / path.name)
        rows.append(
            {"file_name": path.name, "label": label, "class_name": GZ10_CLASSES[label] if label is not None else ""}
        )
    _write_metadata(dest, rows)
    return rows


def _examples_from_dataset(dataset: str, dest: Path) -> list[dict[str, Any]]:
    """One test-split galaxy per class from a GZ10 source, saved as `<label>_<row>.png`."""
    from ..data.sources import load_gz10

    try:
        test = load_gz10(dataset)["test"]
    except HfgalError as err:
        reason = str(err).split("; ")[0]  # drop load_gz10's own advice: --examples is the way out here
        raise HfgalError(
            f"no --examples given and the GZ10 test split of {dataset} could not be loaded ({reason}); "
            "pass --examples DIR (a folder of galaxy images, e.g. PNGs named <label>_<n>.png)"
        ) from None
    first: dict[int, int] = {}
    for row, label in enumerate(test["label"]):
        first.setdefault(int(label), row)
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for label in sorted(first):
        name = f"{label}_{first[label]}.png"
        test[first[label]]["image"].convert("RGB").save(dest / name)
        rows.append({"file_name": name, "label": label, "class_name": GZ10_CLASSES[label]})
    _write_metadata(dest, rows)
    return rows


def _write_metadata(dest: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["file_name", "label", "class_name"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({**r, "label": "" if r["label"] is None else r["label"]} for r in rows)
    atomic_write_text(dest / "metadata.csv", buf.getvalue())


# --------------------------------------------------------------------------- files


# A Space runs on CPU hardware unless it is upgraded: PyPI's Linux torch is a CUDA build (gigabytes of CUDA
# libraries a CPU Space never uses), so torch and torchvision come from PyTorch's CPU index instead.
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CPU_BUILDS = ("torch", "torchvision")


def pinned_requirements() -> str:
    """requirements.txt pinning the demo's dependencies to the versions installed here, torch as a CPU build.

    hfgal itself travels as source next to `app.py` (`copy_hfgal_source`). Local version tags (`2.4.0+cu121`)
    are dropped so the pins resolve on PyPI, and torch/torchvision are pinned as the `+cpu` builds of PyTorch's CPU
    index (a Space's default hardware is a CPU); packages not installed here (astropy without the `astro` extra)
    are left out.
    """
    lines = [
        f"# hfgal {__version__} ships in ./hfgal (a copy of the package that built this Space)",
        "# torch and torchvision: CPU builds, for the Space's default CPU hardware",
        f"--extra-index-url {CPU_INDEX}",
    ]
    for dist in PINNED_DISTRIBUTIONS:
        try:
            version = metadata.version(dist).split("+")[0]
        except metadata.PackageNotFoundError:
            continue
        lines.append(f"{dist}=={version}+cpu" if dist in CPU_BUILDS else f"{dist}=={version}")
    return "\n".join(lines) + "\n"


def copy_hfgal_source(dest: Path) -> None:
    """Copy the installed hfgal package's Python sources (subpackages included) into `dest`.

    Works from a wheel and from an editable checkout alike: it copies what `import hfgal` runs. Card templates
    and caches stay behind (the demo renders no cards).
    """
    package = Path(__file__).resolve().parents[1]  # hfgal/, not hfgal/demo/
    for f in [*package.rglob("*.py"), package / "py.typed"]:
        if f.is_file() and "__pycache__" not in f.parts:
            target = dest / f.relative_to(package)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)


def render_app(served: list[str], title: str) -> str:
    """The Space's `app.py`: build the demo from folders next to it, launch it (GRADIO_SERVER_* env honoured).

    Args:
        served: Hub ids, and `local:models/<name>` for folders copied into the Space.
        title: the page title.

    Returns:
        The Python source.
    """

    def literal(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid double-quoted Python literal

    entries = "".join(
        f"    str(HERE / {literal(s[len('local:') :])}),\n" if s.startswith("local:") else f"    {literal(s)},\n"
        for s in served
    )
    return f'''"""Galaxy morphology demo: a Gradio Space generated by `hfgal space build` (hfgal {__version__})."""

from pathlib import Path

from hfgal.demo.app import build_demo
from hfgal.data.imageio import MAX_FILE_BYTES

HERE = Path(__file__).resolve().parent
MODELS = [
{entries}]

demo = build_demo(MODELS, examples_dir=HERE / "examples", title={literal(title)})

if __name__ == "__main__":
    # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (set by Spaces, or by you) choose the address.
    demo.launch(max_file_size=MAX_FILE_BYTES)
'''


def render_space_card(plan: list[dict[str, Any]], *, title: str, dataset: str, num_examples: int, command: str) -> str:
    """README.md of the Space: Space front matter (sdk, pinned gradio version, models, datasets) and a short text.

    Args:
        plan: the served models (`name`, `rel` for copied folders, `hub_id` for Hub repos).
        title: the Space title.
        dataset: the GZ10 dataset the models were trained on (listed in `datasets` when it is a Hub id).
        num_examples: example galaxies shipped with the Space.
        command: the `hfgal space build` command line that made it.

    Returns:
        The card text.
    """
    import gradio
    from huggingface_hub import SpaceCard, SpaceCardData

    hub_ids = [m["hub_id"] for m in plan if m["hub_id"]]
    dataset_id = dataset if is_hub_id(dataset) else DEFAULT_DATASET
    card_data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=gradio.__version__,
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        app_file="app.py",
        license="apache-2.0",
        models=hub_ids or None,
        datasets=[dataset_id],
        tags=SPACE_TAGS,
        emoji="🌌",
        colorFrom="indigo",
        colorTo="purple",
        pinned=False,
        short_description=SHORT_DESCRIPTION,
    )
    suffixes = accepted_suffixes()
    served = [
        {"name": m["name"], "where": m["hub_id"], "url": f"https://huggingface.co/{m['hub_id']}"}
        if m["hub_id"]
        else {"name": m["name"], "where": f"{m['rel']}/", "url": f"{m['rel']}/README.md" if _has_card(m) else None}
        for m in plan
    ]
    card = SpaceCard.from_template(
        card_data,
        template_path=str(card_template("space_card.md")),
        title=title,
        accepted="PNG, JPEG or FITS" if ".fits" in suffixes else "PNG or JPEG",
        dataset_url=f"https://huggingface.co/datasets/{dataset_id}",
        served=served,
        classes=[
            {"index": i, "name": name, "description": GZ10_DESCRIPTIONS[name]} for i, name in enumerate(GZ10_CLASSES)
        ],
        examples_text=(
            f"{num_examples} galaxies from Galaxy10 DECaLS are in `examples/` (labels in `examples/metadata.csv`)."
            if num_examples
            else "No example images ship with this Space."
        ),
        max_megapixels=f"{DEFAULT_MAX_PIXELS / 1e6:g}",
        max_megabytes=f"{MAX_FILE_BYTES / 2**20:g}",
        hfgal_version=__version__,
        command=command,
        gz10_citation=GZ10_CITATION,
        hfgal_citation=HFGAL_CITATION,
    )
    return str(card)


def _has_card(model: dict[str, Any]) -> bool:
    return any(f.name == CARD_FILE for f in model["files"])


# --------------------------------------------------------------------------- build / push


def build_space(
    models: list[str],
    out: str | os.PathLike,
    *,
    examples: str | os.PathLike | None = None,
    dataset: str = DEFAULT_DATASET,
    title: str = DEFAULT_TITLE,
    overwrite: bool = False,
    max_examples: int = MAX_EXAMPLES,
    command: str | None = None,
) -> Path:
    """Write a complete Gradio Space folder for the demo, atomically.

    Args:
        models: local model folders (copied into `models/<name>/`, publishable files only) and/or Hub repo ids.
        out: the Space folder to create.
        examples: folder of example galaxies (up to `max_examples` copied, one per class first); when None,
            one test-split galaxy per class is taken from `dataset` (needs the Hub for a Hub id).
        dataset: the GZ10 source for examples and the card's `datasets` entry.
        title: the Space's title.
        overwrite: replace an existing `out`.
        max_examples: most example images to ship.
        command: the command line recorded in the card; by default one that rebuilds the Space from its own
            `models/` and `examples/` folders.

    Returns:
        The path of the written folder.

    Raises:
        HfgalError: gradio is missing, a model folder is missing or not a model, the examples cannot be
            found, or `out` exists without `overwrite`. Nothing is written then.
    """
    from .app import require_gradio

    require_gradio()
    plan = _plan_models([os.fspath(m) for m in models])
    chosen = select_examples(read_examples(examples), max_examples) if examples is not None else None
    if command is None:
        # Rebuildable from the Space's own files, and no local paths leak into a public card.
        parts = ["hfgal", "space", "build", *(a for m in plan for a in ("--model", m["rel"] or m["hub_id"]))]
        parts += ["--examples", "examples", "--out", Path(out).name]
        command = shlex.join(parts + (["--title", title] if title != DEFAULT_TITLE else []))
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        for m in plan:
            if m["rel"]:
                dest = tmp / m["rel"]
                dest.mkdir(parents=True)
                for f in m["files"]:
                    shutil.copy2(f, dest / f.name)
        if chosen is not None:
            rows = _copy_examples(chosen, tmp / "examples")
        else:
            rows = _examples_from_dataset(dataset, tmp / "examples")
        served = [f"local:{m['rel']}" if m["rel"] else m["hub_id"] for m in plan]
        atomic_write_text(tmp / "app.py", render_app(served, title))
        copy_hfgal_source(tmp / "hfgal")
        atomic_write_text(tmp / "requirements.txt", pinned_requirements())
        card = render_space_card(plan, title=title, dataset=dataset, num_examples=len(rows), command=command)
        atomic_write_text(tmp / CARD_FILE, card)
    return Path(out).absolute()


def push_space(folder: str | os.PathLike, repo_id: str, *, private: bool | None = None) -> str:
    """Upload a built Space folder as one commit to the Space `repo_id` (created as a Gradio Space if needed).

    Args:
        folder: a folder written by `build_space`.
        repo_id: `user/space`.
        private: visibility when the Space is created.

    Returns:
        The commit URL.
    """
    from ..hub.push import upload_one_commit

    return upload_one_commit(
        folder,
        repo_id,
        repo_type="space",
        space_sdk="gradio",
        private=private,
        commit_message=f"Upload Galaxy10 demo built with hfgal {__version__}",
    )
