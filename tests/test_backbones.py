"""Each backbone gets the input and training it was built for: effective processor normalisation (EfficientNet),
PyTorch-sense BatchNorm momentum, Zoobot's [0, 1] inputs, a linear probe that is linear with frozen BatchNorm
statistics, layer-wise learning-rate decay by stage, and a loss scale that does not depend on gradient accumulation
(on the installed transformers and on the 5.0 floor)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures.finetune import REPO_ROOT, launch_two_ranks, subprocess_env
from hfgal.models.adapt import classifier_layer, freeze_backbone, layer_groups
from hfgal.models.loading import is_zoobot_encoder, load_model

SAMPLE_IMAGE = REPO_ROOT / "tests" / "data" / "gz10-sample" / "0_0.png"  # a real GZ10 galaxy (class 0)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# google/efficientnet-b7 as published: preprocessor_config.json (495 bytes; the same file as google/efficientnet-b5's
# with size 600, written by transformers' convert_efficientnet_to_pytorch.py: image_std is sqrt of ImageNet's std and
# include_top makes the processor divide by it twice) and the structural fields of config.json (its 1000 ImageNet
# labels left out; the conversion script's b7 entry: hidden_dim 2560, width 2.0, depth 3.1, 600 px, dw_padding [18]).
EFFICIENTNET_B7_PREPROCESSOR = {
    "crop_size": {"height": 289, "width": 289},
    "do_center_crop": False,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "EfficientNetImageProcessor",
    "image_std": [0.47853944, 0.4732864, 0.47434163],
    "include_top": True,
    "resample": 0,
    "rescale_factor": 0.00392156862745098,
    "rescale_offset": False,
    "size": {"height": 600, "width": 600},
}
EFFICIENTNET_B7_CONFIG = {
    "architectures": ["EfficientNetForImageClassification"],
    "batch_norm_eps": 0.001,
    "batch_norm_momentum": 0.99,
    "depth_coefficient": 3.1,
    "depth_divisor": 8,
    "depthwise_padding": [18],
    "drop_connect_rate": 0.2,
    "dropout_rate": 0.5,
    "expand_ratios": [1, 6, 6, 6, 6, 6, 6],
    "hidden_act": "swish",
    "hidden_dim": 2560,
    "image_size": 600,
    "in_channels": [32, 16, 24, 40, 80, 112, 192],
    "initializer_range": 0.02,
    "kernel_sizes": [3, 3, 5, 3, 5, 5, 3],
    "model_type": "efficientnet",
    "num_block_repeats": [1, 2, 2, 3, 3, 4, 1],
    "num_channels": 3,
    "num_hidden_layers": 64,
    "out_channels": [16, 24, 40, 80, 112, 192, 320],
    "pooling_type": "mean",
    "squeeze_expansion_ratio": 0.25,
    "strides": [1, 2, 2, 2, 1, 2, 1],
    "width_coefficient": 2.0,
}
# Shrinks the B7 config for fast tests (hidden_dim = 1280 x width); its 7 stages and Keras momentum stay.
TINY_EFFICIENTNET = {"width_coefficient": 0.1, "depth_coefficient": 1.0, "hidden_dim": 128, "image_size": 32}

# mwalmsley/zoobot-encoder-convnext_nano as published (commit 9bad7d2): timm config.json, README.md, pytorch_model.bin.
ZOOBOT_CONVNEXT_NANO_CONFIG = {
    "architecture": "convnext_nano",
    "num_classes": 0,
    "num_features": 640,
    "pretrained_cfg": {
        "tag": "in12k_ft_in1k",
        "custom_load": False,
        "input_size": [3, 224, 224],
        "test_input_size": [3, 288, 288],
        "fixed_input_size": False,
        "interpolation": "bicubic",
        "crop_pct": 0.95,
        "test_crop_pct": 1.0,
        "crop_mode": "center",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "num_classes": 1000,
        "pool_size": [7, 7],
        "first_conv": "stem.0",
        "classifier": "head.fc",
    },
}
ZOOBOT_README = (
    "---\ntags:\n- image-classification\n- timm\nlibrary_name: timm\nlicense: apache-2.0\n---\n"
    "# Model card for zoobot-encoder-convnext_nano\n"
)

TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64}
TINY = {
    "convnextv2": ("convnextv2-tiny", {"depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64]}),
    "vit": ("vit-base", {**TINY_VIT, "image_size": 32, "patch_size": 8}),
    "swinv2": (
        "swinv2-base",
        {"embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "image_size": 32, "window_size": 2},
    ),
    "efficientnet": ("efficientnet-b7", TINY_EFFICIENTNET),
    "resnet": ("resnet-101", {"depths": [1, 1, 1, 1], "hidden_sizes": [8, 16, 32, 64], "embedding_size": 8}),
    "timm-resnet": ("timm:resnet18", {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}),
    # MaxViT-Base as Zoobot publishes it (maxvit_rmlp_base_rw_224), shrunk: BatchNorm in its stem and MBConv blocks,
    # a pre-logits MLP (Linear + tanh) before the classifier.
    "timm-maxvit": (
        "timm:maxvit_rmlp_base_rw_224",
        {
            "img_size": 64,
            "embed_dim": [16, 16, 32, 32],
            "depths": [1, 1, 1, 1],
            "stem_width": [8, 16],
            "head_hidden_size": 24,
            "transformer_dim_head": 8,
            "transformer_rel_pos_dim": 16,
        },
    ),  # fmt: skip
}


def _tiny(arch: str):
    name, overrides = TINY[arch]
    return load_model(name, config_overrides=overrides)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))


@pytest.fixture
def efficientnet_b7_folder(tmp_path) -> Path:
    folder = tmp_path / "efficientnet-b7"
    folder.mkdir()
    _write_json(folder / "config.json", EFFICIENTNET_B7_CONFIG)
    _write_json(folder / "preprocessor_config.json", EFFICIENTNET_B7_PREPROCESSOR)
    return folder


def _uint8_split(tmp_path: Path, n: int, size: int, seed: int = 0):
    from hfgal.data.cache import UInt8Images

    rng = np.random.default_rng(seed)
    path = tmp_path / f"images-{n}-{size}.npy"
    np.save(path, rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8))
    return UInt8Images(str(path), rng.integers(0, 10, size=n))


# ---------------------------------------------------------------------------------------------- input normalisation


def test_efficientnet_b7_gets_the_normalisation_its_processor_applies(efficientnet_b7_folder):
    from PIL import Image
    from transformers import AutoImageProcessor

    from hfgal.data.augment import normalize

    loaded = load_model(str(efficientnet_b7_folder), init="scratch", config_overrides=TINY_EFFICIENTNET)
    # The processor divides by image_std twice: effective std = image_std**2 = ImageNet's, not sqrt of it.
    assert loaded.mean == IMAGENET_MEAN
    assert np.allclose(loaded.std, IMAGENET_STD, atol=1e-6)
    assert loaded.image_size == (600, 600)

    # On a real galaxy, hfgal's uint8 -> float path gives the processor's own pixel values.
    image = Image.open(SAMPLE_IMAGE).convert("RGB").resize((600, 600), Image.Resampling.BILINEAR)
    processor = AutoImageProcessor.from_pretrained(efficientnet_b7_folder)
    expected = processor(images=image, return_tensors="pt")["pixel_values"]  # its resize to 600 is the identity
    uint8 = torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())[None]
    ours = normalize(uint8, loaded.mean, loaded.std)
    assert ours.shape == expected.shape
    assert torch.allclose(ours, expected, atol=1e-4)
    # Dividing once by the stated std (what hfgal did before) feeds the model inputs at ~0.48x the expected scale.
    once = normalize(uint8, EFFICIENTNET_B7_PREPROCESSOR["image_mean"], EFFICIENTNET_B7_PREPROCESSOR["image_std"])
    ratio = (once.flatten(2).std(-1) / expected.flatten(2).std(-1)).squeeze(0)
    assert torch.allclose(ratio, torch.tensor(IMAGENET_STD).sqrt(), atol=1e-3)


def test_processors_that_normalise_once_keep_their_stated_statistics(tmp_path):
    from transformers import ConvNextImageProcessor, ViTImageProcessor

    from hfgal.data.geometry import Geometry
    from hfgal.models.preprocessing import processor_normalization

    def image_settings(processor):
        return Geometry.from_processor(processor).height, *processor_normalization(processor)

    assert image_settings(ViTImageProcessor()) == (224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    imagenet = ConvNextImageProcessor(size={"shortest_edge": 224}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    assert image_settings(imagenet) == (224, IMAGENET_MEAN, IMAGENET_STD)
    # rescale_offset ([-1, 1] before normalising) and no normalisation at all are read from the processor too.
    from transformers import EfficientNetImageProcessor

    offset = EfficientNetImageProcessor(
        rescale_offset=True, rescale_factor=1 / 127.5, do_normalize=False, include_top=False
    )  # x / 127.5 - 1
    assert image_settings(offset)[1:] == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    # include_top divides by image_std even without do_normalize: (x / 255 - 0) / 0.5
    top_only = EfficientNetImageProcessor(do_normalize=False, image_std=[0.5, 0.5, 0.5])
    assert image_settings(top_only)[1:] == ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5))


# ------------------------------------------------------------------------------------------- BatchNorm momentum


def test_efficientnet_batch_norm_momentum_is_pytorch_sense(efficientnet_b7_folder):
    for loaded in (
        load_model(str(efficientnet_b7_folder), init="scratch", config_overrides=TINY_EFFICIENTNET),
        _tiny("efficientnet"),
    ):
        model = loaded.model
        assert model.config.batch_norm_momentum == 0.01  # Keras' 0.99 weighs the old statistics
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms and {m.momentum for m in norms} == {0.01}  # the expansion BatchNorms too (0.1 as built)

        # One training forward moves the running mean 1% of the way to the batch mean, not 99%.
        stem = model.efficientnet.embeddings.batchnorm
        seen = {}
        hook = stem.register_forward_hook(lambda m, inputs, out, seen=seen: seen.setdefault("x", inputs[0].detach()))
        before = stem.running_mean.clone()
        model.train()
        model(pixel_values=torch.randn(4, 3, 32, 32))
        hook.remove()
        batch_mean = seen["x"].mean(dim=(0, 2, 3))
        assert torch.allclose(stem.running_mean, 0.99 * before + 0.01 * batch_mean, atol=1e-6)

    # An explicit override is kept; a saved fine-tune (0.01 already) is not flipped back.
    kept = load_model("efficientnet-b7", config_overrides={**TINY_EFFICIENTNET, "batch_norm_momentum": 0.05})
    assert {m.momentum for m in kept.model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.05}
    saved = efficientnet_b7_folder.parent / "saved"
    _tiny("efficientnet").model.save_pretrained(saved)
    assert load_model(str(saved)).model.config.batch_norm_momentum == 0.01


# ------------------------------------------------------------------------------------------------------- Zoobot


def test_zoobot_encoders_are_recognised_by_id_and_by_layout(tmp_path):
    assert is_zoobot_encoder("mwalmsley/zoobot-encoder-maxvit_base_rw_224")
    assert is_zoobot_encoder("mwalmsley/zoobot-encoder-convnext_nano")
    assert not is_zoobot_encoder("timm/convnext_nano.in12k_ft_in1k")
    assert not is_zoobot_encoder("someone/zoobot-encoder-copy")  # the owner matters for Hub ids

    named = tmp_path / "zoobot-encoder-convnext_nano"  # a snapshot of the repo, by its name
    carded = tmp_path / "encoder"  # another name, the published card
    plain = tmp_path / "convnext_nano"
    run = tmp_path / "zoobot-encoder-convnext_nano-finetuned"  # an hfgal run: it states its own preprocessing
    for folder in (named, carded, plain, run):
        folder.mkdir()
        _write_json(folder / "config.json", ZOOBOT_CONVNEXT_NANO_CONFIG)
    (carded / "README.md").write_text(ZOOBOT_README)
    _write_json(run / "preprocessor_config.json", {"image_processor_type": "ViTImageProcessor"})
    assert is_zoobot_encoder(str(named)) and is_zoobot_encoder(str(carded))
    assert not is_zoobot_encoder(str(plain)) and not is_zoobot_encoder(str(run))


@pytest.mark.slow  # builds and saves the full convnext_nano (15.6M parameters)
def test_zoobot_folder_gets_unit_interval_inputs(tmp_path):
    import timm

    folder = tmp_path / "zoobot-encoder-convnext_nano"
    folder.mkdir()
    encoder = timm.create_model("convnext_nano", num_classes=0)
    torch.save(encoder.state_dict(), folder / "pytorch_model.bin")
    _write_json(folder / "config.json", ZOOBOT_CONVNEXT_NANO_CONFIG)
    (folder / "README.md").write_text(ZOOBOT_README)

    loaded = load_model(str(folder))
    assert loaded.init == "pretrained" and loaded.image_size == (224, 224)
    assert (loaded.mean, loaded.std) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # x / 255, as Zoobot trained it
    assert torch.equal(loaded.model.timm_model.stem[0].weight, encoder.stem[0].weight)  # its weights, loaded
    # The same files under another name and without the card are a plain timm model: its pretrained_cfg applies.
    plain = tmp_path / "convnext_nano"
    plain.mkdir()
    for name in ("config.json", "pytorch_model.bin"):
        (plain / name).write_bytes((folder / name).read_bytes())
    assert (load_model(str(plain)).mean, load_model(str(plain)).std) == (IMAGENET_MEAN, IMAGENET_STD)


# ------------------------------------------------------------------------------------------------- linear probe


@pytest.mark.parametrize(
    "arch, head",
    [
        ("convnextv2", "classifier"),
        ("resnet", "classifier.1"),  # Flatten + Linear
        ("timm-resnet", "timm_model.fc"),
        ("timm-maxvit", "timm_model.head.fc"),  # not head.pre_logits.fc
    ],
)
def test_classifier_layer_is_the_final_linear(arch, head):
    name, module = classifier_layer(_tiny(arch).model)
    assert name == head and isinstance(module, torch.nn.Module)


@pytest.mark.slow  # three Trainer steps of a MaxViT
def test_linear_probe_trains_only_the_classifier_and_keeps_batch_norm_statistics(tmp_path):
    from transformers import TrainingArguments

    from hfgal.data.cache import collate_uint8
    from hfgal.train.trainer import GZ10Trainer

    loaded = _tiny("timm-maxvit")
    model = loaded.model
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms  # MaxViT's stem and MBConv blocks hold BatchNorm
    # Without the probe, one training forward moves the running statistics.
    control = copy.deepcopy(model).train()
    control(pixel_values=torch.randn(4, 3, 64, 64))
    assert any(not torch.equal(a, b) for a, b in zip(control.buffers(), model.buffers(), strict=True))

    trainable = freeze_backbone(model)
    assert trainable == 24 * 10 + 10  # head.fc only: the pre-logits MLP (32 -> 24) stays frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = TrainingArguments(
        output_dir=str(tmp_path / "probe"), max_steps=3, per_device_train_batch_size=4, learning_rate=0.1,
        use_cpu=True, report_to="none", save_strategy="no", dataloader_num_workers=0, disable_tqdm=True,
        remove_unused_columns=False,
    )  # fmt: skip
    trainer = GZ10Trainer(
        model=model, args=args, train_dataset=_uint8_split(tmp_path, 12, 64), data_collator=collate_uint8,
        mean=loaded.mean, std=loaded.std, d4_augment=True, affine_augment=True,
    )  # fmt: skip
    trainer.train()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"timm_model.head.fc.weight", "timm_model.head.fc.bias"}  # no buffer (running stats) moved
    assert all(not m.training for m in norms)  # model.train() was called by the Trainer; the hooks undid it


# ---------------------------------------------------------------------------------------- layer-wise lr decay


@pytest.mark.parametrize(
    "arch, n_groups",
    [
        ("convnextv2", 6),  # stem, 4 stages, head
        ("vit", 5),  # embeddings, 3 blocks, norm + head
        ("swinv2", 6),
        ("efficientnet", 9),  # stem, 7 stages (blocks folded back), top conv + head
        ("resnet", 6),
        ("timm-resnet", 6),  # timm's own coarse grouping: stem, layer1-4, head
        ("timm-maxvit", 6),
    ],
)
def test_layer_groups_are_stages(tmp_path, arch, n_groups):
    from transformers import TrainingArguments

    from hfgal.train.trainer import GZ10Trainer

    loaded = _tiny(arch)
    groups = layer_groups(loaded.model)
    assert len(groups) == n_groups
    names = [n for n, _ in loaded.model.named_parameters()]
    assert sorted(sum(groups, [])) == sorted(names)  # every parameter once
    head_name, _ = classifier_layer(loaded.model)
    assert f"{head_name}.weight" in groups[-1] and names[0] in groups[0]

    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.05, use_cpu=True)
    trainer = GZ10Trainer(model=loaded.model, args=args, mean=loaded.mean, std=loaded.std, layer_decay=0.75)
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(loaded.model.named_parameters())
    assert lr_of[id(params[names[0]])] == pytest.approx(1e-3 * 0.75 ** (n_groups - 1))  # stem / embeddings
    assert lr_of[id(params[f"{head_name}.weight"])] == pytest.approx(1e-3)


def test_convnextv2_tiny_layer_decay_by_stage_not_by_block():
    # The full ConvNeXt V2-Tiny (3-3-9-3 blocks): by block it had 26 groups and a stem at 0.75**25 ~ 7.5e-4 x lr.
    groups = layer_groups(load_model("convnextv2-tiny").model)
    assert len(groups) == 6 and 0.75 ** (len(groups) - 1) > 0.2


# ----------------------------------------------------------------- label smoothing x gradient accumulation


def accumulation_step(
    out_dir: Path, images, batch: int, accumulation: int, loss_kwargs: bool | None = None
) -> tuple[dict[str, torch.Tensor], float]:
    """Gradients at the first optimizer step of a tiny ViT (its forward takes **kwargs) and the logged loss.

    `loss_kwargs` set: the Trainer's `model_accepts_loss_kwargs` is forced to it (True: transformers' own detection
    for ViT, i.e. without hfgal's setting).
    """
    from transformers import TrainerCallback, TrainingArguments

    from hfgal.data.cache import collate_uint8
    from hfgal.train.trainer import GZ10Trainer

    torch.manual_seed(0)
    loaded = load_model("vit-base", config_overrides={**TINY_VIT, "image_size": 16, "patch_size": 8})
    grads: dict[str, torch.Tensor] = {}

    class CaptureGradients(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            grads.update({n: p.grad.detach().clone() for n, p in loaded.model.named_parameters()})

    args = TrainingArguments(
        output_dir=str(out_dir), max_steps=1, per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation, label_smoothing_factor=0.1, learning_rate=0.1, optim="sgd",
        max_grad_norm=0.0, logging_steps=1, save_strategy="no", use_cpu=True, report_to="none",
        dataloader_num_workers=0, disable_tqdm=True, seed=0, remove_unused_columns=False,
    )  # fmt: skip
    trainer = GZ10Trainer(
        model=loaded.model, args=args, train_dataset=images, data_collator=collate_uint8, callbacks=[CaptureGradients],
        mean=loaded.mean, std=loaded.std, d4_augment=False, affine_augment=False,
    )  # fmt: skip
    if loss_kwargs is not None:
        trainer.model_accepts_loss_kwargs = loss_kwargs
    trainer.train()
    loss = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    return grads, loss


def _assert_same_scale(reference, other):
    (grads_a, loss_a), (grads_b, loss_b) = reference, other
    assert loss_b == pytest.approx(loss_a, rel=1e-4)
    for name, grad in grads_a.items():
        assert torch.allclose(grads_b[name], grad, rtol=1e-4, atol=1e-7), name


@pytest.mark.slow  # three one-step Trainer runs
def test_label_smoothed_loss_scale_does_not_depend_on_accumulation(tmp_path):
    import transformers

    images = _uint8_split(tmp_path, 8, 16)
    one = accumulation_step(tmp_path / "ga1", images, batch=8, accumulation=1)
    four = accumulation_step(tmp_path / "ga4", images, batch=2, accumulation=4)
    _assert_same_scale(one, four)
    if transformers.__version__ == "5.0.0":  # the floor (CI's floor job): without hfgal's setting, 4 steps give 4x
        _, loss_four = accumulation_step(tmp_path / "raw", images, batch=2, accumulation=4, loss_kwargs=True)
        assert loss_four == pytest.approx(4 * one[1], rel=1e-3)


@pytest.mark.slow  # two processes (DDP over gloo)
def test_label_smoothed_loss_scale_under_ddp_and_accumulation(tmp_path):
    images = _uint8_split(tmp_path, 8, 16)
    single = accumulation_step(tmp_path / "single", images, batch=8, accumulation=1)
    out = tmp_path / "ddp"
    script = [__file__, "ddp-accumulation", str(out), images.cache_path, json.dumps(images.labels.tolist())]
    env = subprocess_env(OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO_ROOT}:{REPO_ROOT / 'tests'}")
    proc = launch_two_ranks(script, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ddp = torch.load(out / "grads.pt"), json.loads((out / "loss.json").read_text())
    _assert_same_scale(single, ddp)  # 2 ranks x 2 images x 2 accumulation steps == 8 images in one step


def _ddp_accumulation(out: str, cache_path: str, labels: str) -> None:
    # Run by the DDP test on each rank: per-device batch 2, 2 accumulation steps; rank 0 writes what it saw.
    from accelerate import PartialState

    from hfgal.data.cache import UInt8Images
    from hfgal.train.trainer import end_distributed

    images = UInt8Images(cache_path, np.asarray(json.loads(labels)))
    grads, loss = accumulation_step(Path(out), images, batch=2, accumulation=2)
    if PartialState().is_main_process:
        torch.save(grads, Path(out) / "grads.pt")
        (Path(out) / "loss.json").write_text(json.dumps(loss))
    end_distributed()  # every rank leaves together: a rank exiting with a live process group can abort


if __name__ == "__main__" and sys.argv[1:2] == ["ddp-accumulation"]:
    _ddp_accumulation(*sys.argv[2:5])
