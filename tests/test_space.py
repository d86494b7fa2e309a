"""The demo's handlers and `hfgal space build` / `hfgal demo`, offline, with tiny real models and real galaxies."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hfgal
from fixtures.demo import free_port, galaxy
from hfgal.constants import DEFAULT_DATASET, GZ10_CLASSES
from hfgal.errors import HfgalError

gr = pytest.importorskip("gradio", reason="the demo needs the `demo` extra (gradio)")

HUB_MODEL = "hfgal-test/gz10-convnextv2-nano"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def space_dir(tmp_path_factory, demo_run_dir, sample_dir) -> Path:
    from hfgal.demo.space import build_space

    out = tmp_path_factory.mktemp("spaces") / "gz10-space"
    return build_space([demo_run_dir, HUB_MODEL], out, examples=sample_dir, title="GZ10 test demo")


# --------------------------------------------------------------------------- the Space folder


@pytest.mark.slow
def test_space_folder_holds_app_requirements_card_examples_and_models(space_dir, demo_run_dir, sample_dir):
    files = {p.relative_to(space_dir).as_posix() for p in space_dir.rglob("*") if p.is_file()}
    assert {"app.py", "requirements.txt", "README.md", "examples/metadata.csv"} <= files
    # Only the publishable files of the run: no checkpoints, optimizer states, logs or TensorBoard events.
    model_files = sorted(f.split("/", 2)[2] for f in files if f.startswith("models/"))
    assert model_files == sorted(
        ["model.safetensors", "config.json", "preprocessor_config.json", "README.md", "confusion_matrix.png"]
    )
    model_dir = space_dir / "models" / demo_run_dir.name
    assert (model_dir / "model.safetensors").read_bytes() == (demo_run_dir / "model.safetensors").read_bytes()
    assert not any(space_dir.parent.glob(".gz10-space.tmp-*"))

    # 20 examples, the first ten one per class (gz10-sample has 12+ per class), files identical to the source.
    with open(space_dir / "examples" / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20
    assert [int(r["label"]) for r in rows[:10]] == list(range(10))
    assert all(GZ10_CLASSES[int(r["label"])] == r["class_name"] for r in rows)
    assert all(r["file_name"].startswith(f"{r['label']}_") for r in rows)
    for r in rows:
        assert (space_dir / "examples" / r["file_name"]).read_bytes() == (sample_dir / r["file_name"]).read_bytes()
    assert sorted(p.name for p in (space_dir / "examples").glob("*.png")) == sorted(r["file_name"] for r in rows)

    # requirements pin what built the Space (local tags like +cu130 dropped so PyPI resolves them), torch and
    # torchvision as CPU builds from PyTorch's CPU index: a Space runs on a CPU unless upgraded.
    lines = (space_dir / "requirements.txt").read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    pins = dict(line.split("==") for line in lines if line and not line.startswith(("#", "--")))
    assert "hfgal" not in pins  # not on PyPI: the Space carries the package itself
    for dist in ("gradio", "transformers", "timm", "huggingface_hub"):
        assert pins[dist] == metadata.version(dist).split("+")[0]
    for dist in ("torch", "torchvision"):
        assert pins[dist] == metadata.version(dist).split("+")[0] + "+cpu"
    # The copy of hfgal next to app.py is what the Space imports (the script's folder comes first on sys.path).
    package = Path(hfgal.__file__).parent
    for source in package.rglob("*.py"):
        rel = source.relative_to(package)
        assert (space_dir / "hfgal" / rel).read_bytes() == source.read_bytes(), rel
    proc = subprocess.run(
        [sys.executable, "-c", "import hfgal.demo.app, hfgal; print(hfgal.__file__, hfgal.__version__)"],
        cwd=space_dir, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(space_dir / "hfgal" / "__init__.py"), hfgal.__version__]

    app = (space_dir / "app.py").read_text()
    assert "from hfgal.demo.app import build_demo" in app
    assert f'str(HERE / "models/{demo_run_dir.name}")' in app and f'"{HUB_MODEL}"' in app
    assert 'title="GZ10 test demo"' in app


def test_space_card_front_matter(space_dir, demo_run_dir):
    from huggingface_hub import RepoCard, SpaceCard, metadata_load

    card = RepoCard.load(space_dir / "README.md", repo_type="space")
    data = card.data.to_dict()
    assert data["sdk"] == "gradio"
    assert data["sdk_version"] == gr.__version__
    assert data["app_file"] == "app.py"
    assert data["title"] == "GZ10 test demo"
    assert data["models"] == [HUB_MODEL]
    assert data["datasets"] == [DEFAULT_DATASET]
    assert data["license"] == "apache-2.0"
    assert data["emoji"] and data["colorFrom"] and data["colorTo"]
    assert 0 < len(data["short_description"]) <= 60  # the Hub refuses longer ones
    assert metadata_load(space_dir / "README.md") == data
    assert isinstance(SpaceCard.load(space_dir / "README.md"), SpaceCard)
    # The text links the Hub model and the copied folder, and lists every class.
    assert f"https://huggingface.co/{HUB_MODEL}" in card.text
    assert f"models/{demo_run_dir.name}/README.md" in card.text
    assert all(name in card.text for name in GZ10_CLASSES)


def test_generated_app_builds_the_demo_from_its_own_folder(space_dir, demo_run_dir, tmp_path, monkeypatch):
    import runpy

    monkeypatch.chdir(tmp_path)  # the app finds its models and examples next to itself, not in the cwd
    namespace = runpy.run_path(str(space_dir / "app.py"), run_name="space_app")
    demo = namespace["demo"]
    assert isinstance(demo, gr.Blocks)
    dropdown = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown))
    assert [c[0] for c in dropdown.choices] == [demo_run_dir.name, HUB_MODEL]
    examples = next(b for b in demo.blocks.values() if isinstance(b, gr.Dataset))
    assert len(examples.samples) == 20
    assert any(d.get("api_name") == "classify" for d in demo.config["dependencies"])


def test_app_source_survives_quotes_and_unicode_in_titles():
    import ast

    from hfgal.demo.space import render_app

    title = 'Galaxy "zoo" \u2014 d\u00e9mo \\ o\'clock'
    tree = ast.parse(render_app(["local:models/my run", "someone/gz10"], title))
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "build_demo")
    assert ast.literal_eval(next(k.value for k in call.keywords if k.arg == "title")) == title
    models = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "MODELS")
    assert ast.literal_eval(models.elts[1]) == "someone/gz10"
    assert ast.literal_eval(models.elts[0].args[0].right) == "models/my run"


def test_missing_model_folder_is_refused_without_output(tmp_path, sample_dir, demo_run_dir):
    from hfgal.demo.space import build_space

    out = tmp_path / "space"
    for missing in (tmp_path / "no-such-run", "runs/no-such-run/", "./no-such-run"):
        with pytest.raises(HfgalError, match="does not exist"):
            build_space([demo_run_dir, missing], out, examples=sample_dir)
        assert not out.exists()
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    with pytest.raises(HfgalError, match="no config.json"):
        build_space([not_a_model], out, examples=sample_dir)
    (not_a_model / "config.json").write_text("{}")
    with pytest.raises(HfgalError, match="no model.safetensors"):
        build_space([not_a_model], out, examples=sample_dir)
    assert not out.exists() and list(tmp_path.iterdir()) == [not_a_model]


@pytest.mark.slow
def test_cli_space_build_reports_missing_model_in_one_line(tmp_path, sample_dir):
    out = tmp_path / "space"
    proc = subprocess.run(
        [sys.executable, "-m", "hfgal.cli", "space", "build", "--model", str(tmp_path / "nope"), "--out", str(out)]
        + ["--examples", str(sample_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"hfgal: error: model folder {tmp_path / 'nope'} does not exist; pass a fine-tuning output folder or a Hub "
        "repo id"
    ]
    assert not out.exists()


def test_no_examples_offline_suggests_examples_flag(tmp_path, demo_run_dir, monkeypatch):
    from hfgal.demo.space import build_space

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "space"
    with pytest.raises(HfgalError, match=r"could not be loaded .*pass --examples DIR"):
        build_space([demo_run_dir], out)
    assert not out.exists()


def test_examples_from_a_gz10_source_one_per_class_of_its_test_split(tmp_path, demo_run_dir, sample_dir):
    from hfgal.data.sources import load_gz10
    from hfgal.demo.space import build_space

    out = build_space([demo_run_dir], tmp_path / "space", dataset=str(sample_dir))
    test = load_gz10(str(sample_dir))["test"]
    with open(out / "examples" / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    labels = [int(r["label"]) for r in rows]
    assert labels == sorted(set(test["label"]))
    for r in rows:
        row = int(r["file_name"].split("_")[1].split(".")[0])
        assert test[row]["label"] == int(r["label"])
        saved = np.asarray(Image.open(out / "examples" / r["file_name"]))
        assert np.array_equal(saved, np.asarray(test[row]["image"].convert("RGB")))
    # A local dataset is not a Hub id: the card still names the published GZ10 dataset.
    assert "- " + DEFAULT_DATASET in (out / "README.md").read_text()


def test_select_examples_one_per_class_first():
    from hfgal.demo.examples import select_examples

    found = [(Path(f"{c}_{n}.png"), c) for c in (0, 2, 5) for n in range(12, -1, -1)]
    found += [(Path("mystery.png"), None)]
    chosen = select_examples(found, limit=7)
    assert [p.name for p, _ in chosen] == ["0_0.png", "2_0.png", "5_0.png", "0_1.png", "2_1.png", "5_1.png", "0_2.png"]
    everything = select_examples(found, limit=100)
    assert len(everything) == len(found) and everything[-1][1] is None


def test_overwrite_and_push_to_one_space_commit(tmp_path, space_dir, demo_run_dir, sample_dir, monkeypatch, capsys):
    """`--push-to` creates a Gradio Space and uploads the built folder in ONE commit (captured at HfApi)."""
    from huggingface_hub import HfApi

    from hfgal.cli import main

    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
        calls.append(("upload_folder", repo_id, {**kwargs, "files": files}))
        return "https://huggingface.co/spaces/someone/gz10-demo/commit/abc123"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_canaryCANARYcanary0123456789")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # the uploads are captured above
    out = tmp_path / "space"
    out.mkdir()
    (out / "stale.txt").write_text("from an older build")
    argv = ["space", "build", "--model", str(demo_run_dir), "--out", str(out), "--examples", str(sample_dir)]
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--push-to", "someone/gz10-demo"])
    assert exc.value.code == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert calls == []

    main(argv + ["--push-to", "someone/gz10-demo", "--private", "--overwrite"])
    assert not (out / "stale.txt").exists()
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]
    assert calls[0][2]["repo_type"] == "space" and calls[0][2]["space_sdk"] == "gradio"
    assert calls[0][2]["private"] is True
    upload = calls[1][2]
    assert upload["repo_type"] == "space"
    assert upload["files"] == sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "app.py" in upload["files"] and f"models/{demo_run_dir.name}/model.safetensors" in upload["files"]
    captured = capsys.readouterr()
    assert "someone/gz10-demo" in captured.out
    assert "canary" not in captured.out + captured.err
    assert not any("canary" in p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- the handlers


@pytest.fixture(scope="module")
def demo_state(demo_run_dir, vit_dir, sample_dir):
    from hfgal.demo.app import GalaxyDemo

    return GalaxyDemo([str(demo_run_dir), str(vit_dir)], examples_dir=sample_dir, occlusion_grid=4)


@pytest.mark.parametrize("tta", [False, True])
def test_classify_matches_load_classifier(demo_state, demo_run_dir, sample_dir, tta):
    from hfgal.data.imageio import load_image
    from hfgal.inference import load_classifier

    path = galaxy(sample_dir, 5, 1)
    scores, description, preview = demo_state.classify(str(path), demo_run_dir.name, tta)
    expected = load_classifier(demo_run_dir).predict([load_image(path)], top_k=len(GZ10_CLASSES), tta=tta)[0]
    assert set(scores) == set(GZ10_CLASSES)
    for item in expected:
        assert scores[item["label"]] == pytest.approx(item["score"], abs=1e-6)
    top = expected[0]["label"]
    assert description.startswith(f"**{top}**")
    # 5_1.png is an example: the volunteers' label is shown next to the prediction.
    assert "Galaxy Zoo volunteers' label: **Barred Spiral**" in description
    assert preview.mode == "RGB" and preview.size == (256, 256)
    saliency = demo_state.explain_top(str(path), demo_run_dir.name, scores)
    assert saliency.mode == "RGB" and saliency.size == (384, 384)


def test_explain_shows_the_occlusion_map_of_the_top_class_for_a_vit(demo_state, vit_dir, sample_dir):
    from hfgal.data.imageio import load_image
    from hfgal.demo.saliency import occlusion_map, render_overlay
    from hfgal.inference import load_classifier

    path = galaxy(sample_dir, 2, 0)
    scores, _, _ = demo_state.classify(str(path), vit_dir.name, False)
    expected = load_classifier(vit_dir).predict([load_image(path)], top_k=1)[0][0]
    assert max(scores, key=scores.get) == expected["label"]
    saliency = demo_state.explain_top(str(path), vit_dir.name, scores)

    classifier = demo_state.classifier(vit_dir.name)
    image = load_image(path)
    heat = occlusion_map(classifier, image, target=GZ10_CLASSES.index(expected["label"]), grid=4)
    assert heat.shape == (32, 32) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0)  # some occlusion lowered the top class
    assert np.array_equal(np.asarray(saliency), np.asarray(render_overlay(image, heat)))
    # The overlay differs from the plain image where the map is hot.
    plain = np.asarray(image.resize((384, 384)), dtype=np.int16)
    assert np.abs(np.asarray(saliency, dtype=np.int16) - plain).max() > 30


def test_occlusion_map_finds_the_region_a_model_uses():
    """A model that only looks at the top-left quadrant: occluding there, and only there, changes its answer."""
    from types import SimpleNamespace

    import torch

    from hfgal.demo.saliency import occlusion_map
    from hfgal.inference import GalaxyClassifier

    class TopLeftBrightness(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = torch.nn.Parameter(torch.tensor(4.0))

        def forward(self, pixel_values):
            brightness = pixel_values[:, :, :16, :16].mean(dim=(1, 2, 3))  # (B,)
            return SimpleNamespace(logits=torch.stack([self.gain * brightness, -self.gain * brightness], dim=-1))

    pixels = np.full((32, 32, 3), 12, np.uint8)  # dark sky
    pixels[4:12, 4:12] = 230  # a bright galaxy in the top-left quadrant
    pixels[20:28, 20:28] = 230  # and one the model ignores
    from hfgal.data.geometry import Geometry

    processor = Geometry(32).image_processor((0.5,) * 3, (0.5,) * 3)
    classifier = GalaxyClassifier(
        TopLeftBrightness(), processor, {0: "bright", 1: "dark"}, torch.device("cpu"), "test"
    )
    image = Image.fromarray(pixels)
    heat = occlusion_map(classifier, image, target=0, grid=8, window=0.25)
    assert heat.max() == pytest.approx(1.0)
    assert heat[4:12, 4:12].mean() > 0.5
    assert heat[22:, 22:].max() == 0  # occluders over the ignored galaxy alone change nothing
    # Hiding a galaxy under sky only makes the image darker: nothing supports "dark" (the top class here).
    assert classifier.predict(image, top_k=1)[0][0]["label"] == "dark"
    assert occlusion_map(classifier, image, grid=8).max() == 0


def test_occlusion_masks_cover_every_pixel():
    from hfgal.demo.saliency import occlusion_masks

    masks = occlusion_masks(64, grid=5)
    assert masks.shape == (25, 1, 64, 64)
    coverage = masks.sum(0)[0]
    assert coverage.min() >= 1  # no pixel is left unexplained
    assert masks[0, 0, 0, 0] and not masks[0, 0, 63, 63]


def test_bad_uploads_give_messages_not_crashes(demo_state, sample_dir, tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("these are my observing notes, not a galaxy")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(galaxy(sample_dir, 3).read_bytes()[:5000])
    # A tiny file that decodes to 81 megapixels: refused from its header, before any pixel is decoded.
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)
    for path in (not_image, truncated, bomb):
        for handler in (demo_state.classify, demo_state.explain_top):
            with pytest.raises(gr.Error) as err:
                handler(str(path), None, None)
            message = str(err.value.message)
            # Named as the user knows it, not by gradio's cache path.
            assert message.startswith(f"{path.name}: "), message
            assert len(message.splitlines()) == 1
    with pytest.raises(gr.Error, match="81,000,000 pixels"):
        demo_state.classify(str(bomb), None, False)
    assert demo_state.classify(None, None, False) == (None, "", None)
    assert demo_state.explain_top(None, None, None) is None


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_grayscale_rgba_and_16_bit_uploads_are_classified(demo_state, sample_dir, tmp_path, mode):
    rgb = Image.open(galaxy(sample_dir, 7))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    else:
        image = rgb.convert(mode)
    path = tmp_path / f"galaxy-{mode.replace(';', '')}.png"
    image.save(path)
    scores, _, preview = demo_state.classify(str(path), None, True)
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert preview.mode == "RGB" and preview.size == (256, 256)


def test_fits_cutout_is_classified_when_astropy_is_installed(demo_state, sample_dir, tmp_path):
    fits = pytest.importorskip("astropy.io.fits", reason="FITS needs the `astro` extra (astropy)")
    from hfgal.demo.examples import accepted_suffixes

    assert ".fits" in accepted_suffixes()
    # A g, r, z cube in nanomaggy-like fluxes, made from a real galaxy's blue, green and red channels.
    rgb = np.asarray(Image.open(galaxy(sample_dir, 6)).convert("RGB"), dtype=np.float32) / 255
    cube = np.stack([rgb[..., 2], rgb[..., 1], rgb[..., 0]]) * 2.0  # (3, H, W)
    path = tmp_path / "cutout.fits"
    fits.PrimaryHDU(cube).writeto(path)
    scores, description, preview = demo_state.classify(str(path), None, False)
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert description.startswith(f"**{max(scores, key=scores.get)}**")
    assert preview.mode == "RGB" and preview.size == (256, 256)


def test_unknown_or_vanished_model_gives_a_message(demo_run_dir, tmp_path, sample_dir):
    import shutil

    from hfgal.demo.app import GalaxyDemo

    copy = tmp_path / "run-copy"
    shutil.copytree(demo_run_dir, copy)
    state = GalaxyDemo([str(copy)])
    shutil.rmtree(copy)  # deleted after the demo started: loading is lazy
    with pytest.raises(gr.Error):
        state.classify(str(galaxy(sample_dir, 0)), None, False)
    with pytest.raises(gr.Error, match="unknown model"):
        GalaxyDemo([str(demo_run_dir)]).classify(str(galaxy(sample_dir, 0)), "not-served", False)


def test_build_demo_refuses_missing_folders(tmp_path, demo_run_dir):
    from hfgal.demo.app import build_demo

    with pytest.raises(HfgalError, match="does not exist"):
        build_demo([str(tmp_path / "gone")])
    with pytest.raises(HfgalError, match="examples folder"):
        build_demo([str(demo_run_dir)], examples_dir=tmp_path / "no-examples")
    with pytest.raises(HfgalError, match="no model"):
        build_demo([])


def test_missing_gradio_is_explained(monkeypatch, demo_run_dir):
    from hfgal.demo.app import build_demo

    monkeypatch.setitem(sys.modules, "gradio", None)  # what an install without the `demo` extra looks like
    with pytest.raises(HfgalError, match=r"pip install 'hfgal\[demo\]'"):
        build_demo([str(demo_run_dir)])


# --------------------------------------------------------------------------- hfgal demo


@pytest.mark.slow
def test_cli_demo_serves_the_classify_api(demo_run_dir, sample_dir):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hfgal.cli", "demo", "--model", str(demo_run_dir), "--examples", str(sample_dir)]
    proc = subprocess.Popen(cmd + ["--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        info = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/info", timeout=5) as r:
                    info = json.load(r)
                break
            except OSError:
                time.sleep(1)
        assert info is not None, proc.stdout.read().decode() if proc.poll() is not None else "server did not start"
        assert "/classify" in info["named_endpoints"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            page = r.read().decode()
        assert "Galaxy morphology classifier" in page
    finally:
        proc.terminate()
        proc.wait(timeout=30)
