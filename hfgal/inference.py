"""Classifying galaxy images with a fine-tuned checkpoint: `load_classifier` and `GalaxyClassifier` (the library
behind `hfgal predict`, the demo and the Space).

A checkpoint is anything `AutoModelForImageClassification.from_pretrained` loads (an hfgal run folder, a Hub repo
pushed by hfgal, a timm model through TimmWrapper, the study authors' `*-finetuned-galaxy10-decals` repos), opened the
one way hfgal opens checkpoints (`hfgal.models.checkpoint.open_checkpoint`). Images are prepared by the checkpoint's
own image processor, as `pipeline()` loads it: for an hfgal run folder that is the processor whose pixels filled the
training cache, so the served pixels are the trained ones.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .constants import GZ10_CLASSES
from .data.geometry import Geometry
from .data.imageio import DEFAULT_MAX_PIXELS, MAX_FILE_BYTES, fits_to_rgb, load_image
from .errors import HfgalError
from .hub.access import is_hub_id
from .runs import CALIBRATION_FILE, MODEL_CONFIG_FILE, Calibration, check_model_folder, read_calibration

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_FILE_BYTES",
    "GalaxyClassifier",
    "fits_to_rgb",
    "load_classifier",
    "load_image",
]

logger = logging.getLogger(__name__)

_GENERIC_LABEL = re.compile(r"LABEL_\d+")


class GalaxyClassifier:
    """A loaded image classifier with the image processor it was trained with.

    Attributes:
        model: the `PreTrainedModel` in eval mode on `device`.
        processor: its image processor (resize, crop, normalisation), as `pipeline()` loads it.
        id2label: class index -> class name.
        device: where the model runs.
        source: the repo id or folder it was loaded from.
        calibration: the temperature saved with the model (calibration.json, `hfgal evaluate --calibrate`), or None.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        id2label: dict[int, str],
        device: torch.device,
        source: str,
        calibration: Calibration | None = None,
    ):
        self.model = model
        self.processor = processor
        self.id2label = id2label
        self.device = device
        self.source = source
        self.calibration = calibration

    @property
    def temperature(self) -> float | None:
        """The calibration temperature `predict_proba` applies by default, or None when the model has none."""
        return None if self.calibration is None else self.calibration.temperature

    def __repr__(self) -> str:
        return (
            f"GalaxyClassifier(source={self.source!r}, num_labels={len(self.id2label)}, "
            f"image_size={self.image_size}, device={self.device})"
        )

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @functools.cached_property
    def geometry(self) -> Geometry:
        """How the processor resizes (and centre-crops) an image to the model's input."""
        return Geometry.from_processor(self.processor)

    @property
    def image_size(self) -> int:
        """The input side `S` (the height, for a model with a non-square input)."""
        return self.geometry.height

    @functools.cached_property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        from .models.preprocessing import processor_normalization

        return processor_normalization(self.processor)

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean of 0-1 pixel values the processor subtracts."""
        return self.normalization[0]

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel std of 0-1 pixel values the processor divides by."""
        return self.normalization[1]

    def preprocess(self, images: Any) -> torch.Tensor:
        """Turn images into the model's input batch with the model's own image processor.

        Args:
            images: one image or a list of anything `load_image` takes.

        Returns:
            A `(B, 3, H, W)` float32 tensor on `device`.
        """
        import torch

        images = [load_image(image) for image in _as_list(images)]
        if not images:
            return torch.empty((0, 3, self.geometry.height, self.geometry.width), device=self.device)
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return pixels.to(device=self.device, dtype=torch.float32)

    def predict_proba(
        self, images: Any, *, tta: bool = False, batch_size: int = 32, calibrated: bool = True
    ) -> np.ndarray:
        """Class probabilities for each image.

        Args:
            images: one image or a list of anything `load_image` takes.
            tta: average the softmax over the 8 rotations/flips of each image (the D4 group).
            batch_size: images per forward pass.
            calibrated: apply the model's calibration temperature, when it has one (`softmax(log p / T)`; the
                predicted class is unchanged). False gives the probabilities the model itself outputs.

        Returns:
            A float32 array `(N, num_labels)` whose rows sum to 1.
        """
        return self._forward(images, tta, batch_size, calibrated, embed=False)[0]

    def embed(self, images: Any, *, tta: bool = False, batch_size: int = 32) -> np.ndarray:
        """The pooled features of each image: the vector the classification head maps to the logits.

        This is the model's own image representation (e.g. ConvNeXt's normed global average, ViT's final [CLS]
        token, DINOv2's [CLS] and mean patch token side by side, timm's `forward_head(pre_logits=True)`), so the
        logits are `head(embedding)`: what is near in it, the classifier treats alike.

        Args:
            images: one image or a list of anything `load_image` takes.
            tta: average the features over the 8 dihedral views of each image.
            batch_size: images per forward pass.

        Returns:
            A float32 array `(N, D)`.

        Raises:
            HfgalError: the model has no classification head hfgal can find (`classifier`, or timm's).
        """
        return self._forward(images, tta, batch_size, calibrated=False, embed=True)[1]

    def predict_and_embed(
        self, images: Any, *, tta: bool = False, batch_size: int = 32, calibrated: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(predict_proba(images), embed(images))` from one forward pass per view."""
        return self._forward(images, tta, batch_size, calibrated, embed=True)

    def _forward(
        self, images: Any, tta: bool, batch_size: int, calibrated: bool, embed: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from .data.augment import dihedral_view

        if batch_size < 1:
            raise HfgalError(f"batch_size must be at least 1, got {batch_size}")
        items = _as_list(images)
        dtype = next(self.model.parameters()).dtype
        temperature = self.temperature if calibrated else None
        probs_out, features_out, captured = [], [], []
        hook = self.head().register_forward_pre_hook(lambda _, args: captured.append(args[0])) if embed else None
        try:
            with torch.inference_mode():
                for start in range(0, len(items), batch_size):
                    x = self.preprocess(items[start : start + batch_size]).to(dtype)
                    # GZ10 galaxies have no preferred orientation: the 8 dihedral views are equally real.
                    views = range(8) if tta else range(1)
                    probs = sum(self._softmax(dihedral_view(x, k)) for k in views) / len(views)
                    if temperature is not None:
                        probs = (probs.clamp_min(torch.finfo(probs.dtype).tiny).log() / temperature).softmax(-1)
                    probs_out.append(probs.cpu().numpy())
                    if embed:  # (B, D) per view: the head's input, flattened (a ResNet head flattens (B, C, 1, 1))
                        views_features = [f.flatten(1).float() for f in captured]
                        features_out.append((sum(views_features) / len(views_features)).cpu().numpy())
                        captured.clear()
        finally:
            if hook is not None:
                hook.remove()
        probs = np.concatenate(probs_out) if probs_out else np.zeros((0, self.num_labels), np.float32)
        features = np.concatenate(features_out) if features_out else np.zeros((0, 0), np.float32)
        return probs.astype(np.float32, copy=False), features.astype(np.float32, copy=False)

    def _softmax(self, pixel_values: torch.Tensor) -> torch.Tensor:
        logits = self.model(pixel_values=pixel_values).logits
        return logits.float().softmax(dim=-1)

    def head(self) -> torch.nn.Module:
        """The classification head (its input is `embed`'s features): timm's `get_classifier()` for a timm model,
        else the `classifier` module every transformers image classifier (and hfgal's GCNN) has."""
        import torch

        timm_model = getattr(self.model, "timm_model", None)
        head = timm_model.get_classifier() if timm_model is not None else getattr(self.model, "classifier", None)
        if not isinstance(head, torch.nn.Module) or isinstance(head, torch.nn.Identity):
            raise HfgalError(
                f"{self.source}: no classification head found (a `classifier` module, or timm's get_classifier()); "
                "embeddings need one"
            )
        return head

    def predict(
        self, images: Any, *, top_k: int = 5, tta: bool = False, batch_size: int = 32
    ) -> list[list[dict[str, Any]]]:
        """Top-k labels per image, best first.

        Args:
            images: one image or a list of anything `load_image` takes; a single image still gets a list of one.
            top_k: labels kept per image (at most the number of classes).
            tta: average over the 8 D4 views.
            batch_size: images per forward pass.

        Returns:
            One list per image of `{"label": str, "score": float}`, sorted by decreasing score.
        """
        if top_k < 1:
            raise HfgalError(f"top_k must be at least 1, got {top_k}")
        probs = self.predict_proba(images, tta=tta, batch_size=batch_size)
        return [self.ranked_labels(row, top_k) for row in probs]

    __call__ = predict

    def ranked_labels(self, row: np.ndarray, k: int) -> list[dict[str, Any]]:
        """The `k` best labels of one row of `predict_proba`, best first, as `{"label", "score"}`."""
        order = np.argsort(-row, kind="stable")[: min(k, len(row))]
        return [{"label": self.id2label[int(i)], "score": float(row[i])} for i in order]


def _as_list(images: Any) -> list[Any]:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:  # a stacked (N, H, W, C) batch
        return list(images)
    return [images]


# --------------------------------------------------------------------------- loading


def load_classifier(
    repo_id_or_dir: str | os.PathLike,
    revision: str | None = None,
    *,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> GalaxyClassifier:
    """Load a fine-tuned image classifier and its preprocessing from a local folder or the Hugging Face Hub.

    Weights are read from safetensors when the checkpoint has them; a pickle-only checkpoint
    (`pytorch_model.bin`) is loaded only through `torch.load(weights_only=True)`, which refuses pickles that
    would run code. Hub ids fail fast (one metadata request) when unknown or unreachable.

    Args:
        repo_id_or_dir: an hfgal run folder, any transformers/TimmWrapper image-classification folder, or a Hub id
            such as `matthieulel/convnextv2-tiny-1k-224-finetuned-galaxy10-decals`.
        revision: Hub branch, tag or commit (ignored for local folders).
        device: `"cpu"`, `"cuda"`, `"cuda:1"`, `"mps"` or a `torch.device`; the best available when None.
        trust_remote_code: allow custom modelling code from the repo (it runs on this machine).

    Returns:
        A `GalaxyClassifier` in eval mode.

    Raises:
        HfgalError: missing folder, unknown/unreachable id or revision, unsafe or missing weights, bad device.
    """
    from .models.checkpoint import open_checkpoint

    source = os.fspath(repo_id_or_dir)
    torch_device = _resolve_device(device)
    folder = Path(source).expanduser()
    if folder.is_dir():
        if revision:
            logger.warning("revision=%r ignored: %s is a local folder", revision, folder)
            revision = None
        use_safetensors = _local_weights(folder)
        load_from = str(folder)
    else:
        _check_hub_id(source, revision)
        use_safetensors = None  # safetensors first, `.bin` only if the repo has nothing else
        load_from = source
    checkpoint = open_checkpoint(
        load_from,
        revision=revision,
        trust_remote_code=trust_remote_code,
        use_safetensors=use_safetensors,
        remote_code_flag="trust_remote_code=True (hfgal predict --trust-remote-code)",
        hint="pass a run folder or a Hub image-classifier id",
    )
    processor = checkpoint.processor or _fallback_processor(load_from, checkpoint.model)
    model = checkpoint.model.eval().to(torch_device)
    calibration = read_calibration(folder) if folder.is_dir() else _hub_calibration(source, revision)
    return GalaxyClassifier(model, processor, _id2label(checkpoint.config), torch_device, source, calibration)


def _hub_calibration(repo_id: str, revision: str | None) -> Calibration | None:
    """The repo's calibration.json (`hfgal evaluate --calibrate`, pushed with the model), or None without one."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(repo_id, CALIBRATION_FILE, revision=revision)
    except EntryNotFoundError:  # not in the repo, or (offline) not in the cache
        return None
    return read_calibration(Path(path).parent)


def _resolve_device(device: Any) -> torch.device:
    import torch

    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise HfgalError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise HfgalError(f"device {device!r} asked for but no CUDA GPU is visible; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise HfgalError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    if resolved.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise HfgalError(f"device {device!r} asked for but MPS is not available; use --device cpu")
    return resolved


def _local_weights(folder: Path) -> bool:
    """`use_safetensors` for a local folder: True when it has safetensors, False for a pickle-only one."""
    hint = "pass a run folder or a saved transformers/timm model"
    weights = check_model_folder(folder, hint=hint, allow_pickle=True)
    if not weights[0].endswith((".safetensors", ".safetensors.index.json")):
        logger.warning("%s has only pickled weights; loading them with torch.load(weights_only=True)", folder)
        return False
    return True


def _check_hub_id(source: str, revision: str | None) -> None:
    """Fail in seconds, with a useful message, for ids that are not folders and cannot come from the Hub."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if not is_hub_id(source):
        raise HfgalError(f"{source}: no such model folder (and not a Hub repo id); check the path")
    hint = "check the id, or pass a local folder holding config.json and model.safetensors"
    if isinstance(try_to_load_from_cache(source, MODEL_CONFIG_FILE, revision=revision), str):
        return  # in the local cache: from_pretrained revalidates online and falls back to it offline
    if constants.is_offline_mode():
        raise HfgalError(
            f"{source!r} is not a local folder and not in the Hugging Face cache, and HF_HUB_OFFLINE is set; "
            "download it once online or pass a local folder"
        )
    try:
        # The HEAD request the download would start with, but without retries: a wrong id or a missing network
        # answers here in seconds instead of after the download's minute of backoff.
        get_hf_file_metadata(hf_hub_url(source, MODEL_CONFIG_FILE, revision=revision), timeout=10)
    except GatedRepoError:
        raise HfgalError(f"{source!r} is gated; accept its terms on the Hub and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise HfgalError(
            f"model {source!r} not found on {constants.ENDPOINT} (or private: log in with hf auth login); {hint}"
        ) from None
    except RevisionNotFoundError:
        raise HfgalError(f"revision {revision!r} not found in {source!r}; check --revision") from None
    except RemoteEntryNotFoundError:
        raise HfgalError(f"{source!r} has no config.json, so it is not a transformers or timm model repo") from None
    except HfHubHTTPError as err:
        raise HfgalError(f"the Hub refused {source!r} ({str(err).splitlines()[0]}); {hint}") from None
    except Exception as err:  # noqa: BLE001 - connection errors come from the Hub client's HTTP library
        raise HfgalError(
            f"could not reach {constants.ENDPOINT} to fetch {source!r} ({type(err).__name__}: {err}); "
            f"check the network, set HF_HUB_OFFLINE=1 to use the cache, or pass a local folder"
        ) from None


def _fallback_processor(load_from: str, model: Any) -> Any:
    """An image processor for a checkpoint that has none: a timm model's own data config, or a transformers model's
    configured image size with ImageNet statistics (with a warning)."""
    from .models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, processor_normalization

    timm_model = getattr(model, "timm_model", None)
    if timm_model is not None:
        # A TimmWrapper folder without pretrained_cfg: the architecture's own timm defaults apply.
        from timm.data import resolve_data_config

        data_config = resolve_data_config(model=timm_model)
        return Geometry.from_timm(data_config).image_processor(*processor_normalization(data_config))
    size = getattr(model.config, "image_size", None)
    if not isinstance(size, int):
        raise HfgalError(f"{load_from}: no usable preprocessor_config.json; save the image processor with the model")
    logger.warning("%s has no preprocessor_config.json; using %dx%d and ImageNet statistics", load_from, size, size)
    return Geometry(size).image_processor(IMAGENET_MEAN, IMAGENET_STD)


def _id2label(config: Any) -> dict[int, str]:
    num_labels = int(getattr(config, "num_labels", 0) or len(config.id2label))
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    if sorted(id2label) != list(range(num_labels)):
        id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
    if num_labels == len(GZ10_CLASSES) and all(_GENERIC_LABEL.fullmatch(v) for v in id2label.values()):
        logger.warning("the model has generic labels LABEL_0..9; reading them as the 10 GZ10 classes in order")
        id2label = dict(enumerate(GZ10_CLASSES))
    return id2label
