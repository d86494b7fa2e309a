"""The Gradio demo: classify a galaxy image with one or more GZ10 checkpoints and show where the model looked.

`build_demo` is what a Space's `app.py` calls (`hfgal space build` writes one) and what `hfgal demo` serves.
gradio is an optional extra, imported only when a demo is built.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..constants import DEFAULT_DATASET, GZ10_CLASSES, GZ10_DESCRIPTIONS
from ..errors import HfgalError
from ..hub.access import is_hub_id
from ..runs import CARD_FILE, check_model_folder
from .examples import MAX_EXAMPLES, accepted_suffixes, read_examples, select_examples

if TYPE_CHECKING:
    import gradio as gr
    from PIL import Image

DEFAULT_TITLE = "Galaxy morphology classifier (Galaxy10 DECaLS)"
# A Hub repo id is exactly `namespace/name`; anything else that does not exist locally is a missing folder.
_MIN_SHOWN_SCORE = 0.1


def require_gradio() -> Any:
    """Import gradio, or explain how to install the `demo` extra."""
    try:
        import gradio
    except ImportError as err:
        # A broken gradio install (one of its own imports failing) deserves its reason, not only the hint.
        detail = "" if err.name in ("gradio", None) else f" (importing it failed: {err})"
        raise HfgalError(f"the demo needs gradio{detail}: pip install 'hfgal[demo]'") from None
    return gradio


@dataclass(frozen=True)
class ServedModel:
    """One checkpoint offered by the demo: the name shown, what `load_classifier` gets, and its card's address."""

    name: str
    source: str
    card_url: str | None


def served_models(models: list[str]) -> list[ServedModel]:
    """Resolve `--model` values (local folders or Hub ids) into `ServedModel`s with unique names.

    Args:
        models: local model folders (a fine-tuning output or a folder inside a Space) and/or Hub repo ids.

    Returns:
        One `ServedModel` per entry, in order. Local folders are named after the folder; their card links to the
        file inside the Space when running on Hugging Face Spaces (`SPACE_ID` set).

    Raises:
        HfgalError: no models, or an entry is neither an existing folder nor a Hub id.
    """
    from huggingface_hub import constants

    if not models:
        raise HfgalError("no model to serve; pass --model with a model folder or a Hub repo id")
    served: list[ServedModel] = []
    names: set[str] = set()
    for source in models:
        source = os.fspath(source)
        path = Path(source).expanduser()
        if path.is_dir():
            check_model_folder(path)
            name, card_url = path.resolve().name, _space_file_url(path / CARD_FILE)
        elif is_hub_id(source):
            name, card_url = source, f"{constants.ENDPOINT.rstrip('/')}/{source}"
        else:
            raise HfgalError(f"model folder {source} does not exist; pass a model folder or a Hub repo id (user/name)")
        base, n = name, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.add(name)
        served.append(
            ServedModel(name=name, source=str(path.resolve()) if path.is_dir() else source, card_url=card_url)
        )
    return served


def _space_file_url(path: Path) -> str | None:
    """Address of a file of the running Space (Spaces set SPACE_ID and run from the repo root)."""
    space_id = os.environ.get("SPACE_ID")
    if not space_id or not path.is_file():
        return None
    try:
        rel = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return None
    return f"https://huggingface.co/spaces/{space_id}/blob/main/{rel.as_posix()}"


def describe_prediction(scores: dict[str, float], true_label: str | None = None) -> str:
    """Markdown for the top classes: probability and one line of morphology each.

    Args:
        scores: class name -> probability.
        true_label: the Galaxy Zoo volunteers' class when the image is a labelled example.

    Returns:
        Markdown text; classes outside GZ10 are listed without a description.
    """
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    lines = []
    for i, (name, score) in enumerate(ranked[:3]):
        if i and score < _MIN_SHOWN_SCORE:
            break
        text = GZ10_DESCRIPTIONS.get(name, "")
        lines.append(f"**{name}** ({score:.1%}){': ' + text if text else ''}")
    if true_label is not None:
        verdict = "matches" if ranked and ranked[0][0] == true_label else "differs from"
        lines.append(f"*Galaxy Zoo volunteers' label: **{true_label}** (the top prediction {verdict} it).*")
    return "\n\n".join(lines)


class GalaxyDemo:
    """The demo's state and handlers: served models (loaded lazily, cached), examples, limits.

    Args:
        models: local model folders and/or Hub repo ids; the first is the default.
        examples_dir: folder of example galaxies (see `read_examples`), or None for no examples.
        title: page title and heading.
        top_k: classes shown in the label.
        max_pixels: largest image accepted (width x height); `hfgal.inference.DEFAULT_MAX_PIXELS` when None.
        occlusion_grid: occluder centres per side for the "where the model looked" map (grid**2 forward passes).
        max_examples: examples shown, one per class first (see `select_examples`).
        device: torch device for the models; CUDA when available when None.
    """

    def __init__(
        self,
        models: list[str],
        examples_dir: str | os.PathLike | None = None,
        title: str = DEFAULT_TITLE,
        *,
        top_k: int = 5,
        max_pixels: int | None = None,
        occlusion_grid: int = 5,
        max_examples: int = MAX_EXAMPLES,
        device: str | None = None,
    ) -> None:
        self.models = served_models(list(models))
        self.examples = select_examples(read_examples(examples_dir), max_examples) if examples_dir is not None else []
        self.title = title
        self.top_k = top_k
        self.max_pixels = max_pixels
        self.occlusion_grid = occlusion_grid
        self.device = device
        self._classifiers: dict[str, Any] = {}
        self._lock = threading.Lock()
        # Content hashes, not names: gradio copies example files into its cache under new folders.
        self._example_labels = {
            _sha256(path): GZ10_CLASSES[label] for path, label in self.examples if label is not None
        }

    # ------------------------------------------------------------------ models

    def model(self, name: str | None) -> ServedModel:
        """The served model called `name` (the first one when None)."""
        if not name:
            return self.models[0]
        for served in self.models:
            if served.name == name:
                return served
        raise HfgalError(f"unknown model {name!r}; choose one of {', '.join(m.name for m in self.models)}")

    def classifier(self, name: str | None) -> Any:
        """The loaded `GalaxyClassifier` for `name`, loading it on first use (one load even under concurrency)."""
        served = self.model(name)
        with self._lock:
            if served.name not in self._classifiers:
                from ..inference import load_classifier

                try:
                    self._classifiers[served.name] = load_classifier(served.source, device=self.device)
                except HfgalError:
                    raise
                except Exception as err:  # a broken folder or an unreachable Hub raise many types
                    reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
                    raise HfgalError(
                        f"could not load model {served.source} ({reason}); check the folder or id"
                    ) from None
            return self._classifiers[served.name]

    def model_markdown(self, name: str | None) -> str:
        """One line naming the selected model and linking its card."""
        served = self.model(name)
        if served.card_url:
            return f"Model: [{served.name}]({served.card_url}) (model card)"
        return f"Model: `{served.name}`"

    # ------------------------------------------------------------------ handlers

    def predict(self, path: str, model_name: str | None = None, tta: bool = False) -> dict[str, Any]:
        """Classify one image file.

        Args:
            path: image file (PNG/JPEG/..., FITS with astropy); checked by `hfgal.inference.load_image`.
            model_name: a served model's name; the first when None.
            tta: average the probabilities over the 8 dihedral views.

        Returns:
            `{"image": RGB PIL image, "scores": {class: probability} (all classes), "description": markdown}`; the
            scores are calibrated when the model has a calibration.json (and the description says so).

        Raises:
            HfgalError: unreadable, truncated or too large image, or a model that cannot be loaded.
        """
        from ..data.imageio import load_image

        image = load_image(path, max_pixels=self._max_pixels())
        classifier = self.classifier(model_name)
        probs = classifier.predict_proba([image], tta=bool(tta))[0]
        id2label = {int(k): v for k, v in classifier.id2label.items()}
        scores = {id2label.get(i, str(i)): float(p) for i, p in enumerate(probs)}
        true_label = self._example_labels.get(_sha256(path)) if self._example_labels else None
        description = describe_prediction(scores, true_label)
        if classifier.temperature is not None:
            # Said on the page: these are the model's probabilities after calibration, not its raw softmax.
            description += (
                f"\n\n*Scores are calibrated: temperature scaling with T = {classifier.temperature:.2f}, fitted on "
                "the validation split (see the model card).*"
            )
        return {"image": image, "scores": scores, "description": description}

    def explain(self, path: str, model_name: str | None = None, target: str | None = None) -> Image.Image:
        """The occlusion sensitivity map of `target` (a class name; the top class when None) over the image.

        Args:
            path: image file, as for `predict`.
            model_name: a served model's name; the first when None.
            target: the class to explain, usually the predicted one.

        Returns:
            An RGB overlay (see `hfgal.demo.saliency.render_overlay`).

        Raises:
            HfgalError: as `predict`, or a `target` the model does not know.
        """
        from ..data.imageio import load_image
        from .saliency import occlusion_map, render_overlay

        image = load_image(path, max_pixels=self._max_pixels())
        classifier = self.classifier(model_name)
        label2id = {v: int(k) for k, v in classifier.id2label.items()}
        if target is not None and target not in label2id:
            raise HfgalError(f"class {target!r} is not one of the model's classes; pick one of its labels")
        index = label2id[target] if target is not None else None
        heat = occlusion_map(classifier, image, target=index, grid=self.occlusion_grid)
        return render_overlay(image, heat)

    def _max_pixels(self) -> int:
        from ..data.imageio import DEFAULT_MAX_PIXELS

        return self.max_pixels or DEFAULT_MAX_PIXELS

    def classify(
        self, file: str | None, model_name: str | None = None, tta: bool = False
    ) -> tuple[dict[str, float] | None, str, Image.Image | None]:
        """Gradio handler for `/classify`: `(label scores, description, preview)`; user errors become `gr.Error`."""
        if not file:
            return None, "", None
        result = self._user_errors(self.predict, file, model_name, tta)
        preview = result["image"].copy()
        preview.thumbnail((384, 384))
        return result["scores"], result["description"], preview

    def explain_top(
        self, file: str | None, model_name: str | None = None, scores: dict[str, float] | str | None = None
    ) -> Image.Image | None:
        """Gradio handler for `/explain`: the occlusion map of the shown top class (run after `/classify`)."""
        if not file:
            return None
        if isinstance(scores, dict) and scores:
            target = max(scores, key=scores.get)
        else:
            target = scores if isinstance(scores, str) and scores else None
        return self._user_errors(self.explain, file, model_name, target)

    @staticmethod
    def _user_errors(fn: Any, file: str, *args: Any) -> Any:
        gr = require_gradio()
        path = os.fspath(file)
        try:
            return fn(path, *args)
        except HfgalError as err:
            # Uploads live in gradio's cache under hashed folders: name the file as the user knows it.
            raise gr.Error(str(err).replace(path, Path(path).name), print_exception=False) from None

    # ------------------------------------------------------------------ page

    def build(self) -> gr.Blocks:
        """Lay out the page and wire the events; returns the (not yet launched) `gr.Blocks`."""
        gr = require_gradio()
        suffixes = list(accepted_suffixes())
        kinds = "PNG, JPEG or FITS" if ".fits" in suffixes else "PNG or JPEG"
        several = len(self.models) > 1
        with gr.Blocks(title=self.title) as demo:
            gr.Markdown(
                f"# {self.title}\n"
                f"Upload a galaxy image ({kinds}) or click an example: the model sorts it into one of the 10 "
                f"[Galaxy10 DECaLS](https://huggingface.co/datasets/{DEFAULT_DATASET}) morphology classes "
                "and shows which part of the image drove its answer."
            )
            # Two columns of min_width 320 stack into one on phones.
            with gr.Row(equal_height=False):
                with gr.Column(min_width=320):
                    file = gr.File(
                        label=f"Galaxy image ({kinds})", file_types=suffixes, type="filepath", elem_id="galaxy-file"
                    )
                    preview = gr.Image(
                        label="Your galaxy", type="pil", format="png", interactive=False, height=256, elem_id="preview"
                    )
                    model = gr.Dropdown(
                        choices=[m.name for m in self.models],
                        value=self.models[0].name,
                        label="Model",
                        visible=several,
                        elem_id="model-choice",
                    )
                    model_info = gr.Markdown(self.model_markdown(None), elem_id="model-info")
                    tta = gr.Checkbox(
                        value=False,
                        label="Average over the 8 rotations and flips (test-time augmentation)",
                        info="Galaxies have no preferred orientation; averaging the 8 views is steadier but slower.",
                        elem_id="tta",
                    )
                    run = gr.Button("Classify", variant="primary", elem_id="classify")
                with gr.Column(min_width=320):
                    label = gr.Label(num_top_classes=self.top_k, label="Predicted class", elem_id="prediction")
                    description = gr.Markdown(elem_id="description")
                    saliency = gr.Image(
                        label="Where the model looked",
                        type="pil",
                        format="png",
                        interactive=False,
                        elem_id="saliency",
                    )
            if self.examples:
                # Full width below both columns, so phones show the result right under the upload.
                # The preview column makes the examples show as thumbnails; the file column feeds the model.
                gr.Examples(
                    examples=[[str(path), str(path)] for path, _ in self.examples],
                    inputs=[file, preview],
                    visible_columns=[1],
                    label="Example galaxies (click one)",
                    examples_per_page=20,
                    cache_examples=False,
                    elem_id="examples",
                )
            gr.Markdown(
                "*Where the model looked* is an occlusion sensitivity map: it hides one patch of the image at a time "
                "(filled with the sky level) and shows how much the top class's probability drops; bright regions "
                "mattered most. Predictions are for research and teaching, not a replacement for expert "
                "classification."
            )
            # The label comes first; the map (grid**2 forward passes, seconds on a CPU) follows when ready.
            gr.on(
                triggers=[file.change, model.change, tta.change, run.click],
                fn=self.classify,
                inputs=[file, model, tta],
                outputs=[label, description, preview],
                api_name="classify",
                trigger_mode="always_last",
            ).success(self.explain_top, inputs=[file, model, label], outputs=saliency, api_name="explain")
            model.change(self.model_markdown, inputs=model, outputs=model_info, api_visibility="private")
        return demo


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def build_demo(
    models: list[str],
    examples_dir: str | os.PathLike | None = None,
    title: str = DEFAULT_TITLE,
    **options: Any,
) -> gr.Blocks:
    """Build the Gradio galaxy classifier demo.

    Args:
        models: local model folders and/or Hub repo ids (a dropdown appears when there are several).
        examples_dir: folder of example galaxies shown as clickable examples (see `read_examples`).
        title: page title and heading.
        **options: `GalaxyDemo` options (`top_k`, `max_pixels`, `occlusion_grid`, `max_examples`, `device`).

    Returns:
        A `gr.Blocks`; call `.launch()` on it (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are honoured).

    Raises:
        HfgalError: gradio is missing, a model folder or the examples folder does not exist.
    """
    require_gradio()
    return GalaxyDemo(models, examples_dir, title, **options).build()
