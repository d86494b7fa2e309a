"""Hub pushes: one commit of exactly the publishable files, tokens never leak, bad input fails in one line.

The Hub is unreachable here: the client's `HfApi` methods are replaced at the library boundary for the upload
path, and a local HTTP server on 127.0.0.1 (through HF_ENDPOINT) plays a Hub that refuses the token.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard

from fixtures.runs import make_run_dir
from hfgal.errors import HfgalError
from hfgal.hub.access import require_token, validate_repo_id
from hfgal.hub.push import push_run, upload_one_commit

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "astro-user/gz10-convnextv2-nano"
PUBLISHED = {
    "model.safetensors",
    "config.json",
    "preprocessor_config.json",
    "README.md",
    "results.json",
    "confusion_matrix.png",
    "config.yaml",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("runs") / "convnextv2-nano-gz10")


@pytest.fixture()
def fresh_run(run_dir, tmp_path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / "work" / "run"))


@pytest.fixture()
def canary(monkeypatch, tmp_path) -> str:
    """A recognisable fake token in HF_TOKEN, with no login cache around it."""
    token = "hf_canary" + secrets.token_hex(12)
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    return token


@pytest.fixture()
def fake_hub(monkeypatch):
    """Record every HfApi call the push makes, and what the staged folder held at upload time."""
    calls = {"create_repo": [], "create_branch": [], "upload_folder": []}
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{_dead_port()}")

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append({"repo_id": repo_id, "token": self.token, **kwargs})
        return SimpleNamespace(repo_id=repo_id)

    def create_branch(self, repo_id, **kwargs):
        calls["create_branch"].append({"repo_id": repo_id, **kwargs})

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        # The staged folder is deleted after the push: read it now.
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        calls["upload_folder"].append({**kwargs, "files": files, "token": self.token})
        oid = "0123456789abcdef0123456789abcdef01234567"
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/{oid}")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def _dead_port() -> int:
    """A local port nobody listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli(*args: str, env: dict[str, str | None]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for key, value in env.items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return subprocess.run(
        [sys.executable, "-m", "hfgal.cli", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("hfgal: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- ids and tokens


@pytest.mark.parametrize("repo_id", ["user/gz10", "my-org/galaxy10_decals.v2", "u/ConvNeXtV2-Tiny"])
def test_valid_repo_ids_pass(repo_id):
    assert validate_repo_id(repo_id) == repo_id


@pytest.mark.parametrize(
    ("repo_id", "fragment"),
    [
        ("gz10", "has no namespace"),
        ("user/gz10/extra", "invalid repo id"),
        ("user/bad..name", "invalid repo id"),
        ("user/-gz10", "invalid repo id"),
        ("user/gz10.git", "invalid repo id"),
        ("", "no repo id given"),
    ],
)
def test_malformed_repo_ids_fail_clearly(repo_id, fragment):
    with pytest.raises(HfgalError, match=fragment) as err:
        validate_repo_id(repo_id)
    assert "USER/NAME" in str(err.value) and "\n" not in str(err.value)


def test_bare_name_allowed_when_namespace_not_required():
    assert validate_repo_id("gz10", require_namespace=False) == "gz10"


def test_require_token_reads_env_and_fails_without(canary, monkeypatch):
    assert require_token() == canary
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(HfgalError, match=r"no Hugging Face token found; run `hf auth login` or set HF_TOKEN"):
        require_token()


# --------------------------------------------------------------------------- push_run


def test_push_run_uploads_exactly_the_publishable_files_in_one_commit(fresh_run, canary, fake_hub, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    url = push_run(fresh_run, REPO_ID, private=True)

    assert url == f"https://huggingface.co/{REPO_ID}/commit/0123456789abcdef0123456789abcdef01234567"
    assert len(fake_hub["create_repo"]) == 1 and len(fake_hub["upload_folder"]) == 1
    assert fake_hub["create_branch"] == []
    created = fake_hub["create_repo"][0]
    assert created["repo_id"] == REPO_ID and created["repo_type"] == "model"
    assert created["private"] is True and created["exist_ok"] is True
    upload = fake_hub["upload_folder"][0]
    assert upload["repo_id"] == REPO_ID and upload["repo_type"] == "model" and upload["revision"] is None
    assert upload["allow_patterns"] is None
    assert upload["commit_message"].startswith("Upload convnextv2-nano-gz10: test accuracy ")
    assert upload["token"] == canary  # the token reaches the client, and nowhere else

    files = upload["files"]
    assert set(files) == PUBLISHED  # no checkpoint-*/, optimizer states, logs or TensorBoard events
    for name in PUBLISHED - {"README.md"}:
        assert files[name] == (fresh_run / name).read_bytes(), name
    # The card was refreshed in the run folder with the repo id, and that is the card published.
    assert files["README.md"] == (fresh_run / "README.md").read_bytes()
    card = ModelCard((fresh_run / "README.md").read_text())
    assert card.data.model_name == "gz10-convnextv2-nano"
    assert f'model="{REPO_ID}"' in card.text
    # The staging folder is gone.
    assert not Path(upload["folder_path"]).exists()
    assert sorted(p.name for p in fresh_run.parent.iterdir()) == ["run"]

    # The token is nowhere: not in files written or uploaded, not in output, not in logs.
    for path in fresh_run.rglob("*"):
        if path.is_file():
            assert canary.encode() not in path.read_bytes(), path
    assert all(canary.encode() not in data for data in files.values())
    out, err = capsys.readouterr()
    assert canary not in out and canary not in err
    assert all(canary not in record.getMessage() for record in caplog.records)
    assert canary not in caplog.text


def test_push_run_to_a_branch(fresh_run, canary, fake_hub):
    push_run(fresh_run, REPO_ID, revision="seed-1", commit_message="seed 1 run")
    assert fake_hub["create_branch"] == [
        {"repo_id": REPO_ID, "branch": "seed-1", "repo_type": "model", "exist_ok": True}
    ]
    upload = fake_hub["upload_folder"][0]
    assert upload["revision"] == "seed-1" and upload["commit_message"] == "seed 1 run"
    assert fake_hub["create_repo"][0]["private"] is None


def test_push_run_stages_sharded_weights(fresh_run, canary, fake_hub):
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(fresh_run)
    (fresh_run / "model.safetensors").unlink()
    model.save_pretrained(fresh_run, max_shard_size="40KB")
    shards = sorted(p.name for p in fresh_run.glob("model-*.safetensors"))
    assert len(shards) > 1
    push_run(fresh_run, REPO_ID)
    files = set(fake_hub["upload_folder"][0]["files"])
    assert files == (PUBLISHED - {"model.safetensors"}) | {"model.safetensors.index.json", *shards}


def test_push_run_refuses_a_token_in_the_run_files(fresh_run, canary, fake_hub):
    config = yaml.safe_load((fresh_run / "config.yaml").read_text())
    config["hub_token"] = canary
    (fresh_run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(HfgalError, match="config.yaml contains your Hugging Face token") as err:
        push_run(fresh_run, REPO_ID)
    assert canary not in str(err.value)
    assert fake_hub["upload_folder"] == [] and fake_hub["create_repo"] == []


def test_push_run_needs_loadable_model_files(fresh_run, canary, fake_hub):
    (fresh_run / "preprocessor_config.json").unlink()
    with pytest.raises(HfgalError, match="no preprocessor_config.json"):
        push_run(fresh_run, REPO_ID)
    assert fake_hub["upload_folder"] == []


def test_push_run_without_token_fails_before_any_call(fresh_run, canary, fake_hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(HfgalError, match="no Hugging Face token found"):
        push_run(fresh_run, REPO_ID)
    assert fake_hub == {"create_repo": [], "create_branch": [], "upload_folder": []}


def test_upload_one_commit_for_spaces_and_datasets(tmp_path, canary, fake_hub):
    folder = tmp_path / "space"
    folder.mkdir()
    (folder / "app.py").write_text("print('hi')\n")
    upload_one_commit(folder, "astro-user/gz10-demo", repo_type="space", commit_message="Space")
    assert fake_hub["create_repo"][0]["space_sdk"] == "gradio"
    assert fake_hub["upload_folder"][0]["repo_type"] == "space"
    assert set(fake_hub["upload_folder"][0]["files"]) == {"app.py"}
    upload_one_commit(folder, "astro-user/gz10-study", repo_type="dataset", allow_patterns=["*.py"])
    assert "space_sdk" not in fake_hub["create_repo"][1]
    assert fake_hub["upload_folder"][1]["allow_patterns"] == ["*.py"]
    with pytest.raises(HfgalError, match="unknown repo type 'bucket'"):
        upload_one_commit(folder, "astro-user/x", repo_type="bucket")
    with pytest.raises(HfgalError, match="no such folder"):
        upload_one_commit(tmp_path / "nope", "astro-user/x")


def test_push_cli_prints_the_commit(fresh_run, canary, fake_hub, capsys):
    from hfgal.cli import main

    main(["push", str(fresh_run), "--repo-id", REPO_ID, "--private", "--revision", "v1"])
    out = capsys.readouterr().out
    assert out.startswith(f"pushed {fresh_run} to https://huggingface.co/{REPO_ID} (https://huggingface.co/")
    assert canary not in out
    assert fake_hub["create_repo"][0]["private"] is True and fake_hub["upload_folder"][0]["revision"] == "v1"


# --------------------------------------------------------------------------- CLI errors (real subprocesses)


def _half_finished(root: Path) -> Path:
    """A run killed mid-training: checkpoints, no results.json."""
    run = root / "killed-run"
    (run / "checkpoint-5").mkdir(parents=True)
    (run / "checkpoint-5" / "optimizer.pt").write_bytes(b"junk")
    return run


@pytest.mark.slow
@pytest.mark.parametrize("command", ["card", "push"])
@pytest.mark.parametrize("state", ["missing", "half-finished", "incomplete"])
def test_cli_refuses_unfinished_run_folders(command, state, tmp_path, run_dir):
    if state == "missing":
        run, fragment = tmp_path / "nope", "no such run folder"
    elif state == "half-finished":
        run, fragment = _half_finished(tmp_path), "no results.json — is the run finished?"
    else:
        run = Path(shutil.copytree(run_dir, tmp_path / "run"))
        results = json.loads((run / "results.json").read_text())
        (run / "results.json").write_text(json.dumps({**results, "complete": False}))
        fragment = "not marked complete"
    args = [command, str(run)] + (["--repo-id", REPO_ID] if command == "push" else [])
    proc = _cli(*args, env={"HF_TOKEN": "hf_canary_cli", "HF_HOME": str(tmp_path / "hf")})
    _assert_one_line_error(proc, fragment)
    assert str(run) in proc.stderr


@pytest.mark.slow
def test_push_cli_without_token(run_dir, tmp_path):
    proc = _cli(
        "push",
        str(run_dir),
        "--repo-id",
        REPO_ID,
        env={"HF_TOKEN": None, "HUGGING_FACE_HUB_TOKEN": None, "HF_HOME": str(tmp_path / "hf")},
    )
    _assert_one_line_error(proc, "no Hugging Face token found; run `hf auth login` or set HF_TOKEN")


@pytest.mark.slow
@pytest.mark.parametrize("repo_id", ["no-namespace", "a/b/c", "user/bad..id"])
def test_push_cli_malformed_repo_id(run_dir, tmp_path, repo_id):
    proc = _cli("push", str(run_dir), "--repo-id", repo_id, env={"HF_TOKEN": "hf_canary_cli"})
    _assert_one_line_error(proc, repr(repo_id))


class _RefusingHub(http.server.BaseHTTPRequestHandler):
    """A Hub that refuses every request and, carelessly, echoes the Authorization header back."""

    status = 400

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.dumps({"error": f"bad request from {self.headers.get('Authorization')}"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture()
def refusing_hub():
    servers = []

    def start(status: int) -> str:
        handler = type("Handler", (_RefusingHub,), {"status": status})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "fragment"),
    [(400, "the Hub refused the push"), (401, "rejected the token"), (403, "may not write to")],
)
def test_hub_refusal_is_one_line_without_token(fresh_run, canary, refusing_hub, monkeypatch, caplog, status, fragment):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", refusing_hub(status))
    with pytest.raises(HfgalError, match=fragment) as err:
        push_run(fresh_run, REPO_ID)
    message = str(err.value)
    # The server's message is kept (it says what is wrong), with the echoed token scrubbed out.
    assert f"({status}: bad request from Bearer <token>)" in message and "\n" not in message
    assert canary not in message and canary not in caplog.text
    assert sorted(p.name for p in fresh_run.parent.iterdir()) == ["run"]  # no staging folder left


def test_unreachable_hub(fresh_run, canary, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{_dead_port()}")
    with pytest.raises(HfgalError, match="could not reach the Hub to push model repo") as err:
        push_run(fresh_run, REPO_ID)
    assert canary not in str(err.value)


def test_offline_mode_fails_before_writing(fresh_run, canary, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    (fresh_run / "README.md").unlink(missing_ok=True)
    with pytest.raises(HfgalError, match="HF_HUB_OFFLINE is set; unset it and retry"):
        push_run(fresh_run, REPO_ID)
    assert not (fresh_run / "README.md").exists()


@pytest.mark.slow
def test_push_cli_hub_refusal_end_to_end(fresh_run, tmp_path, refusing_hub):
    token = "hf_canary" + secrets.token_hex(12)
    env = {
        "HF_TOKEN": token,
        "HF_ENDPOINT": refusing_hub(401),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": None,
    }
    proc = _cli("push", str(fresh_run), "--repo-id", REPO_ID, env=env)
    _assert_one_line_error(proc, "rejected the token for model repo")
    assert token not in proc.stderr and token not in proc.stdout
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
