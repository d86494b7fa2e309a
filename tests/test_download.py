"""`hfgal data download` / `load_gz10("zenodo")`: the real download code against a local Zenodo on 127.0.0.1 serving
a small file with the Galaxy10_DECals.h5 schema: a full download, a cut connection that resumes, a download killed
and resumed by the next call, wrong or missing checksums refused, and offline mode."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from fixtures.zenodo_server import RECORD, serve_zenodo
from hfgal.data.download import INCOMPLETE_SUFFIX, download_zenodo_file, gz10_h5_path
from hfgal.data.sources import load_gz10, resolve_source
from hfgal.data.split import SPLITS
from hfgal.errors import HfgalError

NAME = "Galaxy10_DECals.h5"


@pytest.fixture(scope="module")
def h5_bytes(gz10_h5) -> bytes:
    return gz10_h5.read_bytes()  # 30 real sample galaxies in the Galaxy10_DECals.h5 schema (~6 MB)


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(INCOMPLETE_SUFFIX)) if folder.exists() else []


def test_download_verifies_then_renames_and_loads_as_a_source(h5_bytes, zenodo_cache, monkeypatch, tmp_path):
    with serve_zenodo({NAME: h5_bytes}) as server:
        monkeypatch.setenv("HFGAL_ZENODO_ENDPOINT", server.url)
        dsd = load_gz10("zenodo", cache_dir=str(tmp_path / "datasets"))
        path = gz10_h5_path()
        assert path == zenodo_cache / "downloads" / f"zenodo-{RECORD}" / NAME
        assert path.read_bytes() == h5_bytes and not _leftovers(path.parent)
        assert server.requests[0][1] == f"/api/records/{RECORD}"  # name, size and md5 from the record API
        assert len(server.file_requests()) == 1
        # The file is there: the next load makes no request at all.
        seen = len(server.requests)
        assert resolve_source("zenodo").location == str(path)
        load_gz10("zenodo", cache_dir=str(tmp_path / "datasets"))
        assert len(server.requests) == seen
    assert sum(len(dsd[s]) for s in SPLITS) == 30
    info = dsd.info
    assert info.source == f"zenodo:{RECORD}/{NAME}" and info.scheme == "default" and info.grouped
    assert info.separation_arcsec == pytest.approx(256 * 0.262)


def test_cut_connection_resumes_with_a_range_request(h5_bytes, zenodo_cache, monkeypatch):
    cut = 1 << 20
    with serve_zenodo({NAME: h5_bytes}, cut_after=cut, cuts=1) as server:
        monkeypatch.setenv("HFGAL_ZENODO_ENDPOINT", server.url)
        path = download_zenodo_file(RECORD, NAME, progress=False)
        ranges = [r for _, _, r in server.file_requests()]
    assert ranges == [None, f"bytes={cut}-"]  # the whole file, cut; then only the bytes that were missing
    assert hashlib.md5(path.read_bytes()).hexdigest() == hashlib.md5(h5_bytes).hexdigest()
    assert not _leftovers(path.parent)


def test_download_killed_midway_resumes_in_the_next_call(h5_bytes, zenodo_cache, monkeypatch):
    folder = zenodo_cache / "downloads" / f"zenodo-{RECORD}"
    folder.mkdir(parents=True)
    half = len(h5_bytes) // 2
    (folder / (NAME + INCOMPLETE_SUFFIX)).write_bytes(h5_bytes[:half])  # what a killed download leaves
    with serve_zenodo({NAME: h5_bytes}) as server:
        monkeypatch.setenv("HFGAL_ZENODO_ENDPOINT", server.url)
        path = download_zenodo_file(RECORD, NAME, progress=False)
        assert [r for _, _, r in server.file_requests()] == [f"bytes={half}-"]
    assert path.read_bytes() == h5_bytes and not _leftovers(folder)


def test_server_that_ignores_ranges_is_downloaded_again_whole(h5_bytes, zenodo_cache, monkeypatch):
    with serve_zenodo({NAME: h5_bytes}, cut_after=100_000, ranges=False) as server:
        monkeypatch.setenv("HFGAL_ZENODO_ENDPOINT", server.url)
        path = download_zenodo_file(RECORD, NAME, progress=False)
        assert len(server.file_requests()) == 2
    assert path.read_bytes() == h5_bytes


def test_broken_connection_gives_up_in_one_line_and_keeps_the_part(h5_bytes, zenodo_cache, monkeypatch):
    # Every response is cut before its first byte: no progress, so the download stops after `max_attempts`.
    with serve_zenodo({NAME: h5_bytes}, cut_after=0, cuts=10) as server:
        monkeypatch.setenv("HFGAL_ZENODO_ENDPOINT", server.url)
        with pytest.raises(HfgalError, match="run the same command again to resume") as err:
            download_zenodo_file(RECORD, NAME, progress=False, max_attempts=2)
    assert "\n" not in str(err.value)
    assert not gz10_h5_path().exists()


def test_wrong_checksum_is_refused_and_nothing_is_left(h5_bytes, zenodo_cache, monkeypatch):
    with serve_zenodo({NAME: h5_bytes}, md5={NAME: "0" * 32}) as server:
        monkeypatch.setenv("HFGAL_ZENODO_ENDPOINT", server.url)
        with pytest.raises(HfgalError, match=r"is corrupt \(md5 [0-9a-f]{32} instead of 0{32}\)") as err:
            download_zenodo_file(RECORD, NAME, progress=False)
        assert "\n" not in str(err.value)
        path = gz10_h5_path()
        assert not path.exists() and not _leftovers(path.parent)
        # The published SHA-256 is checked as well as the md5.
        with pytest.raises(HfgalError, match="SHA-256"):
            download_zenodo_file(RECORD, NAME, progress=False, sha256="f" * 64)
        assert not path.exists() and not _leftovers(path.parent)


@pytest.mark.parametrize("checksum", [None, "sha256:" + "a" * 64, "md5:nothex"])
def test_record_without_an_md5_is_refused_before_downloading(h5_bytes, zenodo_cache, monkeypatch, checksum):
    with serve_zenodo({NAME: h5_bytes}, checksum=checksum) as server:
        monkeypatch.setenv("HFGAL_ZENODO_ENDPOINT", server.url)
        with pytest.raises(HfgalError, match="publishes no md5"):
            download_zenodo_file(RECORD, NAME, progress=False)
        assert server.file_requests() == []


def test_missing_record_or_file_and_unreachable_endpoint(h5_bytes, zenodo_cache, monkeypatch):
    with serve_zenodo({"other.h5": b"x"}) as server:
        monkeypatch.setenv("HFGAL_ZENODO_ENDPOINT", server.url)
        with pytest.raises(HfgalError, match=rf"record {RECORD} has no file {NAME} \(files: other.h5\)"):
            download_zenodo_file(RECORD, NAME, progress=False)
        with pytest.raises(HfgalError, match="record 1 not found"):
            download_zenodo_file("1", NAME, progress=False)
        url = server.url
    monkeypatch.setenv("HFGAL_ZENODO_ENDPOINT", url)  # nothing listens there any more
    with pytest.raises(HfgalError, match="could not reach"):
        download_zenodo_file(RECORD, NAME, progress=False)


def test_offline_mode_is_one_line_and_uses_a_downloaded_file(h5_bytes, zenodo_cache, monkeypatch):
    with serve_zenodo({NAME: h5_bytes}) as server:
        monkeypatch.setenv("HFGAL_ZENODO_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        for call in (lambda: download_zenodo_file(RECORD, NAME), lambda: resolve_source("zenodo")):
            with pytest.raises(HfgalError, match="HF_HUB_OFFLINE") as err:
                call()
            assert "\n" not in str(err.value)
        assert server.requests == []  # offline means no request, not a failed one
        monkeypatch.delenv("HF_HUB_OFFLINE")
        path = download_zenodo_file(RECORD, NAME, progress=False)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert download_zenodo_file(RECORD, NAME) == path and resolve_source("zenodo").kind == "zenodo"


@pytest.mark.slow
def test_cli_download_prints_the_path_and_refuses_a_corrupt_file(h5_bytes, zenodo_cache, monkeypatch, tmp_path):
    def hfgal(*args):
        return subprocess.run(
            [sys.executable, "-m", "hfgal.cli", "data", "download", *args], capture_output=True, text=True, timeout=120
        )

    with serve_zenodo({NAME: h5_bytes}, md5={NAME: "1" * 32}) as server:
        monkeypatch.setenv("HFGAL_ZENODO_ENDPOINT", server.url)
        bad = hfgal("--dir", str(tmp_path / "bad"))
    *progress, error = bad.stderr.strip().splitlines()
    assert bad.returncode == 1 and error.startswith("hfgal: error: Galaxy10_DECals.h5") and "is corrupt" in error
    assert any(f"{NAME}: 100%" in line for line in progress)  # the tqdm progress bar, on stderr
    assert not list((tmp_path / "bad").iterdir()) or all(p.suffix == ".lock" for p in (tmp_path / "bad").iterdir())
    with serve_zenodo({NAME: h5_bytes}) as server:
        monkeypatch.setenv("HFGAL_ZENODO_ENDPOINT", server.url)
        good = hfgal()
    assert good.returncode == 0, good.stderr
    path = gz10_h5_path()
    assert str(path) in good.stdout and path.read_bytes() == h5_bytes
