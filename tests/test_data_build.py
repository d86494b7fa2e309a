"""`hfgal data build` at speed: each split written once by parallel processes, saved by renaming its Arrow shards,
PNGs written by Pillow at zlib level 1 with the run-length strategy; the folder reads back as a `save_to_disk`
folder."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from fixtures.gz10 import sample_rows
from hfgal.data.build import encode_png
from hfgal.data.save import save_gz10
from hfgal.data.sources import gz10_from_h5

SPLITS = ("train", "validation", "test")


def test_split_shards_are_moved_into_a_save_to_disk_folder(gz10_h5, gz10_h5_arrays, tmp_path):
    from datasets import load_from_disk

    staging = tmp_path / "staging"
    # Chunks of 4 rows over 2 processes: the train split is written as 2 Arrow shards, in parallel.
    built = gz10_from_h5(gz10_h5, cache_dir=str(staging), chunk_size=4, num_proc=2)
    assert len(built["train"].cache_files) == 2
    expected = {s: built[s].remove_columns("image").to_pandas() for s in SPLITS}
    reference = tmp_path / "reference"  # the same split saved by datasets itself
    built["validation"].save_to_disk(str(reference))
    out = save_gz10(built, tmp_path / "gz10", move_from=staging)

    assert not list(staging.rglob("*.arrow"))  # moved, not copied
    assert sorted(p.name for p in (out / "train").glob("*.arrow")) == [
        "data-00000-of-00002.arrow",
        "data-00001-of-00002.arrow",
    ]
    loaded = load_from_disk(str(out))
    images = gz10_h5_arrays["images"]
    for s in SPLITS:
        assert loaded[s].features == built[s].features
        assert loaded[s].remove_columns("image").to_pandas().equals(expected[s])
        for row in loaded[s]:  # every pixel is the h5's (PNG is lossless)
            assert np.array_equal(np.asarray(row["image"]), images[row["gz10_index"]])
    # What datasets' own save_to_disk writes for that split: the same state and info, read back the same way.
    ours, theirs = (json.loads((d / "state.json").read_text()) for d in (out / "validation", reference))
    assert ours == theirs
    info = [json.loads((d / "dataset_info.json").read_text()) for d in (out / "validation", reference)]
    assert info[0] == info[1]
    assert loaded["validation"]._fingerprint == load_from_disk(str(reference))._fingerprint
    assert json.loads((out / "split_info.json").read_text())["counts"]


def test_split_order_and_content_do_not_depend_on_the_process_count(gz10_h5, tmp_path):
    one = gz10_from_h5(gz10_h5, cache_dir=str(tmp_path / "one"), chunk_size=4, num_proc=1)
    two = gz10_from_h5(gz10_h5, cache_dir=str(tmp_path / "two"), chunk_size=4, num_proc=2)
    for s in SPLITS:
        assert one[s]["gz10_index"] == two[s]["gz10_index"] == sorted(one[s]["gz10_index"])
        assert [r["bytes"] for r in one[s].cast_column("image", _undecoded())["image"]] == [
            r["bytes"] for r in two[s].cast_column("image", _undecoded())["image"]
        ]


def test_png_is_lossless_and_about_as_small_as_pillows_default(sample_dir):
    sizes, default_sizes = [], []
    for row in sample_rows():
        pixels = np.asarray(Image.open(sample_dir / row["file_name"]).convert("RGB"))
        encoded = encode_png(pixels)
        assert encoded["bytes"].startswith(b"\x89PNG") and encoded["path"] is None
        Image.open(io.BytesIO(encoded["bytes"])).verify()  # chunk layout and CRCs
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(encoded["bytes"]))), pixels)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        sizes.append(len(encoded["bytes"]))
        default_sizes.append(buffer.tell())
    assert sum(sizes) < 1.05 * sum(default_sizes)  # real cutouts: +1.3 % over Pillow's default (level 6), measured
    # The run-length strategy reaches zlib: it writes other bytes than Pillow's level 1 with its own strategy.
    level_1 = io.BytesIO()
    Image.fromarray(pixels).save(level_1, format="PNG", compress_level=1)
    assert encoded["bytes"] != level_1.getvalue()
    gray = np.arange(35 * 17, dtype=np.uint8).reshape(35, 17)  # any layout Pillow writes
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(gray)["bytes"]))), gray)


def _undecoded():
    from datasets import Image as ImageFeature

    return ImageFeature(decode=False)
