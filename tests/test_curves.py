"""Learning curves: a real run's Trainer log kept in its folder (trainer_log.jsonl, learning_curves.png), linked from
its card and pushed; `--report_to tensorboard` writes under the run folder's runs/ (never pushed); trackio works
offline."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from fixtures.finetune import finetune_args, run_finetune_main, subprocess_env
from hfgal.runs import CURVES_FILE, TENSORBOARD_DIR, TRAINING_LOG_FILE
from hfgal.train.curves import curve, read_training_log, save_learning_curves, validation_key


def _last_state(run: Path) -> dict:
    """The Trainer state of the run's last checkpoint: its whole log history up to there."""
    last = max(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return json.loads((last / "trainer_state.json").read_text())


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory, sample_dir, image_cache) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny-tensorboard"
    assert run_finetune_main(finetune_args(out, sample_dir, max_steps=4, report_to="tensorboard")) == 0
    # Every finished run keeps its training log and learning curves.
    assert (out / TRAINING_LOG_FILE).is_file() and (out / CURVES_FILE).is_file()
    return out


def test_tensorboard_events_land_under_the_run_folder(tensorboard_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted((tensorboard_run / TENSORBOARD_DIR).rglob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    log = _last_state(tensorboard_run)["log_history"]
    logged = [(s.step, s.value) for s in accumulator.Scalars("train/loss")]
    assert [step for step, _ in logged] == curve(log, "loss")[0] == [1, 2, 3, 4]
    assert [value for _, value in logged] == pytest.approx(curve(log, "loss")[1], rel=1e-6)
    assert [s.step for s in accumulator.Scalars("eval/accuracy")] == [2, 4]


def test_the_log_and_curves_are_kept_linked_and_pushed_but_not_tensorboard(tensorboard_run, tmp_path, monkeypatch):
    import shutil

    from huggingface_hub import HfApi

    from hfgal.hub.card import write_model_card
    from hfgal.hub.push import push_run

    run = Path(shutil.copytree(tensorboard_run, tmp_path / "run"))
    state = _last_state(run)
    written = save_learning_curves(run, state["log_history"], best_step=state["best_global_step"])
    assert written == [run / TRAINING_LOG_FILE, run / CURVES_FILE]
    assert read_training_log(run / TRAINING_LOG_FILE) == state["log_history"]  # every event, in order
    with Image.open(run / CURVES_FILE) as image:
        assert image.format == "PNG" and image.size == (1400, 400)
    card = write_model_card(run).read_text()
    assert "![learning curves](learning_curves.png)" in card and "[trainer_log.jsonl](trainer_log.jsonl)" in card

    uploaded = []
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: SimpleNamespace(repo_id=repo_id))

    def upload_folder(self, **kwargs):  # the Hub's upload, recorded at the library boundary
        folder = Path(kwargs["folder_path"])
        uploaded.extend(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        return SimpleNamespace(commit_url="https://huggingface.co/someone/tiny/commit/0")

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    push_run(run, "someone/tiny")
    assert {TRAINING_LOG_FILE, CURVES_FILE, "README.md", "results.json"} <= set(uploaded)
    assert not [name for name in uploaded if name.startswith(f"{TENSORBOARD_DIR}/") or "tfevents" in name]


def test_the_log_keeps_a_diverged_loss_as_null_and_an_empty_log_writes_nothing(tmp_path):
    log = [
        {"loss": 2.3, "learning_rate": 1e-3, "epoch": 0.5, "step": 1},
        {"loss": math.nan, "learning_rate": 1e-3, "epoch": 1.0, "step": 2},
        {"eval_validation_loss": 2.2, "eval_validation_accuracy": 0.3, "eval_test_accuracy": 0.4, "step": 2},
    ]
    save_learning_curves(tmp_path, log)
    text = (tmp_path / TRAINING_LOG_FILE).read_text()
    assert "NaN" not in text and json.loads(text.splitlines()[1])["loss"] is None
    assert curve(read_training_log(tmp_path / TRAINING_LOG_FILE), "loss") == ([1], [2.3])
    assert validation_key(log, "accuracy") == "eval_validation_accuracy"  # --test_each_eval's keys
    assert save_learning_curves(tmp_path / "shared", []) == [] and not (tmp_path / "shared").exists()


@pytest.mark.slow  # a run in a child process, so trackio reads TRACKIO_DIR afresh
def test_report_to_trackio_logs_offline(tmp_path, sample_dir, image_cache):
    env = subprocess_env(TRACKIO_DIR=str(tmp_path / "trackio"), HF_HUB_OFFLINE="1", HFGAL_CACHE=str(image_cache))
    args = finetune_args(tmp_path / "run", sample_dir, max_steps=2, report_to="trackio", project="gz10-test")
    proc = subprocess.run(
        [sys.executable, "-m", "hfgal.train", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    read = (
        "import json, trackio\n"
        "runs = trackio.SQLiteStorage.get_runs('gz10-test')\n"
        "print(json.dumps([trackio.SQLiteStorage.get_logs('gz10-test', r) for r in runs]))\n"
    )
    out = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    logs = [entry for run in json.loads(out.stdout.splitlines()[-1]) for entry in run]
    assert [e["train/loss"] for e in logs if "train/loss" in e] == pytest.approx(
        [e["loss"] for e in _last_state(tmp_path / "run")["log_history"] if "loss" in e], rel=1e-6
    )
