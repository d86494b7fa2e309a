"""`python -m hfgal.train ...` / `accelerate launch -m hfgal.train ...`: the fine-tuning recipe from an install."""

from .finetune import cli

cli(prog="hfgal train")
