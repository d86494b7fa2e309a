"""Data stage: GZ10 from any source as a split `DatasetDict` (sources, split, build, save, card, synthetic
galaxies), the decode-once uint8 cache and on-device augmentation (cache, augment), and image reading (imageio).

`hfgal.data.sources.load_gz10` is the entry point; modules are imported where used, so importing this package stays
cheap.
"""
