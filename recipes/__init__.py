"""The recipes: YAML configs of fine-tuning runs and studies, and the scripts that launch them.

Shipped inside the wheel as `hfgal.recipes`, so `hfgal train --config offline` and `hfgal study run --config full`
find them from an install (`hfgal.io.shipped_file`).
"""
