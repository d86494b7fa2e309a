"""Galaxy10 DECaLS facts used across hfgal: class names, descriptions, defaults."""

from __future__ import annotations

# Class index -> name, exactly as in the Galaxy10 DECaLS release (Leung & Bovy).
GZ10_CLASSES: tuple[str, ...] = (
    "Disturbed",
    "Merging",
    "Round Smooth",
    "In-between Round Smooth",
    "Cigar Shaped Smooth",
    "Barred Spiral",
    "Unbarred Tight Spiral",
    "Unbarred Loose Spiral",
    "Edge-on without Bulge",
    "Edge-on with Bulge",
)

# One line of morphology per class, for cards, the demo and `hfgal predict`.
GZ10_DESCRIPTIONS: dict[str, str] = {
    "Disturbed": "Irregular, asymmetric light: tidal features or a distorted disc, but no clear companion.",
    "Merging": "Two or more galaxies in contact or overlapping, often joined by tidal bridges and tails.",
    "Round Smooth": "Featureless elliptical-like galaxy that is nearly circular on the sky.",
    "In-between Round Smooth": "Featureless smooth galaxy, moderately elongated (between round and cigar-shaped).",
    "Cigar Shaped Smooth": "Featureless smooth galaxy, strongly elongated like a cigar.",
    "Barred Spiral": "Disc galaxy with spiral arms that start at the ends of a straight central bar.",
    "Unbarred Tight Spiral": "Disc galaxy without a bar whose spiral arms are tightly wound around the centre.",
    "Unbarred Loose Spiral": "Disc galaxy without a bar whose spiral arms are loosely wound and open.",
    "Edge-on without Bulge": "Disc seen edge-on as a thin streak of light with no central bulge.",
    "Edge-on with Bulge": "Disc seen edge-on with a visible rounded central bulge.",
}

NUM_CLASSES = len(GZ10_CLASSES)
ID2LABEL: dict[int, str] = dict(enumerate(GZ10_CLASSES))
LABEL2ID: dict[str, int] = {name: i for i, name in ID2LABEL.items()}

# Class counts of the full 17,736-image release (class 4 is 1.9 % of the data).
GZ10_CLASS_COUNTS: tuple[int, ...] = (1081, 1853, 2645, 2027, 334, 2043, 1829, 2628, 1423, 1873)

# The published GZ10 copy on the Hub (90/10 train/test, `label` as plain integers): the recipe's default dataset.
DEFAULT_DATASET = "matthieulel/galaxy10_decals"

# hfgal's rotation-equivariant model type (hfgal.models.equivariant) and the prefix of its named configs: known here
# so that tables and reports recognise such runs without importing torch.
EQUIVARIANT_MODEL_TYPE = "gz10_equivariant"
EQUIVARIANT_CONFIG_PREFIX = "gcnn-"

# Pixel scale of the DECaLS cutouts in Galaxy10 (arcsec / pixel).
GZ10_PXSCALE = 0.262
GZ10_IMAGE_SIZE = 256

# Width of a GZ10 cutout on the sky (256 px x 0.262"/px = 67.072"): two galaxies closer than this always appear in
# each other's image (and up to sqrt(2) times farther apart along a diagonal).
GZ10_CUTOUT_ARCSEC = GZ10_IMAGE_SIZE * GZ10_PXSCALE

# Duplicate-aware split: galaxies closer than this on the sky are kept in one split. The cutout width, so that no two
# images that share pixels end up on both sides of the train/test line (10" would only catch near-duplicates: on the
# real coordinates 126 pairs lie within 10" but 236 within the cutout width).
DEFAULT_SEPARATION_ARCSEC = GZ10_CUTOUT_ARCSEC

# Radii (arcsec) at which every split summary counts the close pairs that cross splits: same galaxy (1"),
# near-duplicates (10") and overlapping cutouts (the cutout width).
CROSS_SPLIT_RADII_ARCSEC: tuple[float, ...] = (1.0, 10.0, GZ10_CUTOUT_ARCSEC)

# Galaxy10_DECals.h5 on Zenodo (Leung & Bovy): the original release, with sky coordinates.
GZ10_ZENODO_RECORD = "10845026"
GZ10_H5_FILENAME = "Galaxy10_DECals.h5"

GZ10_CITATION = """@article{Leung2019,
  author  = {Leung, Henry W. and Bovy, Jo},
  title   = {Deep learning of multi-element abundances from high-resolution spectroscopic data},
  journal = {Monthly Notices of the Royal Astronomical Society},
  year    = {2019},
  volume  = {483},
  pages   = {3255--3277},
  note    = {Galaxy10 DECaLS: https://github.com/henrysky/Galaxy10, Zenodo 10.5281/zenodo.10845026}
}
@article{Walmsley2022,
  author  = {Walmsley, Mike and others},
  title   = {Galaxy Zoo DECaLS: Detailed visual morphology measurements from volunteers and deep learning for
             314,000 galaxies},
  journal = {Monthly Notices of the Royal Astronomical Society},
  year    = {2022},
  volume  = {509},
  pages   = {3966--3988}
}
@article{Dey2019,
  author  = {Dey, Arjun and others},
  title   = {Overview of the DESI Legacy Imaging Surveys},
  journal = {The Astronomical Journal},
  year    = {2019},
  volume  = {157},
  pages   = {168}
}"""

HFGAL_CITATION = """@software{hfgal,
  title  = {hfgal: galaxy morphology classification with vision foundation models on the Hugging Face stack},
  year   = {2026},
  url    = {https://github.com/hfgal/hfgal}
}"""
