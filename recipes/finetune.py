#!/usr/bin/env python
"""Fine-tune a vision backbone on Galaxy10 DECaLS and leave every number the study needs.

    accelerate launch recipes/finetune.py --model facebook/dinov2-base
    accelerate launch recipes/finetune.py --config recipes/offline.yaml      # offline, synthetic galaxies

The recipe itself is `hfgal.train.finetune.main` (also `hfgal train ...` and `accelerate launch -m hfgal.train ...`
from an install); this file is its entry point for `accelerate launch` in a checkout. Every `TrainingArguments` flag
works; `--config recipe.yaml` sets defaults that flags override.
"""

from hfgal.train.finetune import cli

if __name__ == "__main__":
    cli(prog="finetune.py")
