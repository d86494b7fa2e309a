"""Reading galaxy images for inference: any common image file, bytes, arrays, and Legacy Surveys FITS cutouts.

Everything ends as an 8-bit RGB `PIL.Image` of the right size or a one-line `HfgalError`: untrusted files are
checked for size and pixel count before any pixel is decoded, and odd modes (16-bit, float, alpha, palette) are
converted explicitly instead of being clipped or reshaped by accident.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import HfgalError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 64_000_000
MAX_FILE_BYTES = 64 * 1024 * 1024

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".jp2")
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz")

# Only well-known raster formats are parsed: fewer decoders see untrusted bytes, and a stray PDF or CSV is
# reported as "not an image" instead of reaching an exotic plugin.
_PIL_FORMATS = ("PNG", "JPEG", "MPO", "TIFF", "BMP", "DIB", "GIF", "WEBP", "PPM", "TGA", "JPEG2000", "AVIF", "QOI")

# Legacy Surveys colour images (legacypipe `sdss_rgb`, used for the DECaLS cutouts behind Galaxy10): band ->
# (RGB plane, flux scale), softening Q=20 and offset m=0.03, fluxes in nanomaggies.
_LEGACY_BANDS = {"g": (2, 6.0), "r": (1, 3.4), "z": (0, 2.2)}
_LEGACY_Q = 20.0
_LEGACY_M = 0.03
# legacypipe stretches the mean flux I as asinh(Q I) / sqrt(Q); astropy's Lupton stretch is
# asinh(Q' I / s) * 0.1 / asinh(0.1 Q'). They coincide for Q' = 10 sinh(0.1 sqrt(Q)) and s = Q' / Q.
_LUPTON_Q = 10.0 * math.sinh(0.1 * math.sqrt(_LEGACY_Q))
_LUPTON_STRETCH = _LUPTON_Q / _LEGACY_Q


def is_fits_path(path: str | os.PathLike) -> bool:
    """Whether a file name has a FITS extension (`.fits`, `.fit`, `.fts`, optionally gzipped)."""
    return str(path).lower().endswith(FITS_SUFFIXES)


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether a file name has one of the image or FITS extensions `hfgal predict` looks for in folders."""
    return str(path).lower().endswith(IMAGE_SUFFIXES) or is_fits_path(path)


def collect_image_paths(paths: list[str]) -> list[Path]:
    """Expand files and folders (recursively, image and FITS extensions, hidden files skipped) in a stable order.

    Raises:
        HfgalError: if a path does not exist or nothing is found.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and is_image_path(p)
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        elif path.exists():
            found.append(path)
        else:
            raise HfgalError(f"{raw}: no such file or folder; check the path")
    if not found:
        raise HfgalError(f"no images found in {' '.join(paths)}; pass image files or folders of JPEG/PNG/TIFF/FITS")
    return found


def load_image(source: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load one image as 8-bit RGB, refusing anything that is not clearly a picture of a sane size.

    Args:
        source: a path (JPEG, PNG, TIFF, ... or `.fits`/`.fit`/`.fits.gz` with the `astro` extra), encoded bytes,
            a binary file object, a `PIL.Image`, or a numpy array shaped `(H, W)`, `(H, W, 1)`, `(H, W, 3)` or
            `(H, W, 4)` of bool, integer or float values. 16-bit data is scaled to 8 bits by its range (never
            clipped), floats in [0, 1] are scaled by 255 and other floats stretched from their min to max, and an
            alpha channel is composited over a black sky.
        max_pixels: largest accepted width x height, checked before any pixel is decoded.

    Returns:
        A new `PIL.Image` in mode `RGB` with the source's width and height.

    Raises:
        HfgalError: for missing, oversized, truncated or undecodable files, too many pixels, empty arrays and
            array shapes that are not one of the above.
    """
    if isinstance(source, Image.Image):
        return _decoded("image", max_pixels, lambda: _pil_to_rgb(source, "image", max_pixels))
    if isinstance(source, np.ndarray):
        return _array_to_image(source, "array", max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return _load_path(Path(source), max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "image bytes"
    elif hasattr(source, "read"):
        name = str(getattr(source, "name", None) or "file object")
        data = source.read(MAX_FILE_BYTES + 1)
        if not isinstance(data, bytes):
            raise HfgalError(f"{name}: file object returned {type(data).__name__}, not bytes; open it in 'rb' mode")
    else:
        raise HfgalError(
            f"cannot read an image from a {type(source).__name__}; pass a path, bytes, a PIL image or a numpy array"
        )
    if len(data) > MAX_FILE_BYTES:
        raise HfgalError(f"{name}: larger than {MAX_FILE_BYTES // 2**20} MiB; pass a smaller image or cutout")
    return _decode_bytes(data, name, max_pixels)


def _load_path(path: Path, max_pixels: int) -> Image.Image:
    if not path.exists():
        raise HfgalError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise HfgalError(f"{path}: is a folder, not an image; pass the image files (hfgal predict accepts folders)")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise HfgalError(
            f"{path}: file is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit; "
            "pass a smaller image or cutout"
        )
    if is_fits_path(path):
        return Image.fromarray(fits_to_rgb(path, max_pixels=max_pixels))
    try:
        data = path.read_bytes()
    except OSError as err:
        raise HfgalError(f"{path}: cannot read the file ({err.strerror or err}); check its permissions") from err
    return _decode_bytes(data, str(path), max_pixels)


def _decode_bytes(data: bytes, name: str, max_pixels: int) -> Image.Image:
    if not data:
        raise HfgalError(f"{name}: empty file; it holds no image")
    if data[:9] == b"SIMPLE  =":  # a FITS file without a FITS extension
        return Image.fromarray(_fits_to_rgb(io.BytesIO(data), name, max_pixels))

    def decode() -> Image.Image:
        Image.init()
        formats = [f for f in _PIL_FORMATS if f in Image.OPEN]  # plugins missing from this Pillow build are skipped
        with Image.open(io.BytesIO(data), formats=formats) as im:
            return _pil_to_rgb(im, name, max_pixels)

    return _decoded(name, max_pixels, decode)


def _decoded(name: str, max_pixels: int, decode) -> Image.Image:
    """Run a PIL decode, turning every way a malformed file can fail into one `HfgalError`."""
    try:
        with warnings.catch_warnings():
            # PIL narrates recoverable damage (corrupt EXIF, short TIFF reads) as UserWarnings: the outcome, an
            # image or an HfgalError, is what the caller acts on.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return decode()
    except HfgalError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise HfgalError(
            f"{name}: too many pixels ({err}); pass a smaller image or raise max_pixels (limit {max_pixels:,})"
        ) from err
    except UnidentifiedImageError as err:
        raise HfgalError(f"{name}: not a readable image file ({', '.join(_PIL_FORMATS[:6])}, ... or FITS)") from err
    except MemoryError as err:
        raise HfgalError(f"{name}: not enough memory to decode the image; pass a smaller image") from err
    except Exception as err:  # noqa: BLE001 - PIL decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HfgalError(f"{name}: corrupt or truncated image ({detail}); re-download or re-export it") from err


def _check_pixels(name: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise HfgalError(
            f"{name}: {width}x{height} is {width * height:,} pixels, over the {max_pixels:,} limit; "
            "pass a smaller image or raise max_pixels"
        )
    if width < 1 or height < 1:
        raise HfgalError(f"{name}: image is {width}x{height} pixels; it holds no pixels")


def _pil_to_rgb(im: Image.Image, name: str, max_pixels: int) -> Image.Image:
    # The size comes from the header; checking it before load() keeps bombs from ever being decoded.
    _check_pixels(name, im.width, im.height, max_pixels)
    im.load()
    mode = im.mode
    if mode in ("I", "F") or mode.startswith("I;"):
        # PIL's own convert("L") clips 16/32-bit values at 255 (a white image): scale by the range instead.
        gray = _channels_to_uint8(np.asarray(im))
        return Image.fromarray(gray).convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(im.convert("RGBA"))
        return Image.fromarray(_composite_over_black(rgba[..., :3], rgba[..., 3]))
    return im.convert("RGB")


def _composite_over_black(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    # Galaxy cutouts sit on a dark sky, so transparent pixels become black sky rather than white paper.
    out = rgb.astype(np.uint16) * alpha[..., None].astype(np.uint16)
    return ((out + 127) // 255).astype(np.uint8)


def _channels_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map one block of channels (any numeric dtype) to uint8 by its range, never clipping bright pixels."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.dtype == np.uint16 or values.dtype == np.dtype(">u2"):
        # 16-bit files use the full 0..65535 scale (PNG and TIFF convention): 257 = 65535 / 255.
        return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(values.dtype, np.integer):
        vmin, vmax = int(values.min()), int(values.max())
        if vmin >= 0 and vmax <= 255:
            return values.astype(np.uint8)
        if vmin >= 0 and vmax <= 65535:
            return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
        return _stretch(values.astype(np.float64), float(vmin), float(vmax))
    if np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float32, copy=False)
        finite = np.isfinite(values)
        if not finite.any():
            return np.zeros(values.shape, np.uint8)
        vmin, vmax = float(values[finite].min()), float(values[finite].max())
        if vmin >= 0.0 and vmax <= 1.0:
            vmin, vmax = 0.0, 1.0
        out = _stretch(np.where(finite, values, vmin), vmin, vmax)
        out[np.isposinf(values)] = 255
        return out
    raise HfgalError(f"cannot read an image from an array of dtype {values.dtype}; use integers, floats or bools")


def _stretch(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    if vmax <= vmin:
        return np.zeros(values.shape, np.uint8)
    scaled = (values - vmin) * (255.0 / (vmax - vmin))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _array_to_image(arr: np.ndarray, name: str, max_pixels: int) -> Image.Image:
    if arr.size == 0:
        raise HfgalError(f"{name} of shape {arr.shape} is empty; pass an image with pixels")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        hint = " (channels first? use arr.transpose(1, 2, 0))" if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) else ""
        raise HfgalError(
            f"{name} of shape {arr.shape} is not an image; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4){hint}"
        )
    if arr.dtype.kind not in "biuf":
        raise HfgalError(f"{name} has dtype {arr.dtype}; pass integer, float or bool pixel values")
    _check_pixels(name, arr.shape[1], arr.shape[0], max_pixels)
    if arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(_channels_to_uint8(arr))).convert("RGB")
    rgb = _channels_to_uint8(arr[..., :3])
    if arr.shape[2] == 4:
        rgb = _composite_over_black(rgb, _channels_to_uint8(arr[..., 3]))
    return Image.fromarray(np.ascontiguousarray(rgb))


# --------------------------------------------------------------------------- FITS


def fits_to_rgb(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Render a g, r, z FITS cutout as the RGB picture the Legacy Surveys viewer (and so Galaxy10) shows.

    Accepts a `(3, H, W)` cube (band order from `BAND0..2`/`BANDS` header keys, else g, r, z as in Legacy Surveys
    `fits-cutout` files) or three single-band image HDUs (band from `BAND`/`FILTER`, else g, r, z in order).
    Fluxes are taken as nanomaggies and stretched with `astropy.visualization.make_lupton_rgb` using the Legacy
    Surveys band scales (z -> red, r -> green, g -> blue) and asinh softening. A single-band image is accepted with
    a warning and rendered grey. Rows are flipped so north is up, as in the survey JPEGs.

    Args:
        path: a `.fits`, `.fit`, `.fts` file, optionally gzipped.
        max_pixels: largest accepted width x height, checked from the header before the data is read.

    Returns:
        A `(H, W, 3)` uint8 array.

    Raises:
        HfgalError: if astropy is missing or the file is not a readable g, r, z (or single-band) image.
    """
    path = Path(path)
    if not path.is_file():
        raise HfgalError(f"{path}: no such file; check the path")
    return _fits_to_rgb(path, str(path), max_pixels)


def fits_sky_centre(path: str | os.PathLike) -> tuple[float, float] | None:
    """Right ascension and declination (ICRS, degrees) of the centre of a FITS cutout, from its WCS header.

    The centre is the middle of the image plane, pixel `((W - 1) / 2, (H - 1) / 2)` counted from 0: the position a
    survey cutout was cut around. The first image HDU with data and a celestial WCS is used (a `(3, H, W)` cube's
    band axis is dropped); another frame (FK5, galactic, ...) is transformed to ICRS.

    Returns:
        `(ra, dec)` in degrees, or None when the file has no usable celestial WCS.

    Raises:
        HfgalError: astropy is missing, or the file is not readable FITS.
    """
    fits = _import_fits()
    from astropy.utils.exceptions import AstropyUserWarning
    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with warnings.catch_warnings():
            # Survey headers carry deprecated-but-harmless keywords (RADECSYS, old DATE forms) that astropy fixes.
            for category in (FITSFixedWarning, fits.verify.VerifyWarning, AstropyUserWarning):
                warnings.simplefilter("ignore", category)
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                for hdu in hdul:
                    header = hdu.header
                    if not getattr(hdu, "is_image", False) or int(header.get("NAXIS", 0)) < 2:
                        continue
                    try:
                        wcs = WCS(header).celestial
                    except Exception:  # noqa: BLE001 - a malformed WCS is "no coordinates", not an unreadable image
                        logger.warning("%s: HDU %s has an unreadable WCS; its RA/Dec are left empty", path, hdu.name)
                        continue
                    if wcs.naxis != 2 or not wcs.has_celestial:
                        continue
                    centre = wcs.pixel_to_world((int(header["NAXIS1"]) - 1) / 2, (int(header["NAXIS2"]) - 1) / 2)
                    return float(centre.icrs.ra.deg), float(centre.icrs.dec.deg)
    except HfgalError:
        raise
    except Exception as err:  # noqa: BLE001 - astropy raises OSError, ValueError, TypeError, VerifyError, ...
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HfgalError(f"{path}: not a readable FITS file ({detail}); check the file") from err
    return None


def _import_fits():
    try:
        from astropy.io import fits
    except ImportError as err:
        raise HfgalError("reading FITS needs the astro extra: pip install 'hfgal[astro]'") from err
    return fits


def _fits_to_rgb(source: Any, name: str, max_pixels: int) -> np.ndarray:
    fits = _import_fits()
    from astropy.utils.exceptions import AstropyUserWarning

    try:
        with warnings.catch_warnings():
            # astropy narrates damaged headers as warnings; a file it cannot read still ends in HfgalError below.
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            warnings.simplefilter("ignore", AstropyUserWarning)
            with fits.open(source, memmap=False, lazy_load_hdus=True) as hdul:
                planes = _fits_planes(hdul, name, max_pixels)
                bands = _select_grz(planes, name)
    except HfgalError:
        raise
    except Exception as err:  # noqa: BLE001 - astropy raises OSError, ValueError, TypeError, VerifyError, ...
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HfgalError(f"{name}: not a readable FITS image ({detail}); check the file") from err
    return _legacy_rgb(bands)


def _fits_planes(hdul, name: str, max_pixels: int) -> list[tuple[str | None, np.ndarray]]:
    """Every 2-D plane of every image HDU, with its band letter when the header names one."""
    planes: list[tuple[str | None, np.ndarray]] = []
    for hdu in hdul:
        header = hdu.header
        if not getattr(hdu, "is_image", False) or not header.get("NAXIS"):
            continue
        dims = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, int(header["NAXIS"]) + 1)]  # FITS: x first
        if len(dims) < 2 or min(dims) < 1:
            continue
        _check_pixels(name, dims[0], dims[1], max_pixels)
        extra = [d for d in dims[2:] if d != 1]
        if len(extra) > 1 or (extra and extra[0] > 16):
            raise HfgalError(f"{name}: image HDU of shape {tuple(reversed(dims))} is not a g, r, z cutout")
        data = np.asarray(hdu.data, dtype=np.float32).reshape(-1, dims[1], dims[0])  # (bands, H, W)
        if len(data) == 1:
            planes.append((_band_of(header.get("BAND") or header.get("FILTER")), data[0]))
            continue
        letters = str(header.get("BANDS", "")).strip().lower()
        for i, plane in enumerate(data):
            band = header.get(f"BAND{i}") or (letters[i] if len(letters) == len(data) else None)
            planes.append((_band_of(band), plane))
    if not planes:
        raise HfgalError(f"{name}: FITS file has no image data; pass a g, r, z cutout")
    return planes


def _band_of(value: Any) -> str | None:
    if value is None:
        return None
    for token in str(value).lower().replace("_", " ").replace("-", " ").split():
        if token in _LEGACY_BANDS:
            return token
    return None


def _select_grz(planes: list[tuple[str | None, np.ndarray]], name: str) -> dict[str, np.ndarray]:
    named = {band: data for band, data in planes if band is not None}
    if all(b in named for b in _LEGACY_BANDS):
        bands = {b: named[b] for b in _LEGACY_BANDS}
    elif len(planes) == 3 and not named:
        bands = dict(zip(_LEGACY_BANDS, (data for _, data in planes), strict=True))  # Legacy Surveys order g, r, z
    elif len(planes) == 1:
        band, data = planes[0]
        warnings.warn(
            f"{name}: single-band FITS image ({band or 'unknown band'}); classifying it as a grey image",
            stacklevel=4,
        )
        logger.warning("%s: single-band FITS image, rendered grey", name)
        return {"grey": data}
    else:
        found = ", ".join(b or "?" for b, _ in planes)
        raise HfgalError(f"{name}: found bands [{found}] in the FITS file; expected g, r and z (or one band)")
    shapes = {data.shape for data in bands.values()}
    if len(shapes) != 1:
        raise HfgalError(f"{name}: g, r, z images have different shapes {sorted(shapes)}; pass aligned cutouts")
    return bands


def _legacy_rgb(bands: dict[str, np.ndarray]) -> np.ndarray:
    from astropy.visualization import make_lupton_rgb

    if "grey" in bands:
        grey = np.nan_to_num(bands["grey"]) * _LEGACY_BANDS["r"][1]
        channels = [grey, grey, grey]
    else:
        channels = [None, None, None]
        for band, (plane, scale) in _LEGACY_BANDS.items():
            channels[plane] = np.nan_to_num(bands[band]) * scale
    rgb = make_lupton_rgb(*channels, minimum=-_LEGACY_M, stretch=_LUPTON_STRETCH, Q=_LUPTON_Q)
    # FITS rows run south to north; images are stored top row first.
    return np.ascontiguousarray(rgb[::-1])
