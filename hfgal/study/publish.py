"""A study published as a Hub dataset repo in one commit: the leaderboard card, tables, plots, report and every
run's results.json (never weights, checkpoints or logs)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..constants import GZ10_CITATION, HFGAL_CITATION
from ..hub.access import is_hub_id, validate_repo_id
from ..hub.push import upload_one_commit
from ..io import card_template
from ..runs import CARD_FILE, RESULTS_FILE, read_results
from .plan import STUDY_FILE, load_study
from .report import PLOTS, write_report_files
from .tables import ZOOBOT_CAVEAT


def stage_study(study_dir: str | os.PathLike, staging: str | os.PathLike, repo_id: str) -> list[str]:
    """Fill `staging` with what a study dataset repo holds: card, study.yaml, report files, every results.json.

    Weights, checkpoints and logs are never staged. Returns the staged paths (relative, sorted).
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    out_dir, staging = Path(study_dir).absolute(), Path(staging)
    report_md, built = write_report_files(out_dir)
    study, groups = built["study"], built["groups"]
    for path in report_md.parent.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, staging / path.name)
    shutil.copy2(out_dir / STUDY_FILE, staging / STUDY_FILE)
    for group in groups:
        for run in group.runs:
            if read_results(run.run_dir(out_dir)) is not None:
                run.run_dir(staging).mkdir(parents=True)
                shutil.copy2(run.run_dir(out_dir) / RESULTS_FILE, run.run_dir(staging) / RESULTS_FILE)
    configs = [{"config_name": key, "data_files": f"{key}.csv"} for key in ("table1", "table2", "variants")]
    configs = [c for c in configs if (staging / c["data_files"]).is_file()]
    dataset = study.dataset
    card_data = DatasetCardData(
        pretty_name=f"hfgal study {study.name}: GZ10 backbone leaderboard",
        license="apache-2.0",
        tags=["astronomy", "galaxy-morphology", "galaxy10", "benchmark", "leaderboard", "hfgal"],
        task_categories=["image-classification"],
        size_categories=["n<1K"],
        source_datasets=[dataset] if is_hub_id(dataset) else None,
        configs=configs or None,
    )
    card = DatasetCard.from_template(
        card_data,
        template_path=str(card_template("study_card.md")),
        study=study,
        repo_id=repo_id,
        leaderboard=built["leaderboard"],
        first_config=configs[0]["config_name"] if configs else None,
        hfgal_citation=f"{HFGAL_CITATION}\n{GZ10_CITATION}",
        finished=sum(len(g.results) for g in groups),
        failed=sum(len(g.failed) for g in groups),
        table1=built["table1"][0] if built["table1"] else None,
        table2=built["table2"][0] if built["table2"] else None,
        variants=built["variants"][0] if built["variants"] else None,
        published=built["published"],
        plots=[name for name in PLOTS if (staging / name).is_file()],
        zoobot_caveat=ZOOBOT_CAVEAT if built["table2"] else None,
    )
    card.save(staging / CARD_FILE)
    return sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())


def push_study(study_dir: str | os.PathLike, repo_id: str, *, private: bool | None = None) -> str:
    """Publish a study as a Hub dataset repo in one commit: leaderboard card, tables, plots, report, results.json.

    Args:
        study_dir: folder written by `hfgal study run` (or recipes/study.py).
        repo_id: `namespace/name` of the dataset repo (created if missing).
        private: visibility of a newly created repo.

    Returns:
        The commit URL.
    """
    validate_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="hfgal-study-push-") as staging:
        stage_study(study_dir, staging, repo_id)
        study_name = load_study(Path(study_dir).absolute() / STUDY_FILE).name
        return upload_one_commit(
            staging,
            repo_id,
            repo_type="dataset",
            private=private,
            commit_message=f"Upload hfgal study {study_name}: tables, plots, report, results",
        )
