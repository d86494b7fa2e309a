"""Model stage: backbones through `AutoModelForImageClassification` (loading: Hub ids, timm-on-Hub, named configs)
and their adaptation for fine-tuning (adapt: linear probe, layer-wise decay groups, DDP)."""
