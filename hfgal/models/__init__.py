"""Model stage: backbones through `AutoModelForImageClassification` (loading: Hub ids, timm-on-Hub, named configs)
and their adaptation for fine-tuning (adapt: linear probe, layer-wise decay groups, DDP).

Importing this package registers hfgal's own model type, `gz10_equivariant` (the rotation-equivariant GCNNs of
`hfgal.models.equivariant`), with transformers' `AutoConfig`, `AutoModel` and `AutoModelForImageClassification`, so
`from_pretrained`, `from_config` and `pipeline` load such folders without `trust_remote_code`. It imports
transformers and torch; `import hfgal` alone imports neither.
"""

from .equivariant import register as _register_equivariant

_register_equivariant()
