"""The rotation-equivariant GCNN (`gz10_equivariant`): invariance, registration, the recipe, and loading without hfgal.

Invariance is checked where it is exact (the 8 D4 views: pixel-grid rotations by 90 degrees and flips) and measured
where it is approximate (arbitrary rotations of C8/D8/D16 models). Loading without hfgal runs in a separate Python
whose import system refuses `hfgal`, on a copy of a saved folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hfgal.data.augment import dihedral_view
from hfgal.errors import HfgalError
from hfgal.models.adapt import freeze_backbone, freeze_unused_parameters, layer_groups
from hfgal.models.equivariant import AUTO_MAP, CODE_FILES, MODEL_TYPE, NAMED_CONFIGS, write_remote_code
from hfgal.models.equivariant.architecture import PUBLISHED_D16, layer_table
from hfgal.models.equivariant.invariance import rotation_invariance
from hfgal.models.loading import load_model

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "tests" / "data" / "gz10-sample"
# A shrunk gcnn-d4-tiny: 2 + 4 + 8 fields, fast enough for unit tests.
SMALL = {"stem_size": 2, "hidden_sizes": [4, 8], "depths": [1, 1]}


def small_model(group: str = "D4", **overrides):
    torch.manual_seed(0)
    return load_model("gcnn-d4-tiny", init="scratch", config_overrides={**SMALL, "group": group, **overrides}).model


def view_logits(model, x: torch.Tensor) -> torch.Tensor:
    """Logits of the 8 D4 views of a batch, `(8, B, classes)`."""
    model.eval()
    with torch.no_grad():
        return torch.stack([model(pixel_values=dihedral_view(x, k)).logits for k in range(8)])


def train_steps(model, steps: int = 5, size: int = 33) -> None:
    """A few AdamW steps on random images and labels, batch norm in training mode."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 3, size, size, generator=generator)
        labels = torch.randint(0, 10, (8,), generator=generator)
        model(pixel_values=x, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


# --------------------------------------------------------------------------- exact D4 invariance


@pytest.mark.parametrize("group", ["D4", "D8", pytest.param("D16", marks=pytest.mark.slow)])
@pytest.mark.parametrize("size", [32, 33])
def test_logits_of_the_8_d4_views_agree_at_init_and_after_training(group, size):
    model = small_model(group)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    for stage in ("random init", "trained"):
        logits = view_logits(model, x)
        scale = logits[0].abs().max()
        assert scale > 1e-3, stage  # the logits are not trivially constant
        assert (logits - logits[0]).abs().max() <= 1e-5 * max(1.0, float(scale)), (group, size, stage)
        # ...while the classes do get different logits: invariance is not the model ignoring its input.
        assert logits[0].std(dim=-1).min() > 1e-4
        train_steps(model, size=size)
    assert not torch.equal(view_logits(model, x)[0], logits[0])  # training changed the model


# The published GCNN's layout in miniature: per-layer widths, a padded stride-2 lifting convolution, an unpadded last
# convolution, pooling after it, escnn's ring widths.
PUBLISHED_LAYOUT = {
    "filter_basis": "steerable",
    "ring_sigmas": [0.005, 0.4],
    "stem_stride": 2,
    "stem_padding": 2,
    "hidden_sizes": [[4], [4, 8]],
    "depths": None,
    "last_layer_padding": 0,
    "pool_after_last_stage": True,
}


@pytest.mark.parametrize("size", [32, 33])
def test_the_published_layout_keeps_the_8_d4_views_exact(size):
    model = small_model("D8", **PUBLISHED_LAYOUT)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    for stage in ("random init", "trained"):
        logits = view_logits(model, x)
        assert (logits - logits[0]).abs().max() <= 1e-5 * max(1.0, float(logits[0].abs().max())), (size, stage)
        assert logits[0].std(dim=-1).min() > 1e-4
        train_steps(model, size=size)


def test_cyclic_groups_are_invariant_to_rotations_only_and_c1_to_nothing():
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    c4 = view_logits(small_model("C4"), x)
    assert (c4[:4] - c4[0]).abs().max() < 1e-6  # the 4 rotations
    assert (c4[4:] - c4[0]).abs().max() > 1e-4  # mirror images are different galaxies to a C4 model
    c1 = view_logits(small_model("C1"), x)  # the same architecture without symmetry: a plain CNN
    assert (c1[1:] - c1[0]).abs().amax(dim=(1, 2)).min() > 1e-4


def test_input_layout_and_dtype_do_not_change_the_logits():
    model = small_model("D8").eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(pixel_values=x).logits
        channels_last = model(pixel_values=x.contiguous(memory_format=torch.channels_last)).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(pixel_values=x).logits.float()
    torch.testing.assert_close(channels_last, ref, rtol=1e-4, atol=1e-5)
    assert (bf16 - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3


def test_eval_folds_batch_norm_into_a_cached_kernel_until_a_weight_changes():
    model = small_model("D4")
    train_steps(model, steps=2)  # batch-norm statistics away from their init
    model.eval()
    x = torch.randn(4, 3, 33, 33, generator=torch.Generator().manual_seed(2))
    layer = model.gcnn.stages[1][0]
    reference = model(pixel_values=x).logits.detach()  # autograd on: the unfolded path, no cache
    assert layer.folded is None
    with torch.no_grad():
        cached = model(pixel_values=x).logits
        kernel = layer.folded[1]
        again = model(pixel_values=x).logits
    torch.testing.assert_close(cached, reference, rtol=1e-4, atol=1e-5)
    assert layer.folded[1] is kernel and torch.equal(again, cached)  # expanded once, reused
    with torch.no_grad():
        layer.conv.weight.mul_(-1.0)  # an in-place change, as an optimizer step or load_state_dict makes
        changed = model(pixel_values=x).logits
    assert layer.folded[1] is not kernel
    torch.testing.assert_close(changed, model(pixel_values=x).logits.detach(), rtol=1e-4, atol=1e-5)
    assert (changed - cached).abs().max() > 1e-4
    model.train()
    assert all(m.folded is None for m in model.modules() if hasattr(m, "folded"))


# --------------------------------------------------------------------------- finer groups: measured, not exact


@pytest.mark.slow
def test_finer_groups_measured_invariance_to_arbitrary_rotations(galaxies, capsys):
    """Measure (and print) how far arbitrary rotations move the logits; the finer the group, the smaller."""
    angles = [15.0, 30.0, 45.0, 60.0, 90.0]
    errors = {}
    for group in ("C1", "D4", "D8", "D16"):
        model = small_model(group)
        measured = rotation_invariance(model, galaxies, angles, size=48, mean=(0.5,) * 3, std=(0.25,) * 3)
        errors[group] = {m.degrees: m.relative_change for m in measured}
        with capsys.disabled():
            print(f"\n{group} relative logit change:", {a: round(e, 4) for a, e in errors[group].items()})
    for group in ("D4", "D8", "D16"):
        assert errors[group][90.0] < 1e-3  # 90 degrees: exact up to the interpolation of the rotation itself
    off_grid = [15.0, 30.0, 45.0, 60.0]
    mean = {g: sum(errors[g][a] for a in off_grid) / len(off_grid) for g in errors}
    assert mean["D16"] < mean["D4"] < mean["C1"]
    assert mean["D8"] < mean["D4"]
    assert errors["D8"][45.0] < errors["D4"][45.0]  # 45 degrees is an element of D8


@pytest.fixture(scope="module")
def galaxies() -> torch.Tensor:
    """Twelve synthetic galaxies at full resolution, `(12, 3, 256, 256)` uint8."""
    from hfgal.data.synthetic import synthetic_catalog, synthetic_images

    catalog = synthetic_catalog(60, seed=7, proportions="balanced")
    return torch.from_numpy(synthetic_images(0, 12, catalog["label"], seed=7)).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------- named configs and hfgal integration


def test_named_configs_build_and_bad_overrides_are_one_line_errors():
    sizes = {}
    for name in NAMED_CONFIGS:
        loaded = load_model(name, init="scratch")
        config = loaded.model.config
        assert loaded.model_type == MODEL_TYPE and loaded.init == "scratch"
        assert loaded.image_size == (config.image_size, config.image_size)
        assert config.num_labels == 10 and config.id2label[5] == "Barred Spiral"
        sizes[name] = sum(p.numel() for p in loaded.model.parameters())
    assert sizes["gcnn-d4-tiny"] < sizes["gcnn-d8-small"] < sizes["gcnn-d16-base"]
    assert sizes["gcnn-d4-tiny"] < 300_000  # trains on a 2-core CPU in minutes
    base = load_model("gcnn-d16-base", init="scratch").model.config
    assert (base.group, base.kernel_size, base.image_size, base.stem_size) == ("D16", 3, 255, 12)
    assert 10e6 < sizes["gcnn-d16-base"] < 20e6
    for overrides, fragment in (
        ({"group": "E7"}, "group 'E7' is not valid"),
        ({"group": "D8", "filter_basis": "free"}, "needs steerable"),
        ({"hidden_sizes": [4, 8], "depths": [1]}, "equal length"),
        ({"kernel_size": 4}, "must be odd"),
        ({"hidden_sizes": [[4, 8], [8]], "depths": [1, 1]}, "disagree with the per-layer widths"),
        ({"hidden_sizes": [[4, 0]]}, "must be positive"),
        ({"stem_padding": -1}, "stem_padding -1 must be between 0 and kernel_size 3"),
        ({"filter_basis": "steerable", "ring_sigmas": [0.5]}, "must be 2 positive widths"),
    ):
        with pytest.raises(HfgalError, match=fragment):
            load_model("gcnn-d4-tiny", init="scratch", config_overrides=overrides)


def test_gcnn_d16_base_is_the_published_gcnn_block_by_block():
    """Fields, map sides, pooling positions and parameters of every block, against the published code's layers
    (github.com/snehjp2/GCNNMorphology, counted with escnn); traced on the meta device, so no compute."""
    config = load_model("gcnn-d16-base", init="scratch").model.config
    blocks, totals = layer_table(config)
    assert blocks == list(PUBLISHED_D16)
    assert [b.block for b in blocks if b.pooled_side] == [2, 4, 7, 9, 10, 11]
    assert totals["params"] == sum(b.params for b in PUBLISHED_D16) + 192 * 10 + 10  # + the linear head
    assert totals["forward_flops"] > 1e11  # |G| = 32 channels per field at 255 px: hundreds of GFLOPs per image
    # The published baselines are the same network with another group: fields stay, parameters scale with |G|.
    c1 = load_model("gcnn-d16-base", init="scratch", config_overrides={"group": "C1"}).model.config
    c1_blocks, _ = layer_table(c1)
    assert [b.fields for b in c1_blocks] == [b.fields for b in blocks]
    assert [b.side for b in c1_blocks] == [b.side for b in blocks]
    assert c1_blocks[5].params == 48 * 48 * 6 + 2 * 48  # 6 basis kernels per pair of fields, as escnn's C1


def test_fine_tuning_helpers_see_an_ordinary_model():
    model = small_model("D4")
    assert freeze_unused_parameters(model, (33, 33)) == []  # DDP needs no search for unused parameters
    groups = layer_groups(model)
    assert len(groups) >= 3 and any("classifier" in n for n in groups[-1])
    trainable = freeze_backbone(model)
    assert trainable == sum(p.numel() for p in model.classifier.parameters())


def test_save_and_load_round_trip_with_remote_code_off(tmp_path):
    model = small_model("D16")
    train_steps(model, steps=2, size=32)  # batch-norm statistics and weights away from their init
    model.eval()
    model.save_pretrained(tmp_path)
    written = write_remote_code(tmp_path)
    assert written == list(CODE_FILES)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == MODEL_TYPE and config["auto_map"] == AUTO_MAP
    for name in CODE_FILES:
        packaged = REPO_ROOT / "hfgal" / "models" / "equivariant" / name
        assert (tmp_path / name).read_text() == packaged.read_text()
    # hfgal loads its own registered class, with trust_remote_code off.
    loaded = load_model(str(tmp_path), init="pretrained", trust_remote_code=False).model.eval()
    assert type(loaded).__module__ == "hfgal.models.equivariant.modeling_gz10_equivariant"
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=x).logits, model(pixel_values=x).logits)
    # Other model folders are left alone.
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "convnextv2"}))
    assert write_remote_code(other) == [] and sorted(p.name for p in other.iterdir()) == ["config.json"]


def run_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_import_hfgal_leaves_the_import_system_alone_and_imports_no_torch():
    code = textwrap.dedent(
        """
        import sys
        before = list(sys.meta_path), list(sys.path_hooks)
        import hfgal
        assert (list(sys.meta_path), list(sys.path_hooks)) == before, sys.meta_path
        assert not [f for f in sys.meta_path if type(f).__module__.startswith("hfgal")]
        print(sorted({"torch", "transformers", "hfgal.models"} & set(sys.modules)))
        """
    )
    assert run_python(code) == "[]"


@pytest.mark.slow
def test_import_hfgal_models_registers_the_type_with_the_auto_classes_and_pipeline(tmp_path):
    code = textwrap.dedent(
        f"""
        import hfgal.models
        from PIL import Image
        from transformers import AutoConfig, AutoModelForImageClassification, ViTImageProcessor, pipeline

        config = AutoConfig.for_model("gz10_equivariant", group="D4", hidden_sizes=[4], num_labels=10)
        model = AutoModelForImageClassification.from_config(config)
        model.save_pretrained({str(tmp_path)!r})
        ViTImageProcessor(size={{"height": 32, "width": 32}}).save_pretrained({str(tmp_path)!r})
        classify = pipeline("image-classification", model={str(tmp_path)!r}, top_k=3)
        scores = classify(Image.open({str(SAMPLE / "2_0.png")!r}))
        print(type(model).__module__, type(classify.model).__module__, len(scores), sep="|")
        """
    )
    module, pipeline_module, n = run_python(code).splitlines()[-1].split("|")
    assert module == pipeline_module == "hfgal.models.equivariant.modeling_gz10_equivariant" and n == "3"


# --------------------------------------------------------------------------- the recipe, the pipeline, the Hub


def recipe_args(out: Path, max_steps: int, **extra) -> list[str]:
    from fixtures.finetune import finetune_args

    gcnn = {"model": "gcnn-d4-tiny", "model_config_overrides": "{}", "init": "scratch", "image_size": 33}
    settings = {"max_train_samples": 128, "per_device_eval_batch_size": 128, **gcnn, **extra}
    return finetune_args(out, "synthetic:2000", max_steps=max_steps, **settings)


@pytest.fixture(scope="module")
def equivariant_run(tmp_path_factory, image_cache) -> Path:
    """The issue's check, in miniature: the smallest named config trained by the recipe on synthetic:2000, resumed."""
    from fixtures.finetune import run_finetune_main

    out = tmp_path_factory.mktemp("equivariant") / "gcnn-d4-tiny"
    assert run_finetune_main(recipe_args(out, max_steps=2)) == 0
    # Relaunched with more steps, it resumes from its last checkpoint (the finished run is trained further).
    assert run_finetune_main(recipe_args(out, 4, resume_from_checkpoint="true", overwrite_output_dir="true")) == 0
    return out


@pytest.mark.slow
def test_recipe_trains_evaluates_cards_and_the_folder_serves_a_pipeline(equivariant_run):
    from transformers import pipeline

    from hfgal.inference import load_classifier
    from hfgal.runs import read_results

    record = read_results(equivariant_run)
    assert record is not None and record.model == "gcnn-d4-tiny" and record.model_type == MODEL_TYPE
    assert record.init == "scratch" and record.global_step == 4 and record.image_size == 33
    assert 0.0 <= record.test.accuracy <= 1.0 and len(record.test.confusion_matrix) == 10
    card = (equivariant_run / "README.md").read_text()
    assert "gcnn-d4-tiny" in card
    config = json.loads((equivariant_run / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP and all((equivariant_run / n).is_file() for n in CODE_FILES)

    image = str(SAMPLE / "5_0.png")
    classifier = pipeline("image-classification", model=str(equivariant_run), top_k=10)
    predictions = classifier(image)
    assert len(predictions) == 10 and abs(sum(p["score"] for p in predictions) - 1) < 1e-4
    assert {p["label"] for p in predictions} == set(config["id2label"].values())
    assert type(classifier.model).__module__.startswith("hfgal.")  # hfgal's class, no remote code run
    # hfgal's own classifier agrees with the pipeline, and TTA changes nothing for an exactly D4-invariant model.
    clf = load_classifier(str(equivariant_run))
    plain, tta = clf.predict_proba([image]), clf.predict_proba([image], tta=True)
    assert abs(float(plain.max()) - max(p["score"] for p in predictions)) < 1e-3
    assert abs(plain - tta).max() < 1e-5


@pytest.mark.slow
def test_torch_compile_gives_the_eager_logits_and_trains_through_the_recipe(tmp_path, monkeypatch, image_cache):
    from fixtures.finetune import run_finetune_main
    from hfgal.runs import read_results

    model = small_model("D4")
    compiled = torch.compile(model)
    x = torch.randn(4, 3, 33, 33, generator=torch.Generator().manual_seed(4))
    for mode in ("train", "eval"):  # training: batch statistics, no kernel cache; eval: the folded kernels
        getattr(model, mode)()
        with torch.no_grad():
            torch.testing.assert_close(
                compiled(pixel_values=x).logits, model(pixel_values=x).logits, rtol=1e-4, atol=1e-5
            )
    # --torch_compile true in the recipe: Accelerate compiles the model (torch.compile is watched, not replaced).
    calls, real_compile = [], torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda *args, **kwargs: calls.append(kwargs) or real_compile(*args, **kwargs)
    )
    out = tmp_path / "compiled"
    # One batch per evaluated split (200 images each), so one evaluation graph: the compiling stays short.
    argv = recipe_args(out, max_steps=2, torch_compile="true", per_device_eval_batch_size=256)
    assert run_finetune_main(argv) == 0
    record = read_results(out)
    assert calls and record is not None and record.global_step == 2 and 0 <= record.test.accuracy <= 1


@pytest.mark.slow
def test_saved_run_loads_with_remote_code_where_hfgal_is_not_importable(equivariant_run, tmp_path):
    import numpy as np
    from PIL import Image

    folder = Path(shutil.copytree(equivariant_run, tmp_path / "gz10-gcnn", ignore=shutil.ignore_patterns("check*")))
    pixels = np.asarray(Image.open(SAMPLE / "2_0.png").convert("RGB").resize((33, 33)), dtype=np.float32) / 255
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    model = load_model(str(folder)).model.eval()
    with torch.no_grad():
        expected = model(pixel_values=x).logits
    torch.save({"x": x, "logits": expected}, tmp_path / "reference.pt")
    code = textwrap.dedent(
        f"""
        import sys

        class NoHfgal:  # a Python where hfgal is not installed
            def find_spec(self, name, path=None, target=None):
                if name == "hfgal" or name.startswith("hfgal."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

        sys.meta_path.insert(0, NoHfgal())
        try:
            import hfgal
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("hfgal is importable")
        import torch
        from transformers import AutoModelForImageClassification, pipeline

        folder = {str(folder)!r}
        model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
        reference = torch.load({str(tmp_path / "reference.pt")!r})
        with torch.no_grad():
            difference = (model(pixel_values=reference["x"]).logits - reference["logits"]).abs().max().item()
        labels = pipeline("image-classification", model=folder, trust_remote_code=True)({str(SAMPLE / "2_0.png")!r})
        assert not [m for m in sys.modules if m.startswith("hfgal")]
        print(type(model).__module__, difference, labels[0]["label"], sep="|")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")  # where transformers puts the repo's code
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    module, difference, label = done.stdout.strip().splitlines()[-1].split("|")
    assert module.startswith("transformers_modules.") and module.endswith("modeling_gz10_equivariant")
    assert float(difference) < 1e-5
    assert label in json.loads((folder / "config.json").read_text())["id2label"].values()


def test_push_run_uploads_the_modelling_code(tmp_path, monkeypatch):
    """A pushed equivariant run carries its code, so the Hub repo loads with trust_remote_code=True without hfgal."""
    from huggingface_hub import HfApi

    from hfgal.hub.push import push_run

    run = tmp_path / "run"
    model = small_model("D4")
    model.save_pretrained(run)
    write_remote_code(run)
    make_finished(run)
    uploads = []

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        uploads.append(sorted(p.name for p in folder.iterdir()))
        return SimpleNamespace(commit_url="https://huggingface.co/astro-user/gz10-gcnn/commit/0")

    monkeypatch.setenv("HF_TOKEN", "hf_test_token_equivariant")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: SimpleNamespace(repo_id=repo_id))
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    push_run(run, "astro-user/gz10-gcnn")
    assert len(uploads) == 1 and set(CODE_FILES) <= set(uploads[0])
    assert {"config.json", "model.safetensors", "README.md", "results.json"} <= set(uploads[0])


def make_finished(run: Path) -> None:
    """Give a saved model folder the results.json, config.yaml and processor a finished recipe run has."""
    from transformers import ViTImageProcessor

    from fixtures.runs import make_run_dir

    template = make_run_dir(run.parent / "template")
    for name in ("results.json", "config.yaml", "confusion_matrix.png"):
        shutil.copy(template / name, run / name)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(run)


# --------------------------------------------------------------------------- the study


@pytest.mark.slow
def test_study_yaml_plans_the_gcnn_rows_and_the_report_gives_them_their_own_group(tmp_path):
    from fixtures.runs import fake_predictions, make_results
    from hfgal.study.plan import load_study
    from hfgal.study.report import build_report, write_report
    from hfgal.study.runner import run_study
    from hfgal.train.metrics import compute_gz10_metrics

    study = load_study(REPO_ROOT / "recipes" / "study" / "equivariant.yaml")
    assert study.protocol.name == "honest" and study.dataset == "zenodo" and study.seeds == (0, 1, 2)
    assert {r.model for r in study.runs} == {"gcnn-d16-base"} and all(r.init == "scratch" for r in study.runs)
    groups = {r.entry: (r.model_config_overrides or {}).get("group", "D16") for r in study.runs}
    assert groups == {"gcnn-d16": "D16", "gcnn-d8": "D8", "gcnn-d4": "D4", "gcnn-c1-cnn": "C1"}
    run = study.runs[0].args
    assert (run["image_size"], run["learning_rate"], run["num_train_epochs"]) == ("255", 1e-2, 100)
    # The published step schedule (x0.1 at epochs 25, 50, 75), not a cosine: hfgal.train.schedules
    assert (run["lr_step_epochs"], run["lr_step_gamma"], run["warmup_steps"]) == ("25,50,75", 0.1, 0)
    assert "lr_scheduler_type" not in run

    # A study with one foundation-model row and the equivariant rows, finished runs made up: the GCNNs get their
    # own table and plot group, and are not in Table 1.
    mini = {
        "name": "mix",
        "dataset": "synthetic:60",
        "seeds": [0, 1],
        "runs": [
            {"name": "convnextv2-nano", "table": 1, "model": "facebook/convnextv2-nano-22k-224"},
            {"name": "gcnn-d16", "table": 1, "model": "gcnn-d16-base", "init": "scratch"},
        ],
    }
    config = tmp_path / "mix.yaml"
    config.write_text(json.dumps(mini))
    out = tmp_path / "study"
    recipe = REPO_ROOT / "recipes" / "finetune.py"
    run_study(config, out, recipe=recipe, launcher="python", emit_commands=tmp_path / "commands.txt")
    for i, planned in enumerate(load_study(out).runs):
        gcnn = planned.entry == "gcnn-d16"
        results = make_results(model=planned.model, model_type=MODEL_TYPE if gcnn else "convnextv2")
        results["test"] = compute_gz10_metrics(*fake_predictions(300, 0.9 if gcnn else 0.8, seed=i))
        results.update(seed=planned.seed, params_total=14_878_602 if gcnn else 15_011_210)
        planned.run_dir(out).mkdir(parents=True, exist_ok=True)
        (planned.run_dir(out) / "results.json").write_text(json.dumps(results))
    built = build_report(out)
    assert "gcnn-d16" not in built["table1"][0] and "convnextv2-nano" in built["table1"][0]
    assert "gcnn-d16" in built["equivariant"][0] and "convnextv2-nano" not in built["equivariant"][0]
    assert "95.52" in built["equivariant"][0]
    report = write_report(out).read_text()
    assert "## Equivariant (from scratch)" in report
    assert (out / "report" / "equivariant.csv").is_file() and (out / "report" / "accuracy_vs_params.png").is_file()
