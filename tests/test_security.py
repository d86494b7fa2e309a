"""Security: tokens never leak, remote code never runs unasked, pickles are refused, uploads are bounded, and
nothing is written outside the folders the user named (checked with a read-only home)."""

from __future__ import annotations

import ast
import ctypes
import http.server
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from fixtures.finetune import FINETUNE, REPO_ROOT, finetune_args
from hfgal.errors import HfgalError

# Variables that move caches and configs: unset, so the defaults under $HOME are what the code under test meets.
CACHE_VARIABLES = (
    "HF_HOME", "HF_DATASETS_CACHE", "HF_HUB_CACHE", "HF_MODULES_CACHE", "HF_TOKEN_PATH", "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_CACHE", "HFGAL_CACHE", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "MPLCONFIGDIR",
    "TORCH_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "GRADIO_TEMP_DIR", "HFGAL_DEBUG",
)  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    # PYTHONPATH: the subprocess must import this checkout, whatever `pip install -e` points at.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("HFGAL_DEBUG", None)
    return {**env, **extra}


def _run(argv: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, **kwargs)


def _hfgal(*args: str) -> list[str]:
    return [sys.executable, "-m", "hfgal.cli", *args]


def _files_containing(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


# --------------------------------------------------------------------------- tokens


class _RecordingHub(http.server.ThreadingHTTPServer):
    """A Hub that records every request and refuses it with a 401 that echoes the Authorization header back."""

    def __init__(self):
        self.requests: list[dict] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _refuse(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.requests.append({"line": self.requestline, "headers": dict(self.headers), "body": body})
                echo = f"Invalid credentials in Authorization header: {self.headers.get('Authorization')}"
                payload = json.dumps({"error": echo}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Error-Message", echo)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_HEAD = _refuse

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.mark.slow
def test_canary_token_leaks_nowhere(tmp_path, sample_dir, image_cache, monkeypatch, capsys, caplog):
    """A fine-tune, its card and a push (to a hostile Hub, and captured) with a canary HF_TOKEN: the token reaches
    the Hub client's Authorization header and nothing else: no file, log, card, output or error message."""
    canary = "hf_canary" + secrets.token_hex(16)
    env = _env(HF_TOKEN=canary, HF_HOME=str(tmp_path / "hf-home"), HFGAL_CACHE=str(image_cache))
    out = tmp_path / "run"
    outputs = []

    # --hub_token would be pickled into training_args.bin of every checkpoint: refused before anything is written.
    proc = _run([sys.executable, str(FINETUNE), *finetune_args(out, sample_dir), "--hub_token", canary], env)
    assert proc.returncode == 1 and "--hub_token would be saved" in proc.stderr and not out.exists()
    outputs.append(proc.stdout + proc.stderr)

    proc = _run([sys.executable, str(FINETUNE), *finetune_args(out, sample_dir, max_steps=2)], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs.append(proc.stdout + proc.stderr)
    proc = _run(_hfgal("card", str(out), "--repo-id", "astro-user/gz10-canary"), env)
    assert proc.returncode == 0, proc.stderr
    outputs.append(proc.stdout + proc.stderr)

    # A real push over HTTP to a Hub that refuses it and echoes the token in its error; with and without --debug.
    hub = _RecordingHub()
    try:
        push_env = {**env, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1"}
        for debug in ([], ["--debug"]):
            proc = _run(_hfgal(*debug, "push", str(out), "--repo-id", "astro-user/gz10-canary"), push_env)
            assert proc.returncode == 1 and "the Hub rejected the token" in proc.stderr, proc.stderr[-3000:]
            assert ("Traceback" in proc.stderr) == bool(debug)
            outputs.append(proc.stdout + proc.stderr)
    finally:
        hub.shutdown()
        hub.server_close()
    assert hub.requests, "the push never reached the local Hub"
    for request in hub.requests:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert headers.pop("authorization") == f"Bearer {canary}"
        assert canary not in request["line"] + json.dumps(headers) and canary.encode() not in request["body"]

    # A successful push, captured at the client boundary: what would be uploaded holds no token either.
    from huggingface_hub import HfApi

    from hfgal.hub.push import push_run

    uploads = []
    monkeypatch.setenv("HF_TOKEN", canary)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: SimpleNamespace(repo_id=repo_id))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        uploads.append({"token": self.token, "files": {p.name: p.read_bytes() for p in folder.rglob("*")}})
        return SimpleNamespace(commit_url="https://huggingface.co/astro-user/gz10-canary/commit/0123abcd")

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    with caplog.at_level("DEBUG"):
        assert push_run(out, "astro-user/gz10-canary").endswith("/commit/0123abcd")
    assert uploads[0]["token"] == canary and "model.safetensors" in uploads[0]["files"]
    assert not [name for name, data in uploads[0]["files"].items() if canary.encode() in data]
    captured = capsys.readouterr()
    outputs += [captured.out + captured.err, caplog.text]

    assert all(canary not in text for text in outputs)
    assert (out / "README.md").is_file() and "astro-user/gz10-canary" in (out / "README.md").read_text()
    assert not _files_containing(tmp_path, canary)  # run folder, checkpoints, training_args.bin, card, caches


def test_pushes_never_report_the_token_in_errors(tmp_path, monkeypatch):
    """Unreachable Hub: the error is one line and carries no token (the token is never part of a message)."""
    from fixtures.runs import make_run_dir
    from hfgal.hub.push import push_run

    canary = "hf_canary" + secrets.token_hex(16)
    run = make_run_dir(tmp_path / "run")
    monkeypatch.setenv("HF_TOKEN", canary)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HfgalError) as err:
        push_run(run, "astro-user/gz10-canary")
    assert canary not in str(err.value) and len(str(err.value).splitlines()) == 1
    assert canary not in repr(err.value.__cause__) + repr(err.value.__context__)


# --------------------------------------------------------------------------- remote code

CUSTOM_CODE = """
import os
from pathlib import Path

from transformers import ConvNextV2Config, ConvNextV2ForImageClassification

Path(os.environ["HFGAL_TEST_MARKER"]).touch()  # what a hostile repo would do: run on import


class CustomConfig(ConvNextV2Config):
    model_type = "custom-convnextv2"


class CustomModel(ConvNextV2ForImageClassification):
    config_class = CustomConfig
"""


@pytest.fixture()
def custom_code_folder(tmp_path) -> Path:
    """A saved GZ10 classifier whose config.json asks for the modelling code shipped beside it (auto_map)."""
    from transformers import ConvNextV2Config, ConvNextV2ForImageClassification, ViTImageProcessor

    from hfgal.constants import ID2LABEL, LABEL2ID

    folder = tmp_path / "custom-model"
    config = ConvNextV2Config(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], id2label=ID2LABEL, label2id=LABEL2ID)
    ConvNextV2ForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["model_type"] = "custom-convnextv2"
    meta["auto_map"] = {"AutoConfig": "custom.CustomConfig", "AutoModelForImageClassification": "custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(meta))
    (folder / "custom.py").write_text(CUSTOM_CODE)
    return folder


def test_remote_code_is_off_by_default_everywhere(custom_code_folder, tmp_path, monkeypatch, caplog):
    from hfgal.inference import load_classifier
    from hfgal.models.loading import load_model
    from hfgal.train.args import parse_args

    marker = tmp_path / "code-ran"
    monkeypatch.setenv("HFGAL_TEST_MARKER", str(marker))
    model_args, _, _ = parse_args([])
    assert model_args.trust_remote_code is False
    from hfgal.cli import build_parser

    predict = build_parser().parse_args(["predict", "--model", "m", "x.png"])
    assert predict.trust_remote_code is False

    for load, flag in ((load_model, "--trust_remote_code true"), (load_classifier, "--trust-remote-code")):
        with pytest.raises(HfgalError) as err:
            load(str(custom_code_folder))
        message = str(err.value)
        assert "needs its own modelling code" in message and flag in message and len(message.splitlines()) == 1
    assert not marker.exists()
    assert "trust_remote_code" not in caplog.text  # nothing was turned on, so no warning either


@pytest.mark.slow
def test_trust_remote_code_needs_the_flag_and_warns(custom_code_folder, tmp_path):
    """With the flag the custom code does run (it is passed through), and a warning says so."""
    script = f"""
import logging, sys
logging.basicConfig(level=logging.WARNING)
from hfgal.models.loading import load_model
from hfgal.inference import load_classifier
from hfgal.train.args import parse_args

model_args, _, _ = parse_args(["--model", {str(custom_code_folder)!r}, "--trust_remote_code", "true"])
loaded = load_model(model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code)
print("recipe", type(loaded.model).__name__)
clf = load_classifier({str(custom_code_folder)!r}, trust_remote_code=True, device="cpu")
print("classifier", type(clf.model).__name__)
"""
    marker = tmp_path / "code-ran"
    # HF_HOME: transformers copies the custom module into $HF_HOME/modules before importing it.
    env = _env(HFGAL_TEST_MARKER=str(marker), HF_HOME=str(tmp_path / "hf-home"))
    proc = _run([sys.executable, "-c", script], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "recipe CustomModel" in proc.stdout and "classifier CustomModel" in proc.stdout
    assert marker.exists()
    # Both loads (the recipe's and the classifier's) open the checkpoint the one way, and each warns.
    assert proc.stderr.count(f"trust_remote_code is on: code from {custom_code_folder} will run on this machine") == 2


# --------------------------------------------------------------------------- pickles


def _torch_load_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "torch.load"]


def _weights_only(call: ast.Call) -> bool:
    return any(k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in call.keywords)


def test_every_torch_load_is_weights_only():
    """hfgal's own code, and the transformers Trainer that reloads optimizer/scheduler/RNG states on resume."""
    import transformers.trainer

    ours = [*(REPO_ROOT / "hfgal").rglob("*.py"), *(REPO_ROOT / "recipes").glob("*.py")]
    unsafe = [f"{p}:{c.lineno}" for p in ours for c in _torch_load_calls(p) if not _weights_only(c)]
    assert not unsafe, unsafe
    trainer_calls = _torch_load_calls(Path(transformers.trainer.__file__))
    assert len(trainer_calls) >= 4  # optimizer, scheduler, scaler, RNG states, pickled weights
    assert [c.lineno for c in trainer_calls if not _weights_only(c)] == []


# --------------------------------------------------------------------------- demo uploads


@pytest.mark.slow
def test_demo_upload_is_limited_in_bytes_and_pixels(trained_run, tmp_path):
    """The served demo refuses uploads over MAX_FILE_BYTES at the HTTP layer; the pixel limit is checked from the
    image header by the handler (decompression bombs: tests/test_space.py)."""
    import socket

    from hfgal.data.imageio import DEFAULT_MAX_PIXELS, MAX_FILE_BYTES

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(tmp_path / "gradio"))
    argv = _hfgal("demo", "--model", str(trained_run), "--port", str(port))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        config = None
        deadline = time.monotonic() + 180
        while config is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/config", timeout=5) as r:
                    config = json.load(r)
            except OSError:
                time.sleep(0.5)
        assert config is not None, "the demo did not start"
        assert config["max_file_size"] == MAX_FILE_BYTES

        def upload(size: int) -> int:
            boundary = "hfgal-boundary"
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            body = head + b"\0" * size + f"\r\n--{boundary}--\r\n".encode()
            request = urllib.request.Request(
                f"{url}/gradio_api/upload",
                data=body,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    return r.status
            except urllib.error.HTTPError as err:
                return err.code

        assert upload(MAX_FILE_BYTES + 1) == 413
        assert upload(1000) == 200  # the limit, not uploads as such, refused the first one
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # The handler checks the file size and the pixel count before decoding.
    from PIL import Image

    from hfgal.demo.app import GalaxyDemo

    demo = GalaxyDemo([str(trained_run)], device="cpu")
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    side = int(DEFAULT_MAX_PIXELS**0.5) + 1
    bomb = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(bomb)
    for path, fragment in ((huge, "MiB"), (bomb, "pixels")):
        with pytest.raises(HfgalError, match=fragment):
            demo.predict(str(path))


# --------------------------------------------------------------------------- nothing written outside named folders


def _drop_write_override() -> None:
    # Root ignores file modes: drop CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from the bounding set
    # (PR_CAPBSET_DROP) so that the child, run as root, meets the read-only home as any user would.
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.mark.slow
def test_read_only_home_nothing_written_outside_named_folders(tmp_path, sample_dir):
    """data build, a tiny fine-tune, card and predict with HOME read-only and no cache variables set."""
    home, scratch, work = tmp_path / "home", tmp_path / "tmp", tmp_path / "work"
    for folder in (home, scratch, work):
        folder.mkdir()
    home.chmod(0o555)
    env = {k: v for k, v in _env().items() if k not in CACHE_VARIABLES}
    env.update(HOME=str(home), TMPDIR=str(scratch), HF_DATASETS_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    preexec = _drop_write_override if os.geteuid() == 0 else None

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return _run(argv, env, cwd=work, preexec_fn=preexec)

    try:
        try:
            writable = run(["touch", str(home / "probe")]).returncode == 0
        except subprocess.SubprocessError:  # no CAP_SETPCAP to drop capabilities with
            writable = True
        if writable:
            pytest.skip("cannot make a read-only home folder here (root without capability control)")

        data = work / "gz10"
        proc = run(_hfgal("data", "build", "--source", str(sample_dir), "--out", str(data)))
        assert proc.returncode == 0, proc.stderr[-3000:]

        # Caches that would go under $HOME: a one-line error naming the variable that moves them.
        tiny = finetune_args(work / "run", data, max_steps=2)
        proc = run([sys.executable, str(FINETUNE), *tiny])
        assert proc.returncode == 1 and "finetune.py: error: cannot write the decoded image cache" in proc.stderr
        assert "HFGAL_CACHE" in proc.stderr and "--image_cache_dir" in proc.stderr
        proc = run([sys.executable, str(FINETUNE), *finetune_args(work / "run", sample_dir, max_steps=2)])
        assert proc.returncode == 1 and "cannot write the datasets cache" in proc.stderr
        assert "HF_DATASETS_CACHE" in proc.stderr
        assert not (work / "run" / "results.json").exists()

        proc = run([sys.executable, str(FINETUNE), *tiny, "--image_cache_dir", str(work / "cache")])
        assert proc.returncode == 0, proc.stderr[-3000:]
        proc = run(_hfgal("card", str(work / "run")))
        assert proc.returncode == 0, proc.stderr[-3000:]
        images = [str(sample_dir / f"{c}_0.png") for c in range(3)]
        proc = run(_hfgal("predict", "--model", str(work / "run"), *images, "--output", str(work / "preds.csv")))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len((work / "preds.csv").read_text().splitlines()) == 4
    finally:
        home.chmod(0o755)

    assert _tree(home) == set()
    assert {p.name for p in work.iterdir()} == {"gz10", ".gz10.lock", "run", "cache", "preds.csv"}
    assert {p.name for p in (work / "cache").iterdir()} and all(p.suffix == ".npy" for p in (work / "cache").iterdir())
    # The system temp folder keeps no files (torch leaves an empty torchinductor_<user> folder on import).
    assert [p for p in scratch.rglob("*") if not p.is_dir()] == []
    shutil.rmtree(scratch)
