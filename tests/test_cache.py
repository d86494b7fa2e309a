"""The uint8 cache holds exactly the pixels the run folder's image processor makes of every row, whichever way its
workers read the split: as a stream of the split's own Arrow files, or through `datasets` for a view (`select`)."""

from __future__ import annotations

import numpy as np
import pytest

from hfgal.data.cache import uint8_cache
from hfgal.data.geometry import Geometry, processor_pixels


@pytest.fixture(scope="module")
def saved_split(sample_dir, tmp_path_factory):
    from datasets import load_from_disk

    from hfgal.data.save import build_dataset

    out = tmp_path_factory.mktemp("saved") / "gz10"
    build_dataset(out, source=str(sample_dir))
    return load_from_disk(str(out))["train"]


@pytest.mark.parametrize("view", ["whole", "selected"])
@pytest.mark.parametrize("num_proc", [1, 2])
def test_cache_holds_every_rows_resized_pixels(saved_split, tmp_path, view, num_proc):
    ds = saved_split if view == "whole" else saved_split.select([5, 1, 17, 2, 9, 23, 4])
    geometry = Geometry((48, 40))
    cache, seconds = uint8_cache(ds, geometry, tmp_path, num_proc=num_proc)
    assert seconds > 0 and cache.shape == (len(ds), 3, 48, 40) and cache.dtype == np.uint8
    expected = processor_pixels(geometry.image_processor(), [row["image"] for row in ds])
    assert np.array_equal(np.asarray(cache), expected)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed into place
    again, seconds = uint8_cache(ds, geometry, tmp_path)
    assert seconds == 0.0 and np.array_equal(np.asarray(again), expected)
