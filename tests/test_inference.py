"""hfgal.inference / hfgal.imageio: loading checkpoints (local, TimmWrapper, study-style, local Hub) and images."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fixtures.checkpoints import (
    SAMPLE_DIR,
    sample_images,
    save_convnextv2_author_style,
    save_pickled_copy,
    save_timm,
    save_vit,
)
from fixtures.hub_server import running_hub
from hfgal.constants import GZ10_CLASSES
from hfgal.data.augment import dihedral_view
from hfgal.data.imageio import DEFAULT_MAX_PIXELS, MAX_FILE_BYTES, load_image
from hfgal.errors import HfgalError
from hfgal.inference import load_classifier

pytestmark = pytest.mark.skipif(not SAMPLE_DIR.is_dir(), reason="GZ10 sample images not available")
torch.set_num_threads(1)


class RunsCode:
    """A pickle payload that would create a file if unpickled by a full (unsafe) pickle loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "vit": save_vit(root / "vit"),
        "timm": save_timm(root / "timm"),
        "author": save_convnextv2_author_style(root / "author"),
    }


@pytest.fixture(scope="module")
def images() -> list[Path]:
    return sample_images(5)


# --------------------------------------------------------------------------- local folders


def test_local_vit_top_k_sorted_and_labelled(folders, images):
    clf = load_classifier(folders["vit"], device="cpu")
    assert clf.image_size == 32 and clf.mean == (0.1, 0.1, 0.1) and clf.std == (0.2, 0.2, 0.2)
    assert clf.id2label == dict(enumerate(GZ10_CLASSES)) and clf.device == torch.device("cpu")
    probs = clf.predict_proba(images)
    assert probs.shape == (5, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    preds = clf.predict(images, top_k=3)
    assert len(preds) == 5
    for row, p in zip(preds, probs, strict=True):
        scores = [r["score"] for r in row]
        assert len(row) == 3 and scores == sorted(scores, reverse=True) and sum(scores) <= 1 + 1e-6
        assert {r["label"] for r in row} <= set(GZ10_CLASSES)
        assert row[0]["label"] == GZ10_CLASSES[int(p.argmax())] and row[0]["score"] == pytest.approx(p.max())
    assert np.ptp(probs, axis=0).max() > 1e-3  # images told apart (a random head may not change the top class)
    single = clf(images[0], top_k=20)
    assert len(single) == 1 and len(single[0]) == 10 and single[0] == clf.predict([images[0]], top_k=10)[0]


def test_predictions_match_transformers_pipeline(folders, images):
    from transformers import AutoImageProcessor, pipeline

    clf = load_classifier(folders["vit"], device="cpu")
    # Same pixels as the checkpoint's own processor, up to one 8-bit level where resize rounding differs.
    processor = AutoImageProcessor.from_pretrained(folders["vit"])
    reference = processor([Image.open(p).convert("RGB") for p in images], return_tensors="pt").pixel_values
    diff = (clf.preprocess(images) - reference).abs()
    assert diff.max() <= 1.01 / 255 / 0.2 and diff.mean() < 1e-3
    ours = clf.predict(images, top_k=10)
    pipe = pipeline("image-classification", model=str(folders["vit"]), device="cpu")
    theirs = pipe([str(p) for p in images], top_k=10)
    for a, b in zip(ours, theirs, strict=True):
        assert a[0]["label"] == b[0]["label"]
        assert {r["label"]: r["score"] for r in a} == pytest.approx({r["label"]: r["score"] for r in b}, abs=3e-3)


def test_tta_is_mean_over_the_eight_dihedral_views(folders, images):
    clf = load_classifier(folders["vit"], device="cpu")
    x = clf.preprocess(images)
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32
    with torch.no_grad():
        manual = torch.stack([clf.model(pixel_values=dihedral_view(x, k)).logits.softmax(-1) for k in range(8)])
    tta = clf.predict_proba(images, tta=True, batch_size=2)
    np.testing.assert_allclose(tta, manual.mean(0).numpy(), atol=1e-6)
    assert not np.allclose(tta, clf.predict_proba(images), atol=1e-4)  # ViT is not rotation invariant


def test_results_do_not_depend_on_batch_size(folders, images):
    for name in ("vit", "timm"):
        clf = load_classifier(folders[name], device="cpu")
        np.testing.assert_allclose(
            clf.predict_proba(images, batch_size=1), clf.predict_proba(images, batch_size=4), atol=1e-5
        )


def test_preprocess_resizes_whole_image_like_the_training_cache(folders, images):
    from hfgal.data.augment import normalize
    from hfgal.data.geometry import Geometry, processor_pixels

    clf = load_classifier(folders["vit"], device="cpu")
    assert clf.geometry == Geometry(32)  # the whole image, bilinear, as hfgal trains
    # The training cache's pixels (the saved processor's resize), normalised as the Trainer does on the device.
    cached = processor_pixels(Geometry(32).image_processor(), [Image.open(images[0])])
    expected = normalize(torch.from_numpy(cached), clf.mean, clf.std)[0]
    torch.testing.assert_close(clf.preprocess(images[0])[0], expected, atol=1e-5, rtol=0)
    # Arrays, bytes and PIL images of the same picture give the same batch as the path.
    as_array = np.asarray(Image.open(images[0]).convert("RGB"))
    batch = clf.preprocess([images[0], as_array, images[0].read_bytes(), Image.open(images[0])])
    for i in range(1, 4):
        torch.testing.assert_close(batch[i], batch[0])


def test_timm_wrapper_folder(folders, images):
    clf = load_classifier(folders["timm"], device="cpu")
    assert type(clf.model).__name__ == "TimmWrapperForImageClassification"
    assert clf.image_size == 40 and clf.mean == (0.5, 0.5, 0.5) and clf.std == (0.25, 0.25, 0.25)
    rgb = [Image.open(p).convert("RGB").resize((40, 40), Image.Resampling.BILINEAR) for p in images]
    x = (torch.from_numpy(np.stack([np.asarray(im) for im in rgb])).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        expected = clf.model(pixel_values=x).logits.softmax(-1).numpy()
    np.testing.assert_allclose(clf.predict_proba(images), expected, atol=1e-5)
    assert clf.predict(images[0], top_k=1)[0][0]["label"] in GZ10_CLASSES


def test_timm_save_for_hf_model_args_num_classes_loads(tmp_path, images):
    folder = save_timm(tmp_path / "timm_args", timm_model_args=True)
    assert json.loads((folder / "config.json").read_text())["model_args"] == {"num_classes": 10}
    clf = load_classifier(folder, device="cpu")
    assert clf.predict_proba(images[:2]).shape == (2, 10)


def test_preprocessing_without_a_processor_file(folders, tmp_path, caplog):
    import shutil

    import timm
    from transformers import ViTImageProcessor

    # TimmWrapper with no pretrained_cfg: the architecture's own timm defaults.
    defaults = timm.models.get_pretrained_cfg("test_resnet")
    bare = load_classifier(save_timm(tmp_path / "bare", with_pretrained_cfg=False), device="cpu")
    assert (bare.image_size, bare.mean, bare.std) == (defaults.input_size[-1], defaults.mean, defaults.std)
    # An hfgal run folder of a timm model: config.json is a TimmWrapperConfig, preprocessing a ViT-style square.
    run = save_timm(tmp_path / "run", with_pretrained_cfg=False)
    ViTImageProcessor(size={"height": 24, "width": 24}, image_mean=[0.2] * 3, image_std=[0.3] * 3).save_pretrained(run)
    clf = load_classifier(run, device="cpu")
    assert (clf.image_size, clf.mean, clf.std) == (24, (0.2, 0.2, 0.2), (0.3, 0.3, 0.3))
    # A transformers folder missing preprocessor_config.json: config.image_size and ImageNet stats, with a warning.
    vit = tmp_path / "vit_no_processor"
    vit.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folders["vit"] / name, vit / name)
    with caplog.at_level("WARNING", logger="hfgal.inference"):
        clf = load_classifier(vit, device="cpu")
    assert clf.image_size == 32 and "no preprocessor_config.json" in caplog.text


def test_study_authors_layout_convnext_crop_pct(folders, images):
    clf = load_classifier(folders["author"], device="cpu")
    assert type(clf.model).__name__ == "ConvNextV2ForImageClassification"
    assert clf.image_size == 48 and clf.mean == pytest.approx((0.485, 0.456, 0.406))
    assert list(clf.id2label.values()) == list(GZ10_CLASSES)
    preds = clf.predict(images, top_k=2)
    assert all(len(p) == 2 and p[0]["score"] >= p[1]["score"] for p in preds)


def test_generic_labels_read_as_gz10_classes(tmp_path, caplog):
    folder = save_convnextv2_author_style(tmp_path / "generic", labels={i: f"LABEL_{i}" for i in range(10)})
    with caplog.at_level("WARNING", logger="hfgal.inference"):
        clf = load_classifier(folder, device="cpu")
    assert list(clf.id2label.values()) == list(GZ10_CLASSES)
    assert "generic labels" in caplog.text


def test_pickle_only_checkpoint_loads_with_weights_only(folders, tmp_path, images, caplog):
    folder = save_pickled_copy(folders["vit"], tmp_path / "bin_only")
    with caplog.at_level("WARNING", logger="hfgal.inference"):
        clf = load_classifier(folder, device="cpu")
    assert "weights_only=True" in caplog.text
    reference = load_classifier(folders["vit"], device="cpu").predict_proba(images)
    np.testing.assert_allclose(clf.predict_proba(images), reference, atol=1e-6)


def test_malicious_pickle_is_refused_and_never_runs(folders, tmp_path):
    marker = tmp_path / "PWNED"
    folder = save_pickled_copy(folders["vit"], tmp_path / "evil", payload=RunsCode(marker))
    with pytest.raises(HfgalError, match="refusing the pickled weights"):
        load_classifier(folder, device="cpu")
    assert not marker.exists()


def test_bad_sources_and_devices_raise_hfgal_error(folders, tmp_path):
    with pytest.raises(HfgalError, match="no such model folder"):
        load_classifier(tmp_path / "missing" / "deep" / "run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HfgalError, match="no config.json"):
        load_classifier(tmp_path / "empty")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((folders["vit"] / "config.json").read_text())
    with pytest.raises(HfgalError, match="no model.safetensors"):
        load_classifier(no_weights)
    with pytest.raises(HfgalError, match="unknown device"):
        load_classifier(folders["vit"], device="warp-drive")
    if not torch.cuda.is_available():
        with pytest.raises(HfgalError, match="no CUDA GPU"):
            load_classifier(folders["vit"], device="cuda")
    clf = load_classifier(folders["vit"], device="cpu")
    with pytest.raises(HfgalError, match="top_k"):
        clf.predict(SAMPLE_DIR / "0_0.png", top_k=0)


def test_trust_remote_code_warns(folders, caplog):
    with caplog.at_level("WARNING", logger="hfgal"):
        load_classifier(folders["vit"], device="cpu", trust_remote_code=True)
    assert f"trust_remote_code is on: code from {folders['vit']} will run on this machine" in caplog.text


# --------------------------------------------------------------------------- through a local Hub

_CHILD = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    from hfgal.inference import load_classifier
    from hfgal.errors import HfgalError

    spec = json.loads(sys.argv[1])
    out = {"errors": {}}
    for key, (repo, revision) in spec.get("load", {}).items():
        out[key] = load_classifier(repo, revision, device="cpu").predict_proba(spec["images"]).tolist()
    for key, (repo, revision) in spec.get("fail", {}).items():
        try:
            load_classifier(repo, revision, device="cpu")
            out["errors"][key] = None
        except HfgalError as err:
            out["errors"][key] = str(err)
    if spec.get("pipeline"):
        from transformers import pipeline

        pipe = pipeline("image-classification", model=spec["pipeline"], device="cpu")
        out["pipeline"] = [{r["label"]: r["score"] for r in rows} for rows in pipe(spec["images"], top_k=10)]
    if spec.get("snapshot"):
        from huggingface_hub import snapshot_download

        out["snapshot"] = sorted(os.listdir(snapshot_download(spec["snapshot"])))
    print("RESULT " + json.dumps(out))
    """
)


def _run_child(spec: dict, endpoint: str, hf_home: Path, offline: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]),
    )
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(spec)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.slow
def test_load_classifier_and_pipeline_through_a_local_hub(folders, images, tmp_path):
    marker = tmp_path / "PWNED"
    evil = save_pickled_copy(folders["vit"], tmp_path / "evil", payload=RunsCode(marker))
    paths = [str(p) for p in images]
    repos = {"someone/gz10-tiny": folders["vit"], "someone/gz10-timm": folders["timm"], "someone/evil": evil}
    hf_home = tmp_path / "hf_home"
    with running_hub(repos) as hub:
        sha = hub.commit("someone/gz10-tiny")
        online = _run_child(
            {
                "images": paths,
                "load": {
                    "tiny": ["someone/gz10-tiny", None],
                    "tiny_at_sha": ["someone/gz10-tiny", sha],
                    "timm": ["someone/gz10-timm", None],
                },
                "fail": {
                    "missing": ["someone/missing", None],
                    "bad_revision": ["someone/gz10-tiny", "no-such-branch"],
                    "evil": ["someone/evil", None],
                    "not_an_id": ["runs/a/b/c", None],
                },
                "pipeline": "someone/gz10-tiny",
                "snapshot": "someone/gz10-tiny",
            },
            hub.url,
            hf_home,
        )
        requests = list(hub.requests)

    local = {name: load_classifier(folders[name], device="cpu").predict_proba(images) for name in ("vit", "timm")}
    np.testing.assert_allclose(online["tiny"], local["vit"], atol=1e-6)
    np.testing.assert_allclose(online["tiny_at_sha"], local["vit"], atol=1e-6)
    np.testing.assert_allclose(online["timm"], local["timm"], atol=1e-6)
    from transformers import pipeline

    local_pipe = pipeline("image-classification", model=str(folders["vit"]), device="cpu")(paths, top_k=10)
    for row, expected in zip(online["pipeline"], local_pipe, strict=True):
        assert row == pytest.approx({r["label"]: r["score"] for r in expected}, abs=1e-6)
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(online["snapshot"])

    errors = online["errors"]
    assert "someone/missing" in errors["missing"] and "not found" in errors["missing"]
    assert "no-such-branch" in errors["bad_revision"]
    assert "refusing the pickled weights" in errors["evil"]
    assert "no such model folder" in errors["not_an_id"]
    assert not marker.exists()
    # Safetensors are preferred: the pickle of the safe repo is never fetched, its commit is pinned by sha.
    fetched = [path for method, path in requests if method == "GET" and "/resolve/" in path]
    assert any(p.endswith("gz10-tiny/resolve/" + sha + "/model.safetensors") for p in fetched)
    assert not any("gz10-tiny" in p and p.endswith(".bin") for p in fetched)

    # The Hub gone: the cached repo still loads, an uncached one fails at once with a clear message.
    gone = _run_child(
        {"images": paths[:2], "load": {"tiny": ["someone/gz10-tiny", None]}, "fail": {"new": ["someone/new", None]}},
        _closed_port_url(),
        hf_home,
    )
    np.testing.assert_allclose(gone["tiny"], local["vit"][:2], atol=1e-6)
    assert "could not reach" in gone["errors"]["new"] and "someone/new" in gone["errors"]["new"]

    offline = _run_child(
        {"images": paths[:2], "load": {"tiny": ["someone/gz10-tiny", None]}, "fail": {"new": ["someone/new", None]}},
        _closed_port_url(),
        hf_home,
        offline=True,
    )
    np.testing.assert_allclose(offline["tiny"], local["vit"][:2], atol=1e-6)
    assert "HF_HUB_OFFLINE" in offline["errors"]["new"] and "someone/new" in offline["errors"]["new"]


# --------------------------------------------------------------------------- load_image


def _assert_rgb(image: Image.Image, width: int, height: int) -> None:
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (width, height)
    assert np.asarray(image).shape == (height, width, 3) and np.asarray(image).dtype == np.uint8


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_modes_convert_without_clipping(images, tmp_path):
    rgb = np.asarray(Image.open(images[0]).convert("RGB"))
    gray = np.asarray(Image.open(images[0]).convert("L"))
    h, w = gray.shape
    # 16-bit PNG: scaled by its range (PIL's own convert would clip everything above 255 to white).
    deep = Image.fromarray(gray.astype(np.uint16) * 257)
    deep.save(tmp_path / "deep.png")
    out = np.asarray(load_image(tmp_path / "deep.png"))
    assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 1], gray)
    # Mode I (32-bit ints) and F (floats) from arrays and files.
    np.testing.assert_array_equal(np.asarray(load_image(gray.astype(np.int32)))[..., 2], gray)
    np.testing.assert_array_equal(np.asarray(load_image(gray.astype(np.float32) / 255))[..., 0], gray)
    Image.fromarray(gray.astype(np.float32) * 1000.0).save(tmp_path / "float.tif")
    stretched = np.asarray(load_image(tmp_path / "float.tif"))[..., 0].astype(int)
    expected = np.rint((gray - gray.min()) * 255.0 / (gray.max() - gray.min()))
    assert np.abs(stretched - expected).max() <= 1
    # RGBA: opaque equals RGB, transparent is black sky.
    alpha = np.full((h, w, 1), 255, np.uint8)
    np.testing.assert_array_equal(np.asarray(load_image(np.concatenate([rgb, alpha], 2))), rgb)
    np.testing.assert_array_equal(np.asarray(load_image(np.concatenate([rgb, alpha * 0], 2))), 0)
    Image.fromarray(np.concatenate([rgb, alpha], 2)).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "rgba.png")), rgb)
    # Palette, bilevel, grayscale+alpha, uint16 RGB arrays, bool masks.
    _assert_rgb(load_image(Image.fromarray(rgb).convert("P")), w, h)
    _assert_rgb(load_image(Image.fromarray(gray).convert("1")), w, h)
    _assert_rgb(load_image(Image.fromarray(gray).convert("LA")), w, h)
    np.testing.assert_array_equal(np.asarray(load_image(rgb.astype(np.uint16) * 257)), rgb)
    assert set(np.unique(np.asarray(load_image(gray > 100)))) <= {0, 255}


def test_bad_inputs_raise_hfgal_error(tmp_path):
    for bad in (np.zeros((0, 5)), np.zeros((4, 4, 2)), np.zeros((3, 32, 32)), np.zeros(7), np.zeros((2, 2, 2, 2, 3))):
        with pytest.raises(HfgalError, match="shape"):
            load_image(bad)
    with pytest.raises(HfgalError, match="channels first"):
        load_image(np.zeros((3, 32, 32)))
    with pytest.raises(HfgalError, match="dtype"):
        load_image(np.array([["a", "b"]]))
    with pytest.raises(HfgalError, match="no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image at all")
    with pytest.raises(HfgalError, match="notes.png"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(HfgalError, match="empty"):
        load_image(b"")
    with pytest.raises(HfgalError, match="cannot read an image from a dict"):
        load_image({"pixels": 1})
    with pytest.raises(HfgalError, match="limit"):
        load_image(np.zeros((10, 10)), max_pixels=50)
    big = tmp_path / "huge.png"
    with open(big, "wb") as f:  # sparse: no disk space used
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(HfgalError, match="MiB"):
        load_image(big)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_decompression_bomb_refused_before_decoding():
    # A 1 kB PNG whose header claims 100000 x 100000 RGB pixels (30 GB once decoded).
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + _png_chunk(b"IEND", b"")
    )
    assert len(bomb) < 2000
    with pytest.raises(HfgalError, match="too many pixels|limit"):
        load_image(bomb)
    # Under PIL's own bomb threshold but over ours: refused by the header check.
    header = struct.pack(">IIBBBBB", 9000, 9000, 8, 0, 0, 0, 0)
    just_over = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b"")
    with pytest.raises(HfgalError, match=f"{DEFAULT_MAX_PIXELS:,}"):
        load_image(just_over)


_DTYPES = st.sampled_from(["uint8", "uint16", "int32", "float32", "float64", "bool"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    height=st.integers(1, 600),
    width=st.integers(1, 600),
    channels=st.sampled_from([None, 1, 3, 4]),
    dtype=_DTYPES,
    seed=st.integers(0, 2**31 - 1),
    special=st.sampled_from(["none", "nan", "inf", "constant", "negative"]),
)
def test_property_arrays_give_rgb_of_the_same_size(height, width, channels, dtype, seed, special):
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels is None else (height, width, channels)
    if dtype == "bool":
        arr = rng.random(shape) > 0.5
    elif dtype.startswith("float"):
        arr = rng.random(shape).astype(dtype)
        if special == "nan":
            arr.flat[rng.integers(arr.size)] = np.nan
        elif special == "inf":
            arr.flat[rng.integers(arr.size)] = np.inf
        elif special == "negative":
            arr = arr * 1e4 - 5e3
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(max(info.min, -(2**31)), min(info.max, 2**31 - 1), shape, endpoint=True).astype(dtype)
    if special == "constant":
        arr = np.full_like(arr, arr.flat[0])
    _assert_rgb(load_image(arr), width, height)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    height=st.integers(1, 600),
    width=st.integers(1, 600),
    mode_format=st.sampled_from(
        [("RGB", "PNG"), ("L", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("I;16", "PNG"), ("1", "PNG")]
        + [("RGB", "JPEG"), ("L", "JPEG"), ("RGB", "TIFF"), ("F", "TIFF"), ("RGB", "BMP"), ("RGB", "WEBP")]
    ),
    cut=st.floats(0.0, 1.0),
    flip=st.one_of(st.none(), st.integers(0, 10**9)),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_encoded_and_truncated_files(height, width, mode_format, cut, flip, seed):
    mode, fmt = mode_format
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(noise).convert(mode) if mode not in ("I;16", "F") else None
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    elif mode == "F":
        image = Image.fromarray(rng.random((height, width), dtype=np.float32))
    data = bytearray(_encode(image, fmt))
    data = data[: max(1, int(len(data) * cut))] if cut < 0.999 else data
    if flip is not None:
        data[flip % len(data)] ^= 0xFF
    try:
        out = load_image(bytes(data))
    except HfgalError as err:
        assert "\n" not in str(err)
        return
    arr = np.asarray(out)
    assert out.mode == "RGB" and arr.dtype == np.uint8 and arr.shape == (out.height, out.width, 3)
    if flip is None:  # an intact header: whatever decodes has the encoded size
        assert out.size == (width, height)


# --------------------------------------------------------------------------- FITS

# Legacy Surveys colour mapping (legacypipe sdss_rgb): band -> (RGB plane, scale), Q = 20, m = 0.03.
_BANDS = {"g": (2, 6.0), "r": (1, 3.4), "z": (0, 2.2)}


def legacy_fluxes_from_rgb(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Invert the Legacy Surveys asinh colour stretch: nanomaggy g, r, z images that render as `rgb`."""
    y = (rgb.astype(np.float64) + 0.5) / 255.0  # the value each uint8 level stands for
    mean = y.mean(-1)
    intensity = np.sinh(np.sqrt(20.0) * mean) / 20.0  # I with asinh(20 I) / sqrt(20) = mean
    ratio = np.divide(intensity, mean, out=np.zeros_like(mean), where=mean > 0)
    return {band: (y[..., plane] * ratio - 0.03) / scale for band, (plane, scale) in _BANDS.items()}


@pytest.fixture
def fits_module():
    return pytest.importorskip("astropy.io.fits")


def test_fits_cube_renders_like_legacy_surveys(fits_module, images, tmp_path):
    from hfgal.data.imageio import fits_to_rgb

    rgb = np.asarray(Image.open(images[1]).convert("RGB"))
    flux = legacy_fluxes_from_rgb(rgb)
    # FITS rows run south to north: the first row stored is the bottom of the picture.
    cube = np.stack([flux[b][::-1] for b in "grz"]).astype(np.float32)
    hdu = fits_module.PrimaryHDU(cube)
    hdu.header["BANDS"] = "grz"
    hdu.writeto(tmp_path / "cutout.fits")
    out = fits_to_rgb(tmp_path / "cutout.fits")
    assert out.shape == rgb.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - rgb)
    assert diff.max() <= 1 and diff.mean() < 0.1
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "cutout.fits")), out)
    # gzipped, and as bytes without a FITS name
    import gzip

    (tmp_path / "cutout.fits.gz").write_bytes(gzip.compress((tmp_path / "cutout.fits").read_bytes()))
    np.testing.assert_array_equal(fits_to_rgb(tmp_path / "cutout.fits.gz"), out)
    np.testing.assert_array_equal(np.asarray(load_image((tmp_path / "cutout.fits").read_bytes())), out)

    # Three single-band HDUs in another order, named by FILTER, give the same picture.
    hdus = [fits_module.PrimaryHDU()]
    for band in "zgr":
        ext = fits_module.ImageHDU(flux[band][::-1].astype(np.float32))
        ext.header["FILTER"] = f"{band} DECam SDSS c0001"
        hdus.append(ext)
    fits_module.HDUList(hdus).writeto(tmp_path / "bands.fits")
    np.testing.assert_array_equal(fits_to_rgb(tmp_path / "bands.fits"), out)


def test_fits_single_band_grey_with_warning_and_errors(fits_module, tmp_path):
    from hfgal.data.imageio import fits_to_rgb

    rng = np.random.default_rng(0)
    fits_module.PrimaryHDU(rng.random((20, 30)).astype(np.float32)).writeto(tmp_path / "r.fits")
    with pytest.warns(UserWarning, match="single-band"):
        grey = fits_to_rgb(tmp_path / "r.fits")
    assert grey.shape == (20, 30, 3) and (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert grey.max() > 0
    fits_module.PrimaryHDU(rng.random((2, 8, 8)).astype(np.float32)).writeto(tmp_path / "two.fits")
    with pytest.raises(HfgalError, match="expected g, r and z"):
        fits_to_rgb(tmp_path / "two.fits")
    (tmp_path / "broken.fits").write_bytes(b"SIMPLE  =                    T" + b"\0" * 50)
    with pytest.raises(HfgalError, match="broken.fits"):
        load_image(tmp_path / "broken.fits")
    fits_module.PrimaryHDU(np.zeros((3, 9000, 9000), np.uint8)).writeto(tmp_path / "wide.fits")
    with pytest.raises(HfgalError, match="limit"):
        fits_to_rgb(tmp_path / "wide.fits", max_pixels=1000)


def test_fits_without_astropy_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "astropy", None)
    monkeypatch.setitem(sys.modules, "astropy.io", None)
    (tmp_path / "cutout.fits").write_bytes(b"SIMPLE  =                    T")
    with pytest.raises(HfgalError, match=r"pip install 'hfgal\[astro\]'"):
        load_image(tmp_path / "cutout.fits")
