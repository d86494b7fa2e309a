"""The bad-input corpus: every CLI entry point, fed bad arguments and bad files, answers in one line.

Each case asserts a non-zero exit, one line naming the problem (`<tool>: error: ...`), no traceback unless
`--debug` (and a traceback with it), and no file left behind in the folder it ran in. The table runs in-process
(the entry points' real `main` through `run_cli`, as the console scripts do); a few cases run again as real
processes, where every line of stderr counts. Image loading in `hfgal predict` and in the demo is property-tested.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fixtures.finetune import FINETUNE, REPO_ROOT, finetune_args
from fixtures.gz10 import write_gz10_h5
from hfgal import GZ10_CLASSES
from hfgal.catalogue import probability_columns
from hfgal.errors import run_cli

STUDY = REPO_ROOT / "recipes" / "study.py"


# --------------------------------------------------------------------------- bad files, made per case


# Every setup is `make(case_folder, run_dir)`; run_dir is a finished run folder to copy from.


def _h5(d: Path, run: Path | None = None, name: str = "gz10.h5") -> Path:
    rng = np.random.default_rng(0)
    n = 12
    images = rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)
    return write_gz10_h5(d / name, images, np.arange(n) % 10, np.zeros(n), np.zeros(n))


def _truncated_h5(d: Path, run: Path) -> None:
    data = _h5(d, name="full.h5").read_bytes()
    (d / "cut.h5").write_bytes(data[: len(data) // 3])
    (d / "full.h5").unlink()


def _h5_missing_key(d: Path, run: Path) -> None:
    import h5py

    with h5py.File(d / "nokeys.h5", "w") as f:
        f.create_dataset("images", data=np.zeros((2, 16, 16, 3), dtype=np.uint8))


def _text(name: str, text: str):
    def make(d: Path, run: Path) -> None:
        (d / name).write_text(text)

    return make


def _run_copy(name: str = "run", results: bool = True):
    def make(d: Path, run_dir: Path) -> None:
        shutil.copytree(run_dir, d / name)
        if not results:
            (d / name / "results.json").unlink()

    return make


def _study_yaml(extra: str = ""):
    return _text(
        "study.yaml",
        "name: bad\ndataset: synthetic:120\nruns:\n  - name: c\n    table: 1\n    model: convnextv2-nano\n" + extra,
    )


# --------------------------------------------------------------------------- the table


@dataclass
class Case:
    id: str
    tool: str  # hfgal | finetune | study
    argv: list[str]
    code: int  # 1: hfgal error, 2: usage error
    needle: str  # what the one line must name
    setup: list = field(default_factory=list)  # make(case_folder, run_dir)
    env: dict = field(default_factory=dict)


def _ft(*change: str, **replace: str) -> list[str]:
    """The tiny fine-tune's arguments with some values replaced ({d}, {sample}: case folder, sample images)."""
    args = finetune_args("{d}/run", "{sample}", "convnextv2", max_steps=2)
    for key, value in replace.items():
        args[args.index(f"--{key}") + 1] = value
    return args + list(change)


BAD_ID = "not a repo id!"

CASES = [
    # hfgal data build / synthetic
    Case("build-no-out", "hfgal", ["data", "build"], 2, "required: --out"),
    Case("build-no-source", "hfgal", ["data", "build", "--out", "{d}/out"], 1, "nothing to build from"),
    Case("build-missing-h5", "hfgal", ["data", "build", "--h5", "{d}/no.h5", "--out", "{d}/out"], 1, "no such file"),
    Case(
        "build-empty-h5", "hfgal", ["data", "build", "--h5", "{d}/e.h5", "--out", "{d}/out"], 1, "empty",
        [_text("e.h5", "")],
    ),
    Case(
        "build-text-h5", "hfgal", ["data", "build", "--h5", "{d}/t.h5", "--out", "{d}/out"], 1, "not an HDF5 file",
        [_text("t.h5", "not hdf5 at all\n" * 50)],
    ),
    Case(
        "build-truncated-h5", "hfgal", ["data", "build", "--h5", "{d}/cut.h5", "--out", "{d}/out"], 1, "truncated",
        [_truncated_h5],
    ),
    Case(
        "build-h5-missing-keys", "hfgal", ["data", "build", "--h5", "{d}/nokeys.h5", "--out", "{d}/out"], 1,
        "missing key(s) ans", [_h5_missing_key],
    ),
    Case(
        "build-out-exists", "hfgal", ["data", "build", "--h5", "{d}/gz10.h5", "--out", "{d}"], 1, "already exists",
        [_h5],
    ),
    Case(
        "build-bad-scheme", "hfgal", ["data", "build", "--h5", "x", "--out", "o", "--split-scheme", "random"], 2,
        "invalid choice: 'random'",
    ),
    Case("build-bad-seed", "hfgal", ["data", "build", "--out", "o", "--seed", "abc"], 2, "invalid int value: 'abc'"),
    Case(
        "build-bad-repo-id", "hfgal", ["data", "build", "--h5", "{d}/gz10.h5", "--out", "{d}/o", "--push-to", BAD_ID],
        1, "invalid repo id", [_h5],
    ),
    Case(
        "build-missing-source", "hfgal", ["data", "build", "--source", "{d}/nope", "--out", "{d}/o"], 1,
        "does not exist",
    ),
    Case(
        "build-tiny-synthetic", "hfgal", ["data", "build", "--source", "synthetic:5", "--out", "{d}/o"], 1,
        "too small",
    ),
    # The test session is offline (HF_HUB_OFFLINE=1): a download is refused without a request.
    Case("download-offline", "hfgal", ["data", "download", "--dir", "{d}/z"], 1, "HF_HUB_OFFLINE is set"),
    Case(
        "build-hub-copy-with-a-scheme", "hfgal",
        ["data", "build", "--source", "matthieulel/galaxy10_decals", "--out", "{d}/o", "--split-scheme", "default"], 1,
        "cannot be honoured",
    ),
    Case("synthetic-too-few", "hfgal", ["data", "synthetic", "--n", "5", "--out", "{d}/o"], 1, "too small"),
    Case("synthetic-bad-n", "hfgal", ["data", "synthetic", "--n", "many", "--out", "o"], 2, "invalid int value"),
    Case(
        "synthetic-bad-proportions", "hfgal", ["data", "synthetic", "--out", "o", "--proportions", "flat"], 2,
        "invalid choice: 'flat'",
    ),
    # recipes/finetune.py
    Case("ft-missing-config", "finetune", ["--config", "{d}/no.yaml"], 1, "no.yaml: no such file"),
    Case(
        "ft-unknown-yaml-key", "finetune", ["--config", "{d}/r.yaml"], 1, "unknown key(s) learning_rat",
        [_text("r.yaml", "model: vit-base\nlearning_rat: 0.1\n")],
    ),
    Case(
        "ft-yaml-not-mapping", "finetune", ["--config", "{d}/r.yaml"], 1, "expected a mapping",
        [_text("r.yaml", "- vit-base\n- 0.1\n")],
    ),
    Case(
        "ft-yaml-invalid", "finetune", ["--config", "{d}/r.yaml"], 1, "not valid YAML",
        [_text("r.yaml", "model: [vit-base\n")],
    ),
    Case("ft-bad-int", "finetune", _ft(max_steps="abc"), 2, "--max_steps/--max-steps: invalid int value: 'abc'"),
    Case("ft-unknown-flag", "finetune", _ft("--learning-ratee", "3"), 1, "unknown argument(s) --learning-ratee 3"),
    Case("ft-abbreviated-flag", "finetune", _ft("--learning_rat", "3"), 1, "unknown argument(s) --learning_rat 3"),
    Case("ft-trained-run-missing", "finetune", _ft("--trained_run", "{d}/nothing"), 1, "no finished run there"),
    Case(
        "ft-trained-run-other-settings", "finetune", _ft("--trained_run", "{d}/twin", learning_rate="0.5"), 1,
        "was trained with other settings", setup=[_run_copy("twin")],
    ),
    Case("ft-bad-overrides", "finetune", _ft(model_config_overrides="{depths: 1"), 1, "not valid JSON"),
    Case("ft-bad-image-size", "finetune", _ft(image_size="big"), 1, "--image_size 'big'"),
    Case("ft-not-square-tta", "finetune", _ft("--tta", "true", image_size="32x48"), 1, "square"),
    Case("ft-bad-init", "finetune", _ft("--init", "sideways"), 1, "--init 'sideways'"),
    Case("ft-missing-dataset", "finetune", _ft(dataset="{d}/nope"), 1, "does not exist"),
    Case("ft-unknown-timm", "finetune", _ft(model="timm:no_such_net"), 1, "unknown timm architecture"),
    Case("ft-unknown-model", "finetune", _ft(model="nobody/no-such-model"), 1, "nobody/no-such-model"),
    Case(
        "ft-missing-checkpoint", "finetune", _ft("--resume_from_checkpoint", "{d}/ckpt"), 1,
        "no such checkpoint folder",
    ),
    Case("ft-push-without-id", "finetune", _ft("--push_to_hub", "true"), 1, "--hub_model_id"),
    Case(
        "ft-push-offline", "finetune", _ft("--push_to_hub", "true", "--hub_model_id", "astro-user/gz10"), 1,
        "HF_HUB_OFFLINE is set", env={"HF_TOKEN": "hf_test"},
    ),
    Case("ft-hub-token-flag", "finetune", _ft("--hub_token", "hf_x"), 1, "--hub_token would be saved"),
    # recipes/study.py
    Case("study-no-config", "study", [], 2, "required: --config"),
    Case("study-abbreviated-flag", "study", ["--conf", "x.yaml"], 2, "required: --config"),
    Case("hfgal-abbreviated-flag", "hfgal", ["data", "build", "--ou", "o"], 2, "required: --out"),
    Case("study-missing-config", "study", ["--config", "{d}/no.yaml"], 1, "no.yaml"),
    Case(
        "study-unknown-key", "study", ["--config", "{d}/study.yaml", "--output-dir", "{d}/s"], 1, "colour",
        [_study_yaml("colour: red\n")],
    ),
    Case(
        "study-zero-jobs", "study", ["--config", "{d}/study.yaml", "--output-dir", "{d}/s", "--jobs", "0"], 1,
        "--jobs 0", [_study_yaml()],
    ),
    Case("study-bad-jobs", "study", ["--config", "x.yaml", "--jobs", "some"], 2, "invalid int value: 'some'"),
    # hfgal study run: the same runner from an install
    Case("study-run-no-config", "hfgal", ["study", "run"], 2, "required: --config"),
    Case(
        "study-run-unknown-study", "hfgal", ["study", "run", "--config", "fulll"], 1,
        "'fulll': no such file and no study of that name shipped with hfgal",
    ),
    Case(
        "study-run-unknown-key", "hfgal", ["study", "run", "--config", "{d}/study.yaml", "--output-dir", "{d}/s"], 1,
        "unknown key 'colour' in the study", [_study_yaml("colour: red\n")],
    ),
    Case(
        "study-run-bad-seeds", "hfgal", ["study", "run", "--config", "{d}/study.yaml", "--output-dir", "{d}/s"], 1,
        "seeds: must be a non-empty list", [_study_yaml("seeds: []\n")],
    ),
    Case(
        "study-run-bad-init", "hfgal", ["study", "run", "--config", "{d}/study.yaml", "--output-dir", "{d}/s"], 1,
        "run 'c' (table 1) init: input should be 'pretrained' or 'scratch'", [_study_yaml("    init: random\n")],
    ),
    Case(
        "study-run-missing-recipe", "hfgal",
        ["study", "run", "--config", "{d}/study.yaml", "--output-dir", "{d}/s", "--recipe", "no_such_recipe"], 1,
        "--recipe no_such_recipe: no such module", [_study_yaml()],
    ),
    # hfgal card / push
    Case("card-missing-folder", "hfgal", ["card", "{d}/nope"], 1, "nope"),
    Case("card-unfinished-run", "hfgal", ["card", "{d}/run"], 1, "results.json", [_run_copy(results=False)]),
    Case("card-bad-repo-id", "hfgal", ["card", "{d}/run", "--repo-id", BAD_ID], 1, "invalid repo id", [_run_copy()]),
    Case("push-no-repo-id", "hfgal", ["push", "{d}/run"], 2, "required: --repo-id"),
    Case("push-bad-repo-id", "hfgal", ["push", "{d}/run", "--repo-id", BAD_ID], 1, "invalid repo id", [_run_copy()]),
    Case(
        "push-no-token", "hfgal", ["push", "{d}/run", "--repo-id", "astro-user/gz10"], 1, "no Hugging Face token",
        [_run_copy()],
    ),
    Case(
        "push-unfinished-run", "hfgal", ["push", "{d}/run", "--repo-id", "astro-user/gz10"], 1, "results.json",
        [_run_copy(results=False)],
    ),
    # hfgal predict
    Case("predict-no-model", "hfgal", ["predict", "{sample}/2_0.png"], 2, "required: --model"),
    Case("predict-missing-image", "hfgal", ["predict", "--model", "{run}", "{d}/no.png"], 1, "no.png"),
    Case("predict-missing-model", "hfgal", ["predict", "--model", "{d}/nope", "{sample}/2_0.png"], 1, "nope"),
    Case(
        "predict-model-without-weights", "hfgal", ["predict", "--model", "{d}/empty", "{sample}/2_0.png"], 1,
        "config.json", [lambda d, run: (d / "empty").mkdir()],
    ),
    Case(
        "predict-bad-batch-size", "hfgal", ["predict", "--model", "{run}", "{sample}/2_0.png", "--batch-size", "0"], 1,
        "--batch-size must be at least 1",
    ),
    Case(
        "predict-bad-device", "hfgal", ["predict", "--model", "{run}", "{sample}/2_0.png", "--device", "quantum"], 1,
        "unknown device 'quantum'",
    ),
    Case(
        "predict-no-images", "hfgal", ["predict", "--model", "{run}", "{d}/docs"], 1, "docs",
        [lambda d, run: (d / "docs").mkdir() or (d / "docs" / "notes.txt").write_text("no images here")],
    ),
    # hfgal space build / demo
    Case("space-no-out", "hfgal", ["space", "build", "--model", "{run}"], 2, "required: --out"),
    Case(
        "space-missing-model", "hfgal", ["space", "build", "--model", "{d}/nope", "--examples", "{sample}", "--out",
        "{d}/space"], 1, "nope",
    ),
    Case(
        "space-missing-examples", "hfgal", ["space", "build", "--model", "{run}", "--examples", "{d}/nope", "--out",
        "{d}/space"], 1, "nope",
    ),
    Case(
        "space-bad-push-id", "hfgal", ["space", "build", "--model", "{run}", "--examples", "{sample}", "--out",
        "{d}/space", "--push-to", BAD_ID], 1, "invalid repo id",
    ),
    Case("demo-missing-model", "hfgal", ["demo", "--model", "{d}/nope"], 1, "nope"),
    Case("demo-bad-port", "hfgal", ["demo", "--model", "{run}", "--port", "http"], 2, "invalid int value: 'http'"),
    Case("demo-missing-examples", "hfgal", ["demo", "--model", "{run}", "--examples", "{d}/nope"], 1, "nope"),
    # hfgal study report / push, and the command itself
    Case("report-missing-folder", "hfgal", ["study", "report", "{d}/nope"], 1, "nope"),
    Case(
        "report-not-a-study", "hfgal", ["study", "report", "{d}/empty"], 1, "study.yaml",
        [lambda d, run: (d / "empty").mkdir()],
    ),
    Case("study-push-bad-id", "hfgal", ["study", "push", "{d}", "--repo-id", BAD_ID], 1, "invalid repo id"),
    Case("study-push-missing", "hfgal", ["study", "push", "{d}/nope", "--repo-id", "astro-user/s"], 1, "nope"),
    Case("study-no-action", "hfgal", ["study"], 2, "required: ACTION"),
    Case("unknown-command", "hfgal", ["frobnicate"], 2, "invalid choice: 'frobnicate'"),
]  # fmt: skip

PROG = {"hfgal": "hfgal", "finetune": "finetune.py", "study": "study.py"}


def _load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scripts() -> dict:
    return {"finetune": _load_script(FINETUNE, "hfgal_finetune_cli"), "study": _load_script(STUDY, "hfgal_study_cli")}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished run folder (tiny random ConvNeXt V2, GZ10 labels, results.json, card)."""
    from fixtures.runs import make_run_dir

    return make_run_dir(tmp_path_factory.mktemp("bad-input-runs") / "run", image_size=32)


def _invoke(case: Case, argv: list[str], scripts: dict, monkeypatch) -> int:
    """Run one entry point the way its console script does; the exit code."""
    full = [PROG[case.tool], *argv]
    try:
        if case.tool == "hfgal":
            from hfgal.cli import main

            main(argv)
        elif case.tool == "finetune":
            monkeypatch.setattr(sys, "argv", [str(FINETUNE), *argv])
            scripts["finetune"].cli(full[1:], prog="finetune.py")
        else:
            monkeypatch.setattr(sys, "argv", full)
            run_cli(scripts["study"].main, prog="study.py")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    return 0


def _snapshot(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(case, tmp_path, sample_dir, run_dir, scripts, monkeypatch, capsys):
    d = tmp_path / "case"
    d.mkdir()
    for make in case.setup:
        make(d, run_dir)
    monkeypatch.chdir(d)  # default output folders (outputs/, studies/) would appear here
    monkeypatch.delenv("HFGAL_DEBUG", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    places = {"{d}": str(d), "{sample}": str(sample_dir), "{run}": str(run_dir)}
    argv = []
    for arg in case.argv:
        for key, value in places.items():
            arg = arg.replace(key, value)
        argv.append(arg)
    before = _snapshot(d)

    for debug in (False, True):
        code = _invoke(case, argv + (["--debug"] if debug else []), scripts, monkeypatch)
        err = capsys.readouterr().err
        assert code == case.code, err[-3000:]
        errors = [line for line in err.splitlines() if ": error: " in line]
        assert len(errors) == 1 and errors[0].startswith(f"{PROG[case.tool]}: error: "), err[-3000:]
        assert case.needle in errors[0], errors[0]
        # Usage errors have no traceback to show; handler errors show one only when asked.
        assert ("Traceback" in err) == (debug and case.code == 1), err[-3000:]
        assert _snapshot(d) == before, "files left behind"


# --------------------------------------------------------------------------- as real processes: all of stderr


REAL = [
    ("hfgal", ["data", "synthetic", "--n", "many", "--out", "o"], 2, "invalid int value: 'many'"),
    ("hfgal", ["data", "build", "--h5", "missing.h5", "--out", "o"], 1, "missing.h5: no such file"),
    ("finetune", ["--max_steps", "abc"], 2, "invalid int value: 'abc'"),
    ("finetune", ["--config", "missing.yaml"], 1, "missing.yaml: no such file"),
    ("study", ["--jobs", "some", "--config", "x.yaml"], 2, "invalid int value: 'some'"),
    ("study", ["--config", "missing.yaml"], 1, "missing.yaml"),
    ("hfgal", ["study", "run", "--config", "missing.yaml"], 1, "missing.yaml not found"),
]


def _command(tool: str) -> list[str]:
    return {
        "hfgal": [sys.executable, "-m", "hfgal.cli"],
        "finetune": [sys.executable, str(FINETUNE)],
        "study": [sys.executable, str(STUDY)],
    }[tool]


@pytest.mark.slow
@pytest.mark.parametrize("tool, argv, code, needle", REAL, ids=[f"{t}-{c}" for t, _, c, _ in REAL])
def test_console_stderr_is_exactly_one_line(tool, argv, code, needle, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("HFGAL_DEBUG", None)
    proc = subprocess.run(_command(tool) + argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == code and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"{PROG[tool]}: error: "), proc.stderr
    assert needle in proc.stderr
    if code == 1:
        debug = subprocess.run(
            _command(tool) + argv + ["--debug"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
        )
        assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
        assert debug.stderr.strip().splitlines()[-1].startswith(f"{PROG[tool]}: error: ")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- property-based: image loading

FORMATS = [("RGB", "PNG"), ("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("I;16", "PNG"), ("1", "PNG")]
FORMATS += [("RGB", "JPEG"), ("L", "JPEG"), ("RGB", "TIFF"), ("F", "TIFF"), ("RGB", "WEBP"), ("RGB", "GIF")]


@st.composite
def image_files(draw) -> tuple[bytes, str, tuple[int, int] | None]:
    """Encoded images of random size, mode and format, maybe cut short or with a flipped byte, or plain noise.

    Returns (file bytes, suffix, (width, height) when the file is intact).
    """
    kind = draw(st.sampled_from(["image", "image", "image", "noise", "empty"]))
    if kind == "noise":
        return draw(st.binary(min_size=1, max_size=2000)), ".png", None
    if kind == "empty":
        return b"", ".jpg", None
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    mode, fmt = draw(st.sampled_from(FORMATS))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    elif mode == "F":
        image = Image.fromarray(rng.random((height, width), dtype=np.float32))
    else:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    data = bytearray(buffer.getvalue())
    damage = draw(st.sampled_from(["none", "none", "cut", "flip"]))
    if damage == "cut":
        data = data[: draw(st.integers(1, max(1, len(data) - 1)))]
    elif damage == "flip":
        data[draw(st.integers(0, len(data) - 1))] ^= 0xFF
    return bytes(data), "." + fmt.lower().replace("jpeg", "jpg"), (width, height) if damage == "none" else None


@pytest.fixture(scope="module")
def demo(run_dir):
    pytest.importorskip("gradio")
    from hfgal.demo.app import GalaxyDemo

    return GalaxyDemo([str(run_dir)], device="cpu")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(sample=image_files())
def test_property_demo_handler_answers_or_explains(sample, demo, tmp_path_factory):
    """Any upload gives 10 class probabilities summing to 1 and an RGB preview, or a one-line gr.Error naming
    the file as uploaded: never another exception."""
    import gradio as gr

    data, suffix, size = sample
    path = tmp_path_factory.mktemp("upload") / f"galaxy{suffix}"
    path.write_bytes(data)
    try:
        scores, description, preview = demo.classify(str(path), None, False)
    except gr.Error as err:
        message = str(err.message)
        assert message.startswith(f"{path.name}: ") and "\n" not in message, message
        assert size is None, f"an intact image was refused: {message}"
        return
    assert set(scores) == set(GZ10_CLASSES) and abs(sum(scores.values()) - 1) < 1e-4
    assert all(0 <= p <= 1 for p in scores.values()) and description
    assert preview.mode == "RGB" and max(preview.size) <= 384
    if size is not None:  # never a silently wrong shape: at most 300 px here, so the preview is the upload's size
        assert preview.size == size


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(samples=st.lists(image_files(), min_size=1, max_size=3))
def test_property_predict_cli_rows_or_skips(samples, run_dir, tmp_path_factory, capsys):
    """`hfgal predict` over random files: one CSV row per readable file with a GZ10 label and its probability,
    every other file listed as skipped, exit 1 exactly when something was skipped; never a traceback."""
    import csv

    from hfgal.cli import main

    folder = tmp_path_factory.mktemp("predict")
    paths = []
    for i, (data, suffix, _) in enumerate(samples):
        paths.append(folder / f"img{i}{suffix}")
        paths[-1].write_bytes(data)
    out = folder / "preds.csv"
    try:
        main(["predict", "--model", str(run_dir), *map(str, paths), "--output", str(out), "--device", "cpu"])
        code = 0
    except SystemExit as done:
        code = done.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    rows = list(csv.DictReader(out.open()))
    read = {row["path"] for row in rows}
    skipped = [p for p in paths if str(p) not in read]
    assert code == (1 if skipped else 0), err
    for row in rows:
        assert row["label"] in GZ10_CLASSES and 0 <= float(row["probability"]) <= 1
        scores = [float(row[column]) for column in probability_columns(GZ10_CLASSES)]
        assert sum(scores) == pytest.approx(1.0, abs=1e-5) and float(row["probability"]) == max(scores)
    for path, (_, _, size) in zip(paths, samples, strict=True):
        if size is not None and str(path) not in read:
            pytest.fail(f"an intact image was skipped: {path}\n{err}")
        if str(path) not in read:
            assert f"  {path}" in err.splitlines()
