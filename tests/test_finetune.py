"""The fine-tuning recipe end to end: tiny real architectures, DDP on CPU, resume, configs, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures.finetune import FINETUNE, REPO_ROOT, finetune_args, run_finetune_main, subprocess_env
from hfgal import GZ10_CLASSES
from hfgal.errors import HfgalError

RESULT_KEYS = {
    "model", "init", "params_total", "params_trainable", "image_size", "dataset", "seed", "validation", "test",
    "carbon", "train_seconds", "train_images_per_second", "hardware", "versions", "complete", "best_checkpoint",
}  # fmt: skip
N_TEST = 3  # the sample's test split: 30 galaxies split 80/10/10
METRIC_KEYS = {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix", "accuracy_ci95"}


def _check_run(out: Path, n_test: int) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert RESULT_KEYS <= set(results)
    for split in ("validation", "test"):
        assert METRIC_KEYS <= set(results[split])
        assert 0.0 <= results[split]["accuracy"] <= 1.0
        assert set(results[split]["per_class"]) == set(GZ10_CLASSES)
    assert np.asarray(results["test"]["confusion_matrix"]).sum() == n_test  # each test image once
    assert results["params_total"] >= results["params_trainable"] > 0
    carbon = results["carbon"]
    assert {"emissions_kg", "energy_kwh", "duration_s"} <= set(carbon["train"]) and carbon["train"]["duration_s"] > 0
    assert set(results["versions"]) >= {"torch", "transformers", "timm", "hfgal"}
    assert results["hardware"]["cpu_count"] >= 1
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    assert (out / "config.yaml").is_file() and (out / "model.safetensors").is_file()
    assert (out / "README.md").is_file()
    return results


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["vit", "dinov2", "timm"])
def test_end_to_end_tiny_architectures(arch, tmp_path, sample_dir, image_cache):
    out = tmp_path / arch
    assert run_finetune_main(finetune_args(out, sample_dir, arch, max_steps=4)) == 0
    _check_run(out, n_test=N_TEST)
    _assert_loads_with_pipeline(out, sample_dir)


@pytest.mark.slow
def test_trained_run_changed_parameters_and_pipeline(trained_run, sample_dir):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForImageClassification

    results = _check_run(trained_run, n_test=N_TEST)
    assert results["init"] == "scratch" and results["global_step"] == 4
    assert results["best_checkpoint"] in ("checkpoint-2", "checkpoint-4")
    # Weights moved away from a fresh initialisation of the same config with the same seed.
    torch.manual_seed(42)
    fresh = AutoModelForImageClassification.from_config(AutoConfig.from_pretrained(trained_run))
    trained = load_file(trained_run / "model.safetensors")
    changed = [k for k, v in fresh.state_dict().items() if k in trained and not torch.equal(v, trained[k])]
    assert len(changed) > len(trained) // 2
    config = AutoConfig.from_pretrained(trained_run)
    assert config.id2label[0] == "Disturbed" and config.label2id["Edge-on with Bulge"] == 9
    _assert_loads_with_pipeline(trained_run, sample_dir)


def _assert_loads_with_pipeline(out: Path, sample_dir: Path) -> None:
    from transformers import pipeline

    classify = pipeline("image-classification", model=str(out), device="cpu")
    preds = classify(str(sample_dir / "2_0.png"), top_k=3)
    assert len(preds) == 3 and preds[0]["label"] in GZ10_CLASSES
    assert preds[0]["score"] >= preds[1]["score"]


@pytest.mark.slow
def test_config_yaml_reproduces_the_run_arguments(trained_run):
    from hfgal.train.args import parse_args, resolved_config

    model_args, data_args, training_args = parse_args(["--config", str(trained_run / "config.yaml")])
    again = resolved_config(model_args, data_args, training_args)
    import yaml

    written = yaml.safe_load((trained_run / "config.yaml").read_text())
    for key in ("model_name_or_path", "dataset", "max_steps", "learning_rate", "seed", "image_size"):
        assert again[key] == written[key]


def test_every_recipe_yaml_parses():
    from hfgal.train.args import parse_args

    configs = sorted((REPO_ROOT / "recipes").glob("*.yaml"))
    assert configs
    for path in configs:
        model_args, data_args, training_args = parse_args(["--config", str(path)])
        assert model_args.model_name_or_path and data_args.dataset and training_args.output_dir


def test_unknown_yaml_key_is_an_error(tmp_path):
    from hfgal.train.args import parse_args

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: vit-base\nlearning_rat: 0.1\n")
    with pytest.raises(HfgalError, match="learning_rat"):
        parse_args(["--config", str(bad)])


def _recipe(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(FINETUNE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(**(env or {})),
    )


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"model": "nobody/no-such-model"}, "nobody/no-such-model"),
        ({"dataset": "/nonexistent/gz10"}, "does not exist"),
        ({"tta": "true", "image_size": "32x48"}, "square"),
        ({"init": "sideways"}, "init"),
    ],
)
@pytest.mark.slow
def test_bad_input_one_line_error(change, needle, tmp_path, sample_dir):
    args = finetune_args(tmp_path / "run", sample_dir, "convnextv2")
    for key, value in change.items():
        flag = f"--{key}"
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    proc = _recipe(*args, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("finetune.py: error")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_labels_outside_gz10_classes(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value

    rng = np.random.default_rng(0)
    feats = Features({"image": Image(), "label": Value("int64")})
    ds = Dataset.from_dict(
        {"image": [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(20)], "label": [11] * 20},
        features=feats,
    )
    DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "bad"))
    from hfgal.data.sources import load_gz10

    with pytest.raises(HfgalError, match="outside the 10 GZ10 classes"):
        load_gz10(str(tmp_path / "bad"))
    assert ClassLabel  # imported for the features above


@pytest.mark.slow
def test_resume_after_kill_finishes_with_same_steps(tmp_path, sample_dir, image_cache):
    out = tmp_path / "resume"
    args = finetune_args(out, sample_dir, "convnextv2", max_steps=24, save_steps=2, eval_steps=2)
    env = subprocess_env(HFGAL_CACHE=str(image_cache))
    log = tmp_path / "first.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(FINETUNE), *args], env=env, start_new_session=True,
                                stdout=stderr, stderr=stderr)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if list(out.glob("checkpoint-*/trainer_state.json")):
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    assert list(out.glob("checkpoint-*")), f"the run never reached its first checkpoint:\n{log.read_text()[-3000:]}"
    proc.wait()
    assert not (out / "results.json").exists()
    # Relaunch the same command: it resumes from the last complete checkpoint and finishes.
    done = _recipe(*args, "--resume_from_checkpoint", "true", env={"HFGAL_CACHE": str(image_cache)})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["global_step"] == 24 and results["complete"]
    assert "resuming from" in done.stderr


def test_unused_parameters_are_found_and_frozen():
    from transformers import Dinov2Config, Dinov2ForImageClassification

    from hfgal.models.adapt import freeze_unused_parameters

    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    model = Dinov2ForImageClassification(config).train()
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    assert freeze_unused_parameters(model, (32, 32)) == ["dinov2.embeddings.mask_token"]
    assert not model.dinov2.embeddings.mask_token.requires_grad
    assert all(p.requires_grad for n, p in model.named_parameters() if "mask_token" not in n)
    assert model.training and all(p.grad is None for p in model.parameters())  # no side effects
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())


def test_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    configs = sorted((REPO_ROOT / "recipes" / "accelerate").glob("*.yaml"))
    assert {p.stem for p in configs} >= {"single_gpu", "multi_gpu", "multi_node"}
    for path in configs:
        config = load_config_from_file(str(path))
        assert config.num_processes >= 1 and config.num_machines >= 1


@pytest.mark.slow
def test_rerun_of_finished_run_is_a_no_op_that_restores_its_card(trained_run, sample_dir):
    before = (trained_run / "results.json").stat().st_mtime_ns
    card = (trained_run / "README.md").read_text()
    (trained_run / "README.md").unlink()  # as if killed between results.json and the card
    assert run_finetune_main(finetune_args(trained_run, sample_dir, "convnextv2", max_steps=4)) == 0
    assert (trained_run / "results.json").stat().st_mtime_ns == before
    assert (trained_run / "README.md").read_text() == card


def test_trainer_debug_option_reaches_the_trainer(tmp_path, sample_dir):
    from transformers.debug_utils import DebugOption

    from hfgal.errors import run_cli
    from hfgal.train.args import parse_args

    argv = ["finetune.py", *finetune_args(tmp_path / "run", sample_dir), "--debug", "underflow_overflow"]
    seen = []
    run_cli(lambda: seen.append(parse_args(argv[1:])), argv)
    assert "--debug" in argv  # the Trainer's flag, not hfgal's traceback switch
    assert seen[0][2].debug == [DebugOption.UNDERFLOW_OVERFLOW]

    ours = ["hfgal", "predict", "--debug", "galaxy.png"]
    run_cli(lambda: None, ours)
    assert ours == ["hfgal", "predict", "galaxy.png"]


@pytest.mark.slow
def test_a_moved_run_folder_resumes_with_its_best_checkpoint(tmp_path, sample_dir, image_cache):
    first = tmp_path / "scratch" / "run"
    args = finetune_args(first, sample_dir, "convnextv2", max_steps=4)
    assert run_finetune_main(args) == 0
    shutil.rmtree(first / "checkpoint-4")  # as if killed after the step-2 checkpoint
    for name in ("results.json", "README.md", "model.safetensors"):
        (first / name).unlink()
    moved = tmp_path / "home" / "run"
    moved.parent.mkdir()
    first.rename(moved)  # e.g. from a node's scratch disk to shared storage
    state = json.loads((moved / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"].startswith(str(first))  # the Trainer's record: the old place

    again = finetune_args(moved, sample_dir, "convnextv2", max_steps=4)
    done = _recipe(*again, "--resume_from_checkpoint", "true", env={"HFGAL_CACHE": str(image_cache)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "does not exist anymore" not in done.stderr  # the Trainer would drop the best checkpoint
    assert "the run folder moved" in done.stderr
    results = json.loads((moved / "results.json").read_text())
    assert results["global_step"] == 4 and (moved / results["best_checkpoint"]).is_dir()
    state = json.loads((moved / "checkpoint-4" / "trainer_state.json").read_text())
    assert Path(state["best_model_checkpoint"]).parent == moved


@pytest.mark.slow
def test_shared_training_is_refused_when_a_training_setting_differs(tmp_path, trained_run, sample_dir):
    out = tmp_path / "tta"
    args = finetune_args(out, sample_dir, "convnextv2", max_steps=4, tta="true", trained_run=str(trained_run))
    assert run_finetune_main(args) == 0  # evaluation settings may differ
    assert json.loads((out / "results.json").read_text())["trained_by"] == trained_run.name
    card = (out / "README.md").read_text()
    assert f"the training is that of the run `{trained_run.name}`" in card and "8 dihedral views of each" in card
    other = finetune_args(tmp_path / "other", sample_dir, "convnextv2", max_steps=4, learning_rate="0.5")
    with pytest.raises(HfgalError, match=r"other settings \(learning_rate\); only evaluation settings"):
        run_finetune_main([*other, "--trained_run", str(trained_run)])
    assert not (tmp_path / "other").exists()


def test_every_recipe_yaml_has_its_launch_command_in_the_recipes_readme():
    readme = (REPO_ROOT / "recipes" / "README.md").read_text()
    commands = [line for line in readme.splitlines() if "`accelerate launch" in line or "`python recipes/" in line]
    for path in sorted((REPO_ROOT / "recipes").rglob("*.yaml")):
        rel = path.relative_to(REPO_ROOT).as_posix()
        assert any(rel in line for line in commands), f"{rel} has no launch command in recipes/README.md"


# --------------------------------------------------------------------------- the run folder and the flags it takes


def test_the_default_run_folder_is_named_after_the_model(tmp_path):
    from hfgal.train.args import parse_args

    def output_dir(*argv: str) -> str:
        return parse_args(list(argv))[2].output_dir

    assert output_dir() == "outputs/convnextv2-tiny"  # the recipe's default model
    assert output_dir("--model", "facebook/dinov2-base") == "outputs/facebook--dinov2-base"
    assert output_dir("--model", "timm:resnet18") == "outputs/timm-resnet18"
    folder = tmp_path / "my-checkpoint"
    folder.mkdir()
    assert output_dir("--model", str(folder)) == "outputs/my-checkpoint"
    assert output_dir("--model", "vit-base", "--output_dir", str(tmp_path / "run")) == str(tmp_path / "run")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: vit-base\noutput_dir: runs/vit\n")
    assert output_dir("--config", str(recipe)) == "runs/vit"
    assert output_dir("--config", "offline") == "outputs/offline-default"  # a recipe shipped with hfgal, by name


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--do_train"], "--do_train is not used by this recipe"),
        (["--do_eval", "false"], "--do_eval is not used by this recipe"),
        (["--do_predict=true"], "--do_predict is not used by this recipe"),
        (["--hub_always_push", "true"], "--hub_always_push is not used by this recipe"),
        (["--hub_strategy", "checkpoint"], "--hub_strategy checkpoint is not supported"),
    ],
)
def test_trainer_flags_the_recipe_would_ignore_are_refused(argv, needle, tmp_path):
    from hfgal.train.args import parse_args

    with pytest.raises(HfgalError, match=needle) as err:
        parse_args([*argv, "--output_dir", str(tmp_path)])
    assert "\n" not in str(err.value)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("do_train: true\n")
    with pytest.raises(HfgalError, match="--do_train is not used"):
        parse_args(["--config", str(recipe)])
    _, _, args = parse_args(["--hub_strategy", "end", "--hub_revision", "v1", "--output_dir", str(tmp_path)])
    assert args.hub_revision == "v1"  # honoured: the push at the end goes to that branch


def test_config_is_listed_in_help(capsys):
    from hfgal.train.args import parse_args

    with pytest.raises(SystemExit) as done:
        parse_args(["--help"], prog="hfgal train")
    assert done.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: hfgal train") and "--config CONFIG" in usage and "shipped with hfgal" in usage


@pytest.mark.slow
def test_a_run_folder_refuses_another_run_in_one_line(trained_run, sample_dir, tmp_path):
    before = (trained_run / "results.json").read_bytes()
    other = finetune_args(trained_run, sample_dir, "vit", max_steps=4)  # the same folder, another model
    for extra in ([], ["--resume_from_checkpoint", "true"]):
        proc = _recipe(*other, *extra)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("finetune.py: error: ")
        assert f"{trained_run} holds a run with other settings (" in proc.stderr
        assert "model_name_or_path" in proc.stderr
        assert "--overwrite_output_dir true" in proc.stderr
    assert (trained_run / "results.json").read_bytes() == before  # nothing of the finished run was touched
    # An unfinished run is resumed only by a request with its own settings.
    unfinished = tmp_path / "unfinished"
    shutil.copytree(trained_run, unfinished)
    for name in ("results.json", "README.md", "model.safetensors"):
        (unfinished / name).unlink()
    proc = _recipe(*finetune_args(unfinished, sample_dir, "convnextv2", max_steps=4, learning_rate=0.01))
    assert proc.returncode == 1 and "holds a run with other settings (learning_rate)" in proc.stderr
    assert not (unfinished / "results.json").exists()


@pytest.mark.slow
def test_the_step_schedule_drives_the_trainers_learning_rate(tmp_path, sample_dir, image_cache):
    """`--lr_step_epochs` (the published GCNN's schedule) is the Trainer's scheduler: x0.1 at each epoch listed."""
    out = tmp_path / "steps"
    # 24 training images in batches of 16: 2 optimizer steps per epoch, milestones after steps 2 and 4.
    args = finetune_args(out, sample_dir, max_steps=6, lr_step_epochs="1,2", lr_step_gamma="0.1", warmup_steps="0")
    assert run_finetune_main(args) == 0
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    rates = [round(entry["learning_rate"], 9) for entry in state["log_history"] if "learning_rate" in entry]
    assert sorted(set(rates), reverse=True) == [0.003, 0.0003, 3e-05] and rates == sorted(rates, reverse=True)
    results = json.loads((out / "results.json").read_text())
    assert results["training"]["lr_scheduler_type"] == "step (x0.1 at epochs 1,2)"
