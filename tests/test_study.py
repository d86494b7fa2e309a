"""The study: YAML schema, plan and commands, runner (kill, resume, failures), report numbers, push, and
`hfgal study run` from a folder that is not the repository."""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fixtures.runs import make_results
from hfgal.errors import HfgalError
from hfgal.io import output_lock
from hfgal.study.plan import find_study_config, load_study
from hfgal.study.protocols import PUBLISHED_TABLE1, PUBLISHED_TABLE2
from hfgal.study.runner import run_command, run_status, run_study

REPO = Path(__file__).resolve().parents[1]
STUDY_DIR = REPO / "recipes" / "study"
HFGAL = [sys.executable, "-m", "hfgal.cli"]  # the `hfgal` console script
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

TABLE1_IDS = [
    "microsoft/swinv2-base-patch4-window12-192-22k",
    "facebook/dinov2-base",
    "google/vit-base-patch16-224",
    "microsoft/beit-base-patch16-224",
    "facebook/convnextv2-nano-22k-224",
    "facebook/convnextv2-tiny-22k-224",
    "google/efficientnet-b7",
    "microsoft/resnet-101",
    "timm/vgg16.tv_in1k",
]
TABLE2_IDS = [
    "timm/maxvit_rmlp_base_rw_224.sw_in12k_ft_in1k",
    "timm/convnext_nano.in12k_ft_in1k",
    "timm/efficientnet_b0.ra_in1k",
    "mwalmsley/zoobot-encoder-convnext_nano",
    "mwalmsley/zoobot-encoder-efficientnet_b0",
    "mwalmsley/zoobot-encoder-maxvit_base_rw_224",
]


def _env() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("HFGAL_DEBUG", None)
    return env


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _mini_study(**extra) -> dict:
    """A study of 2 Table 1 rows and 1 Table 2 row (Zoobot unavailable), 3 seeds: 12 runs."""
    study = {
        "name": "mini",
        "description": "made-up runs",
        "dataset": "synthetic:60",
        "seeds": [0, 1, 2],
        "defaults": {"max_steps": 2, "use_cpu": True},
        "runs": [
            {
                "name": "convnextv2-tiny",
                "table": 1,
                "model": "facebook/convnextv2-tiny-22k-224",
                "published": "ConvNeXtV2 Tiny",
            },
            {"name": "vit-base", "table": 1, "model": "google/vit-base-patch16-224", "published": "ViT Base"},
            {
                "name": "effnet-b0",
                "table": 2,
                "published": "EfficientNet B0",
                "pretraining": {
                    "none": "timm/efficientnet_b0.ra_in1k",
                    "imagenet": "timm/efficientnet_b0.ra_in1k",
                    "zoobot": None,
                },
            },
        ],
    }
    study.update(extra)
    return study


# --------------------------------------------------------------------------- schema and plan


@pytest.mark.slow
def test_study_yamls_parse_and_dry_run_lists_every_model(capsys):
    studies = {path.stem: load_study(path) for path in sorted(STUDY_DIR.glob("*.yaml"))}
    assert set(studies) >= {"table1", "table2", "full", "beyond", "smoke"}
    full = studies["full"]
    # full = Table 1 + Table 2 with the same runs and flags (included, not copied).
    assert [r.slug for r in full.runs] == [r.slug for r in studies["table1"].runs + studies["table2"].runs]
    assert [r.args for r in full.runs] == [r.args for r in studies["table1"].runs + studies["table2"].runs]
    assert len(full.runs) == (9 + 3 * 3) * 3
    assert {e.published for e in full.entries if e.table == 1} == set(PUBLISHED_TABLE1)
    assert {e.published for e in full.entries if e.table == 2} == set(PUBLISHED_TABLE2)
    none_runs = [r for r in full.runs if r.column == "none"]
    assert none_runs and all(r.init == "scratch" for r in none_runs)
    assert all(r.init == "pretrained" for r in full.runs if r.column in ("imagenet", "zoobot"))

    assert run_study(STUDY_DIR / "full.yaml", "/tmp/hfgal-never-written", dry_run=True) == 0
    out = capsys.readouterr().out
    assert run_study("full", "/tmp/hfgal-never-written", dry_run=True) == 0  # the shipped study, by name
    assert capsys.readouterr().out == out
    assert not Path("/tmp/hfgal-never-written").exists()
    for model_id in TABLE1_IDS + TABLE2_IDS:
        assert f"--model {model_id} " in out, model_id
    assert "54 runs (54 to run)" in out
    # The exact command of a run, as it will be launched.
    expected = run_command(full.runs[0], "/tmp/hfgal-never-written")
    assert shlex.join(expected) in out
    # The installed recipe module under the launcher: no path into a source checkout.
    assert expected[:6] == ["accelerate", "launch", "--num_processes", "1", "-m", "hfgal.train"]
    assert str(REPO) not in out
    assert expected[expected.index("--seed") + 1] == "0"

    smoke = studies["smoke"]
    assert smoke.dataset.startswith("synthetic:") and len(smoke.seeds) == 2
    assert {r.table for r in smoke.runs} == {1, 2}
    zoobot = [c for e in smoke.entries for c in e.columns if c.name == "zoobot"]
    assert zoobot and zoobot[0].model is None and zoobot[0].note


def test_beyond_variants_change_one_setting_at_a_time():
    study = load_study(STUDY_DIR / "beyond.yaml")
    per_model = [r for r in study.runs if r.entry == "convnextv2-tiny" and r.seed == 0]
    by_variant = {r.variant: r.args for r in per_model}
    assert set(by_variant) == {"", "d4_augment-false", "tta-true", "linear_probe-true"}
    base = by_variant[""]
    assert (base["d4_augment"], base["tta"], base["linear_probe"]) == (True, False, False)
    for label, args in by_variant.items():
        changed = {k for k in ("d4_augment", "tta", "linear_probe") if args[k] != base[k]}
        assert changed == ({label.split("-")[0]} if label else set())
    assert by_variant["linear_probe-true"]["learning_rate"] == 1.0e-3
    assert "learning_rate" not in by_variant["tta-true"] and "learning_rate" not in base  # the recipe's 1e-4
    argv = run_command(per_model[2], "/tmp/x", launcher="python")
    assert argv[:3] == ["python", "-m", "hfgal.train"]
    assert argv[argv.index("--tta") + 1] == "true" and argv[argv.index("--d4_augment") + 1] == "true"
    # Test-time averaging changes only the evaluation: that run evaluates its base run's model, no other does.
    sharing = {r.variant: r.shares_training_of for r in per_model}
    assert sharing == {"": None, "d4_augment-false": None, "tta-true": per_model[0].slug, "linear_probe-true": None}
    assert argv[argv.index("--trained_run") + 1] == f"/tmp/x/runs/{per_model[0].slug}"
    assert "--trained_run" not in run_command(per_model[2], "/tmp/x", launcher="python", share=False)


@pytest.mark.parametrize(
    ("where", "patch"),
    [
        ("the study", {"lerning_rate": 1e-4}),
        ("run 'vit-base'", {"runs": [{"name": "vit-base", "table": 1, "model": "x", "seeds": [1]}]}),
        (
            "pretraining.zoobot",
            {"runs": [{"name": "m", "table": 2, "pretraining": {"none": "a", "zoobot": {"model": None, "nope": 1}}}]},
        ),
        ("pretraining", {"runs": [{"name": "m", "table": 2, "pretraining": {"none": "a", "imagenet21k": "b"}}]}),
        ("variants", {"variants": {"tta": [True, False], "mixup": [True]}}),
    ],
)
def test_unknown_key_is_an_error_naming_key_and_file(tmp_path, where, patch):
    path = _write(tmp_path / "bad.yaml", _mini_study(**patch))
    with pytest.raises(HfgalError) as err:
        load_study(path)
    key = (
        next(iter(set(patch) - {"runs", "variants"}), None)
        or {
            "run 'vit-base'": "seeds",
            "pretraining.zoobot": "nope",
            "pretraining": "imagenet21k",
            "variants": "mixup",
        }[where]
    )
    assert f"unknown key '{key}'" in str(err.value) and str(path) in str(err.value) and where in str(err.value)


@pytest.mark.slow
def test_bad_values_are_one_line_errors(tmp_path):
    cases = {
        "runner": {"defaults": {"seed": 3}},
        "'table: 1' or 'table: 2'": {"runs": [{"name": "a", "model": "x"}]},
        "not a row of the seed study": {"runs": [{"name": "a", "table": 1, "model": "x", "published": "VGG19"}]},
        "non-empty list": {"seeds": []},
        "not a variant": {"variants": {"tta": [False, True]}, "variant_args": {"linear_probe-true": {"x": 1}}},
    }
    cases.update(
        {
            r"seeds\[1\]: input should be a valid integer": {"seeds": [0, "1"]},  # strict: no silent conversion
            "init: input should be 'pretrained' or 'scratch'": {"runs": [{"name": "a", "table": 1, "model": "x",
                                                                          "init": "random"}]},
            "run 'effnet-b0' \\(table 2\\) pretraining.none.args: 'output_dir' is set by the study runner": {
                "runs": [{"name": "effnet-b0", "table": 2, "pretraining": {"none": {"model": "timm/efficientnet_b0",
                                                                                     "args": {"output_dir": "x"}}}}]
            },
            "lists a seed twice": {"seeds": [0, 0]},
        }
    )  # fmt: skip
    for message, patch in cases.items():
        path = _write(tmp_path / "bad.yaml", _mini_study(**patch))
        with pytest.raises(HfgalError, match=message) as err:
            load_study(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    # An included file is validated as itself: the error names it, not the including file.
    inner = _write(tmp_path / "inner.yaml", _mini_study(name="inner", runs=[{"name": "a", "table": 1, "modle": 1}]))
    outer = _write(tmp_path / "outer.yaml", {"name": "outer", "dataset": "synthetic:60", "include": [inner.name]})
    with pytest.raises(HfgalError, match=f"{inner}: unknown key 'modle'"):
        load_study(outer)
    # Both command lines print one line, no traceback.
    for command, prog in (([sys.executable, str(REPO / "recipes" / "study.py")], "study.py"), (HFGAL, "hfgal")):
        argv = command + (["study", "run"] if prog == "hfgal" else []) + ["--config", str(outer), "--dry-run"]
        proc = subprocess.run(argv, capture_output=True, text=True, env=_env(), check=False)
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"{prog}: error: ") and "unknown key 'modle'" in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_study_configs_are_found_by_path_or_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # A shipped study by name: the YAML that ships with hfgal (the checkout's recipes/study/, a wheel's
    # hfgal.recipes), whatever the working directory.
    assert find_study_config("smoke").read_text() == (STUDY_DIR / "smoke.yaml").read_text()
    assert load_study("smoke").runs == load_study(STUDY_DIR / "smoke.yaml").runs
    # A path is a path, relative to the working directory.
    _write(tmp_path / "mine.yaml", _mini_study())
    assert find_study_config("mine.yaml") == tmp_path / "mine.yaml"
    with pytest.raises(HfgalError, match="'fulll': no such file and no study of that name .* full, poster, smoke"):
        find_study_config("fulll")
    with pytest.raises(HfgalError, match="nope.yaml not found"):
        load_study("nope.yaml")


def test_relative_paths_in_a_study_yaml_are_relative_to_that_file(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    (configs / "recipes").mkdir(parents=True)
    (configs / "recipes" / "tiny.yaml").write_text("max_steps: 2\n")
    inner_runs = [{"name": "inner-row", "table": 1, "model": "convnextv2-nano", "init": "scratch"}]
    _write(configs / "inner.yaml", _mini_study(name="inner", config="recipes/tiny.yaml", runs=inner_runs))
    _write(
        configs / "outer.yaml",
        {
            "name": "outer",
            "dataset": "synthetic:60",
            "seeds": [0],
            "include": ["inner.yaml", "smoke"],  # a file beside this one, and a shipped study by name
            "runs": [{"name": "own", "table": 1, "model": "convnextv2-nano", "config": "offline"}],
        },
    )
    monkeypatch.chdir(tmp_path / "configs" / "recipes")  # anywhere but the YAML's folder
    study = load_study("../outer.yaml")
    configs_used = {run.entry: run.config for run in study.runs}
    assert configs_used["own"] == "offline"  # a recipe shipped with hfgal, by name: the recipe finds it
    assert configs_used["inner-row"] == str(configs / "recipes" / "tiny.yaml")  # from inner.yaml
    assert {"convnextv2-nano", "vit-base", "convnext-nano"} <= set(configs_used)  # the shipped smoke study's rows
    # The recorded study.yaml stands alone: its paths are absolute.
    assert load_study(tmp_path / "configs" / "outer.yaml").config == study.config


@pytest.mark.slow
def test_hfgal_study_run_plans_a_shipped_study_from_any_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    argv = [*HFGAL, "study", "run", "--config", "smoke", "--launcher", "python", "--dry-run"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(), cwd=elsewhere, check=True)
    lines = proc.stdout.splitlines()
    smoke = load_study(STUDY_DIR / "smoke.yaml")
    assert lines[0] == f"study 'smoke': {len(smoke.runs)} runs ({len(smoke.runs)} to run) in {elsewhere}/studies/smoke"
    commands = [shlex.split(line) for line in lines if line.startswith("    ")]
    assert commands == [run_command(run, elsewhere / "studies" / "smoke", "python") for run in smoke.runs]
    assert all(argv[:3] == ["python", "-m", "hfgal.train"] for argv in commands)
    assert list(elsewhere.iterdir()) == []  # a dry run writes nothing


# --------------------------------------------------------------------------- output folder, commands, lock


@pytest.mark.slow
def test_output_dir_of_another_study_is_refused_without_force(tmp_path):
    out = tmp_path / "study"
    commands = tmp_path / "commands.txt"
    config = _write(tmp_path / "mini.yaml", _mini_study())
    assert run_study(config, out, launcher="python", emit_commands=commands) == 0
    lines = commands.read_text().splitlines()
    study = load_study(config)
    assert len(lines) == len(study.runs) == 12
    # Each line is the exact command of one run, resumable when a SLURM task is requeued, and runs the installed
    # recipe module wherever the array task starts.
    assert shlex.split(lines[0]) == run_command(study.runs[0], out, "python", resume=True)
    assert all(shlex.split(line)[:3] == ["python", "-m", "hfgal.train"] for line in lines)
    assert (out / "study.yaml").is_file()
    assert 'sed -n "${SLURM_ARRAY_TASK_ID}p"' in (REPO / "recipes" / "slurm_study.sh").read_text()

    other = _write(tmp_path / "other.yaml", _mini_study(name="other"))
    with pytest.raises(HfgalError, match="holds results of study 'mini'.*--force"):
        run_study(other, out, launcher="python", emit_commands=commands)
    changed = _write(tmp_path / "mini2.yaml", _mini_study(seeds=[0, 1]))
    with pytest.raises(HfgalError, match=r"study 'mini' with a different config \(seeds\)"):
        run_study(changed, out, launcher="python", emit_commands=commands)
    assert yaml.safe_load((out / "study.yaml").read_text())["name"] == "mini"  # untouched

    # --force takes the folder over; a finished run whose settings changed is stale and will be re-run.
    first = study.runs[0]
    (out / "runs" / first.slug / "results.json").write_text(json.dumps(make_results()))
    assert run_status(first, out) == "done"
    lr = _write(tmp_path / "mini3.yaml", _mini_study(defaults={"max_steps": 3, "use_cpu": True}))
    assert run_study(lr, out, launcher="python", emit_commands=commands, force=True) == 0
    assert run_status(load_study(lr).runs[0], out) == "new"  # the stale folder was cleared
    assert "--max_steps 3" in commands.read_text().splitlines()[0]

    # Two runners on one folder: the second stops at once.
    with output_lock(out, "study runner"):
        proc = subprocess.run(
            [
                sys.executable,
                str(REPO / "recipes" / "study.py"),
                "--config",
                str(lr),
                "--output-dir",
                str(out),
                "--launcher",
                "python",
            ],
            capture_output=True,
            text=True,
            env=_env(),
            check=False,
        )
    assert proc.returncode == 1 and "in use by another study runner" in proc.stderr


@pytest.mark.slow
def test_checkpointed_run_resumes_and_finished_run_is_skipped(tmp_path):
    config = _write(tmp_path / "mini.yaml", _mini_study(seeds=[0]))
    study = load_study(config)
    out = tmp_path / "study"
    run_study(config, out, launcher="python", emit_commands=tmp_path / "c.txt")
    done, ckpt, failed = study.runs[:3]
    (out / "runs" / done.slug / "results.json").write_text(json.dumps(make_results()))
    (out / "runs" / ckpt.slug / "checkpoint-12").mkdir(parents=True)
    (out / "runs" / failed.slug / "error.txt").write_text("exit code 1\n")
    (out / "runs" / study.runs[3].slug / "results.json").write_text('{"complete": fal')  # killed mid-write
    statuses = [run_status(run, out) for run in study.runs]
    assert statuses == ["done", "resume", "failed", "new"]
    lines = subprocess.run(
        [
            sys.executable,
            str(REPO / "recipes" / "study.py"),
            "--config",
            str(config),
            "--output-dir",
            str(out),
            "--dry-run",
            "--launcher",
            "python",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
    ).stdout.splitlines()
    assert lines[0].endswith(f"4 runs (3 to run) in {out}")
    commands = {line.split("] ")[1]: lines[i + 1].strip() for i, line in enumerate(lines) if line.startswith("  [")}
    assert commands[ckpt.slug].endswith("--resume_from_checkpoint true")
    assert not commands[failed.slug].endswith("--resume_from_checkpoint true")


# --------------------------------------------------------------------------- report from run folders


def _finished_run(run_dir: Path, accuracy: float, seed: int, emissions: float, params: int) -> dict:
    """A finished run folder following the run-folder contract, with the given test accuracy."""
    from fixtures.runs import fake_predictions, make_results
    from hfgal.train.metrics import compute_gz10_metrics

    run_dir.mkdir(parents=True, exist_ok=True)
    results = make_results(emissions_kg=emissions)
    results["test"] = compute_gz10_metrics(*fake_predictions(400, accuracy, seed=seed))
    results.update(seed=seed, params_total=params, train_seconds=3600 + 60 * seed, train_images_per_second=80 + seed)
    (run_dir / "results.json").write_text(json.dumps(results))
    (run_dir / "model.safetensors").write_bytes(b"weights")
    (run_dir / "checkpoint-4").mkdir(exist_ok=True)
    (run_dir / "checkpoint-4" / "optimizer.pt").write_bytes(b"state")
    return results


@pytest.fixture
def reported_study(tmp_path):
    """A study folder with made-up finished runs (one failed, one never run) and its written report."""
    from hfgal.study.report import write_report

    config = _write(tmp_path / "mini.yaml", _mini_study(variants={"tta": [False, True]}))
    out = tmp_path / "study"
    run_study(config, out, launcher="python", emit_commands=tmp_path / "c.txt")
    study = load_study(out)
    results = {}
    for i, run in enumerate(study.runs):
        run_dir = out / "runs" / run.slug
        if run.slug == "vit-base__seed2":
            (run_dir / "error.txt").write_text("exit code 1\ncommand: ...\n--- log ---\nCUDA out of memory\n")
            continue
        if run.slug == "effnet-b0__none__tta-true__seed2":
            continue  # never ran
        acc = 0.6 + 0.02 * (i % 7) + 0.01 * run.seed
        results[run.slug] = _finished_run(run_dir, acc, run.seed, 0.01 + 0.001 * i, 5_000_000 + 1000 * (i // 6))
    return out, study, results, write_report(out)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_numbers_equal_per_run_results(reported_study):
    out, study, results, report_md = reported_study
    report = out / "report"
    for name in (
        "table1.md",
        "table1.csv",
        "table2.md",
        "table2.csv",
        "variants.md",
        "variants.csv",
        "report.md",
        "accuracy_vs_params.png",
        "accuracy_vs_co2.png",
        "confusion_matrix_best.png",
    ):
        assert (report / name).is_file(), name
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000

    rows = _rows(report / "table1.csv") + _rows(report / "table2.csv") + _rows(report / "variants.csv")
    checked = 0
    for row in rows:
        runs = [results[slug] for slug in row["runs"].split() if slug in results]
        if not runs:
            assert row["accuracy_mean"] == "" and row["n_seeds"] == "0"
            continue
        acc = [100 * r["test"]["accuracy"] for r in runs]
        assert float(row["accuracy_mean"]) == pytest.approx(statistics.fmean(acc), rel=1e-12)
        assert int(row["n_seeds"]) == len(runs)
        if len(runs) > 1:
            from scipy.stats import t

            std = statistics.stdev(acc)
            half = t.ppf(0.975, len(runs) - 1) * std / math.sqrt(len(runs))
            assert float(row["accuracy_std"]) == pytest.approx(std, rel=1e-12)
            assert float(row["accuracy_ci95_low"]) == pytest.approx(statistics.fmean(acc) - half, rel=1e-12)
        else:  # one seed: the Wilson interval of that run's test accuracy
            assert float(row["accuracy_ci95_low"]) == pytest.approx(100 * runs[0]["test"]["accuracy_ci95"][0])
        for key, get in {
            "macro_f1_mean": lambda r: 100 * r["test"]["macro_f1"],
            "params_m": lambda r: r["params_total"] / 1e6,
            "co2_kg_mean": lambda r: r["carbon"]["emissions_kg"],
            "train_seconds_mean": lambda r: r["train_seconds"],
            "images_per_second_mean": lambda r: r["train_images_per_second"],
        }.items():
            assert float(row[key]) == pytest.approx(statistics.fmean(get(r) for r in runs), rel=1e-12), key
        checked += 1
    # Table 1 rows, available Table 2 cells, then base + tta rows for each of those 4 models.
    assert checked == 2 + 2 + 4 * 2

    t1 = {r["model"]: r for r in _rows(report / "table1.csv")}
    assert t1["vit-base"]["n_seeds"] == "2" and t1["vit-base"]["failed"] == "1"
    mean = float(t1["convnextv2-tiny"]["accuracy_mean"])
    std = float(t1["convnextv2-tiny"]["accuracy_std"])
    assert (
        f"| convnextv2-tiny | `facebook/convnextv2-tiny-22k-224` | {mean:.2f} ± {std:.2f} |"
        in (report / "table1.md").read_text()
    )
    t2 = {r["column"]: r for r in _rows(report / "table2.csv")}
    assert t2["zoobot"]["available"] == "False" and t2["zoobot"]["note"] == "not published by Zoobot"
    best = max(float(t2[c]["accuracy_mean"]) for c in ("none", "imagenet"))
    for c in ("none", "imagenet"):
        assert float(t2[c]["delta_to_best"]) == pytest.approx(float(t2[c]["accuracy_mean"]) - best)
    table2_md = (report / "table2.md").read_text()
    assert "n/a¹" in table2_md and "¹ not published by Zoobot" in table2_md and "**" in table2_md

    text = report_md.read_text()
    assert "## Failed runs" in text and "`vit-base__seed2`: exit code 1" in text and "CUDA out of memory" in text
    assert "## Not run yet" in text and "`effnet-b0__none__tta-true__seed2`" in text
    assert "Zoobot" in text and "test split" in text  # the caveat
    assert "| 87.31 |" in text and "| 86.02 |" in text and "| 74.41 |" in text  # published numbers side by side
    assert "Most confused class pairs" in text
    assert "10 of 12 runs" not in text and f"{len(results)} of {len(study.runs)} runs finished, 1 failed" in text


@pytest.mark.slow
def test_report_kill_leaves_previous_complete_report(reported_study):
    out, study, results, _ = reported_study
    before = {p.name: p.read_bytes() for p in (out / "report").iterdir()}
    # New numbers for one run, so an interrupted rewrite would show as a mix of old and new.
    slug = "convnextv2-tiny__seed0"
    _finished_run(out / "runs" / slug, 0.95, 0, 0.02, 5_000_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hfgal.cli", "study", "report", str(out)],
        env=_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed_mid_write = False
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        staging = [p for p in out.glob(".report.tmp-*") if (p / "table1.csv").is_file()]
        if staging:
            os.killpg(proc.pid, signal.SIGKILL)
            killed_mid_write = True
            break
        time.sleep(0.005)
    proc.wait()
    assert killed_mid_write, "the report finished before it could be killed"
    assert {p.name: p.read_bytes() for p in (out / "report").iterdir()} == before
    # The next report sweeps the dead writer's leftovers and replaces the report whole.
    from hfgal.study.report import write_report

    write_report(out)
    assert not list(out.glob(".report.tmp-*"))
    row = next(r for r in _rows(out / "report" / "table1.csv") if r["model"] == "convnextv2-tiny")
    assert (
        row["accuracy_mean"]
        != next(
            r for r in csv.DictReader(before["table1.csv"].decode().splitlines()) if r["model"] == "convnextv2-tiny"
        )["accuracy_mean"]
    )


def test_study_push_is_one_dataset_commit_of_results_not_weights(reported_study, monkeypatch, capsys):
    from huggingface_hub import HfApi

    out, study, results, _ = reported_study
    calls = []

    def fake_create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def fake_upload_folder(self, *, repo_id, folder_path, repo_type=None, **kwargs):
        folder = Path(folder_path)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        calls.append(("upload_folder", repo_id, repo_type, files, (folder / "README.md").read_text(), kwargs))
        return "https://huggingface.co/datasets/someone/gz10-study/commit/abc"

    monkeypatch.setattr(HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
    # Nothing leaves the machine: the two HfApi calls are captured above, and a stray one would hit a dead port.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    from hfgal.cli import main

    main(["study", "push", str(out), "--repo-id", "someone/gz10-study", "--private"])
    assert capsys.readouterr().out.strip().endswith("/commit/abc")
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]
    assert calls[0][2]["repo_type"] == "dataset" and calls[0][2]["private"] is True
    _, repo_id, repo_type, files, card, kwargs = calls[1]
    assert (repo_id, repo_type) == ("someone/gz10-study", "dataset")
    expected = {
        "README.md",
        "study.yaml",
        "report.md",
        "table1.md",
        "table1.csv",
        "table2.md",
        "table2.csv",
        "variants.md",
        "variants.csv",
        "accuracy_vs_params.png",
        "accuracy_vs_co2.png",
        "confusion_matrix_best.png",
    } | {f"runs/{slug}/results.json" for slug in results}
    assert set(files) == expected
    assert "hfgal study mini" in kwargs["commit_message"]
    meta = yaml.safe_load(card.split("---")[1])
    assert {c["config_name"] for c in meta["configs"]} == {"table1", "table2", "variants"}
    assert "leaderboard" in meta["tags"]
    assert "## Leaderboard" in card and "not published by Zoobot" in card and "hf_fake_token" not in card


# --------------------------------------------------------------------------- the smoke study, for real


def _start_runner(config: str, out: str, cwd: Path, *extra: str) -> subprocess.Popen:
    """`hfgal study run` as a user starts it: from a folder of their own, the recipe run from the install."""
    argv = [*HFGAL, "study", "run", "--config", config, "--output-dir", out, "--launcher", sys.executable, *extra]
    # Its own process group, so a SIGKILL of the group takes the runner and its fine-tuning child at once.
    return subprocess.Popen(
        argv, env=_env(), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


@pytest.mark.slow
def test_smoke_study_end_to_end_survives_sigkill(tmp_path):
    """The smoke study with the real recipe, SIGKILLed after its first run, resumed, plus a run that fails."""
    smoke = yaml.safe_load((STUDY_DIR / "smoke.yaml").read_text())
    configs, work = tmp_path / "configs", tmp_path / "work"
    configs.mkdir()
    work.mkdir()
    broken = _write(
        configs / "broken.yaml",
        {
            "name": "broken",
            "dataset": smoke["dataset"],
            "runs": [{"name": "broken", "table": 1, "model": "timm:no_such_architecture", "init": "scratch"}],
        },
    )
    # The smoke study as shipped (named, not a path), with a model that cannot be built appended to it (a path
    # relative to this YAML, not to the working directory).
    config = _write(
        configs / "study.yaml",
        {
            "name": "smoke",
            "dataset": smoke["dataset"],
            "seeds": smoke["seeds"],
            "include": ["smoke", broken.name],
        },
    )
    study = load_study(config)
    out = work / "out"
    runs = out / "runs"

    proc = _start_runner("../configs/study.yaml", "out", work)
    first = runs / study.runs[0].slug / "results.json"
    deadline = time.monotonic() + 240
    while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.is_file(), proc.communicate()[0].decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first_mtime = first.stat().st_mtime_ns
    first_log = (runs / study.runs[0].slug / "study_run.log").read_bytes()
    assert not (out / "report").exists()

    # Two at a time, one per "GPU": the ids only set CUDA_VISIBLE_DEVICES here (the smoke runs use the CPU).
    proc = _start_runner("../configs/study.yaml", "out", work, "--gpus", "0,1")
    output = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == 1, output[-3000:]  # the broken model failed, the others finished
    assert "0/10 runs finished" not in output and "1/10 runs finished" in output
    assert f"[start] {study.runs[0].slug}" not in output
    assert first.stat().st_mtime_ns == first_mtime
    assert (runs / study.runs[0].slug / "study_run.log").read_bytes() == first_log

    devices = {(runs / r.slug / "study_run.log").read_text().split()[1] for r in study.runs[1:]}
    assert devices == {"CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=1"}
    # Every run ran the installed recipe module, nothing of the repository's layout.
    for run in study.runs:
        command = (runs / run.slug / "study_run.log").read_text().splitlines()[0]
        launched = shlex.join([sys.executable, "-m", "hfgal.train", "--model", run.model])
        assert f"{launched} " in command and "recipes/" not in command
    for run in study.runs:
        if run.entry == "broken":
            error = (runs / run.slug / "error.txt").read_text()
            assert error.startswith("exit code 1") and "unknown timm architecture" in error
            assert not (runs / run.slug / "results.json").exists()
        else:
            assert run_status(run, out) == "done", run.slug

    report = out / "report"
    for name in (
        "table1.md",
        "table1.csv",
        "table2.md",
        "table2.csv",
        "report.md",
        "accuracy_vs_params.png",
        "accuracy_vs_co2.png",
        "confusion_matrix_best.png",
    ):
        assert (report / name).is_file(), name
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC
    results = {
        run.slug: json.loads((runs / run.slug / "results.json").read_text())
        for run in study.runs
        if run.entry != "broken"
    }
    for row in _rows(report / "table1.csv") + _rows(report / "table2.csv"):
        slugs = row["runs"].split()
        if row["model"] == "broken":
            assert row["n_seeds"] == "0" and row["failed"] == "2"
            continue
        if row.get("available") == "False":
            continue
        acc = [100 * results[s]["test"]["accuracy"] for s in slugs]
        assert int(row["n_seeds"]) == len(acc) == 2
        assert float(row["accuracy_mean"]) == pytest.approx(statistics.fmean(acc), rel=1e-12)
        assert float(row["accuracy_std"]) == pytest.approx(statistics.stdev(acc), abs=1e-9)
        assert float(row["params_m"]) == pytest.approx(results[slugs[0]]["params_total"] / 1e6)
        assert float(row["co2_kg_mean"]) == pytest.approx(
            statistics.fmean(results[s]["carbon"]["emissions_kg"] for s in slugs), rel=1e-12
        )
    text = (report / "report.md").read_text()
    assert "`broken__seed0`: exit code 1" in text and "8 of 10 runs finished, 2 failed" in text
    assert "n/a²" in (report / "table2.md").read_text()  # the Zoobot cell flagged (¹ is the ImageNet stand-in)


@pytest.mark.slow
def test_tta_variant_evaluates_its_base_runs_model_in_a_parallel_study(tmp_path, sample_dir, image_cache, monkeypatch):
    """Two jobs at once: the TTA run waits for its base run, then evaluates its model instead of training again."""
    from safetensors.torch import load_file

    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the runs import this checkout's hfgal, whatever is installed

    study = {
        "name": "share",
        "dataset": str(sample_dir),
        "seeds": [0],
        "defaults": {
            "image_size": "32", "max_steps": 4, "per_device_train_batch_size": 16, "eval_strategy": "steps",
            "eval_steps": 2, "save_strategy": "steps", "save_steps": 2, "use_cpu": True,
            "dataloader_num_workers": 0, "report_to": "none", "disable_tqdm": True,
        },
        "variants": {"tta": [False, True]},
        "runs": [
            {
                "name": "convnextv2-nano", "table": 1, "model": "convnextv2-nano", "init": "scratch",
                "model_config_overrides": {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]},
            }
        ],
    }  # fmt: skip
    config = _write(tmp_path / "share.yaml", study)
    out = tmp_path / "study"
    assert run_study(config, out, launcher=sys.executable, jobs=2, report=False) == 0
    base, tta = out / "runs" / "convnextv2-nano__seed0", out / "runs" / "convnextv2-nano__tta-true__seed0"
    trained = json.loads((base / "results.json").read_text())
    shared = json.loads((tta / "results.json").read_text())
    assert shared["trained_by"] == base.name and (trained["tta"], shared["tta"]) == (False, True)
    for key in ("global_step", "best_checkpoint", "train_seconds", "params_total", "model", "init"):
        assert shared[key] == trained[key], key
    assert shared["carbon"]["train"] == trained["carbon"]["train"]
    assert shared["test"]["num_examples"] == trained["test"]["num_examples"] == 3  # the sample's test split
    assert not list(tta.glob("checkpoint-*"))  # nothing was trained there
    weights, base_weights = load_file(tta / "model.safetensors"), load_file(base / "model.safetensors")
    assert all(torch.equal(weights[k], base_weights[k]) for k in base_weights)
    assert f"--trained_run {base}" in (tta / "study_run.log").read_text()
