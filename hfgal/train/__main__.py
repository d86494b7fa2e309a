"""`python -m hfgal.train ...` / `accelerate launch -m hfgal.train ...`: the fine-tuning recipe from an install."""

from ..errors import require_extra, run_cli

run_cli(lambda: require_extra("train", "hfgal train"), prog="hfgal train")

from .finetune import cli  # noqa: E402  (after the check: it imports the train extra)

cli(prog="hfgal train")
