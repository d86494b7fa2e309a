"""Galaxy10_DECals.h5 from Zenodo into hfgal's cache, in one call (`hfgal data download`, or the `zenodo` source of
`load_gz10`).

The file is found in the record through Zenodo's API (its name, size and md5), downloaded with a progress bar into
`<name>.incomplete`, resumed with an HTTP Range request when the connection breaks (within the call, and in the next
call after a kill), checked against the published md5 (and, for Galaxy10_DECals.h5, the SHA-256 its authors
publish), and only then renamed into place: the final file exists only once verified. A file that fails the check
is deleted and refused in one line.

Where: `$HFGAL_CACHE/downloads/zenodo-<record>/` (default `$HF_HOME/hfgal/...`), or any folder passed in. The
endpoint is `$HFGAL_ZENODO_ENDPOINT` (default https://zenodo.org), so a mirror, or a test server on 127.0.0.1, can
stand in for Zenodo. `HF_HUB_OFFLINE=1` (or `HF_DATASETS_OFFLINE=1`) forbids any request: a file already
downloaded is used, anything else is an error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..constants import GZ10_H5_FILENAME, GZ10_ZENODO_RECORD
from ..errors import HfgalError
from ..io import default_cache_root, require_writable_dir

logger = logging.getLogger(__name__)

ZENODO_ENDPOINT_ENV = "HFGAL_ZENODO_ENDPOINT"
DEFAULT_ZENODO_ENDPOINT = "https://zenodo.org"
INCOMPLETE_SUFFIX = ".incomplete"
# The SHA-256 the Galaxy10 authors publish for Galaxy10_DECals.h5 (henrysky/Galaxy10 README, and the loader of their
# astroNN package, `astroNN.datasets.galaxy10`), keyed by the md5 Zenodo lists for that file in record 10845026.
# When a record lists this md5, the SHA-256 is checked too; any other file is checked against its md5 alone.
PUBLISHED_SHA256 = {
    "c6b7b4db82b3a5d63d6a7e3e5249b51c": "19aefc477c41bb7f77ff07599a6b82a038dc042f889a111b0d4d98bb755c1571",
}
CHUNK_BYTES = 1 << 20
MAX_ATTEMPTS = 5  # connections in a row without progress before giving up (the partial file stays for the next call)
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class ZenodoFile:
    """One file of a Zenodo record, as its API describes it."""

    record: str
    key: str  # the file name in the record
    size: int  # bytes
    md5: str  # hex digest Zenodo publishes
    url: str  # where its content is served


def zenodo_endpoint() -> str:
    """`$HFGAL_ZENODO_ENDPOINT` or https://zenodo.org, without a trailing slash."""
    return (os.environ.get(ZENODO_ENDPOINT_ENV) or DEFAULT_ZENODO_ENDPOINT).rstrip("/")


def offline() -> bool:
    """Whether the Hugging Face offline switch (`HF_HUB_OFFLINE`, or `HF_DATASETS_OFFLINE`) is on, read now."""
    return any(os.environ.get(name, "").upper() in _TRUE for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def download_dir(record: str = GZ10_ZENODO_RECORD, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder a record's files are downloaded to: `cache_dir`, else `<hfgal cache>/downloads/zenodo-<record>`."""
    return Path(cache_dir) if cache_dir else default_cache_root() / "downloads" / f"zenodo-{record}"


def gz10_h5_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where Galaxy10_DECals.h5 is (or will be, once downloaded)."""
    return download_dir(GZ10_ZENODO_RECORD, cache_dir) / GZ10_H5_FILENAME


def zenodo_file(record: str, key: str, *, endpoint: str | None = None, timeout: float = 30.0) -> ZenodoFile:
    """Look up one file of a Zenodo record (`GET <endpoint>/api/records/<record>`): its size, md5 and URL.

    Reads both the current record format (`key`, `size`, `checksum: "md5:<hex>"`, `links.self`) and the legacy one
    (`filename`, `filesize`, bare md5, `links.download`).

    Raises:
        HfgalError: offline, unreachable, no such record or file, or no md5 published for it (one line).
    """
    import httpx

    endpoint = (endpoint or zenodo_endpoint()).rstrip("/")
    api = f"{endpoint}/api/records/{record}"
    if offline():
        raise HfgalError(
            f"HF_HUB_OFFLINE is set, so Zenodo record {record} cannot be read; unset it to download {key}"
        )
    try:
        response = httpx.get(api, timeout=timeout, follow_redirects=True, headers={"Accept": "application/json"})
    except httpx.HTTPError as err:
        raise HfgalError(
            f"could not reach {endpoint} for Zenodo record {record} ({_reason(err)}); check the connection or set "
            f"{ZENODO_ENDPOINT_ENV} to a mirror"
        ) from None
    if response.status_code == 404:
        raise HfgalError(f"Zenodo record {record} not found at {endpoint}; check the record id")
    if response.status_code != 200:
        raise HfgalError(f"{api} answered HTTP {response.status_code}; try again later")
    try:
        entries = response.json().get("files") or []
    except (ValueError, AttributeError):
        raise HfgalError(f"{api} did not answer a Zenodo record (no JSON); check {ZENODO_ENDPOINT_ENV}") from None
    if isinstance(entries, dict):  # the /files listing form: {"entries": [...]}
        entries = entries.get("entries") or []
    entry = next((e for e in entries if isinstance(e, dict) and (e.get("key") or e.get("filename")) == key), None)
    if entry is None:
        names = ", ".join(str(e.get("key") or e.get("filename")) for e in entries if isinstance(e, dict)) or "none"
        raise HfgalError(f"Zenodo record {record} has no file {key} (files: {names}); check the record id")
    algorithm, _, digest = str(entry.get("checksum") or "").rpartition(":")
    if (algorithm or "md5") != "md5" or not re.fullmatch(r"[0-9a-fA-F]{32}", digest):
        raise HfgalError(
            f"Zenodo record {record} publishes no md5 for {key} (checksum {entry.get('checksum')!r}); refusing to "
            "download a file that cannot be verified"
        )
    size = entry.get("size", entry.get("filesize"))
    if not isinstance(size, int) or size <= 0:
        raise HfgalError(f"Zenodo record {record} gives no size for {key}; refusing to download it")
    links = entry.get("links") or {}
    url = links.get("content") or links.get("download") or links.get("self")
    return ZenodoFile(record, key, size, digest.lower(), url or f"{api}/files/{key}/content")


def download_zenodo_file(
    record: str,
    key: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    endpoint: str | None = None,
    force: bool = False,
    progress: bool = True,
    sha256: str | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> Path:
    """Download one file of a Zenodo record, verified, into `download_dir(record, cache_dir)`; return its path.

    A file already there is returned without a request (it was verified before it was renamed into place), unless
    `force`. One process downloads at a time (a lock beside the file); a second waits and then finds the file.

    Args:
        record, key: the record id and the file name in it.
        cache_dir: the folder to put it in (default: hfgal's cache, see `download_dir`).
        endpoint: Zenodo's address (default `zenodo_endpoint()`).
        force: download again even if the file is there.
        progress: show a tqdm progress bar (off as well with `HF_HUB_DISABLE_PROGRESS_BARS=1`).
        sha256: also check this SHA-256 (default: the one published for the file's md5, if any).
        max_attempts: connections in a row that bring no new byte before giving up; the partial file stays for the
            next call to resume.

    Raises:
        HfgalError: offline without the file, unreachable, no checksum published, or a corrupt download (one line;
            a corrupt file is deleted, nothing is left at the final path).
    """
    from filelock import FileLock

    folder = download_dir(record, cache_dir)
    final = folder / key
    if final.is_file() and not force:
        return final
    if offline():
        raise HfgalError(
            f"{key} is not in {folder} and HF_HUB_OFFLINE is set; unset it and run `hfgal data download`, or copy "
            "the file there"
        )
    require_writable_dir(folder, "download folder", "set HFGAL_CACHE (or HF_HOME) to a writable folder, or pass --dir")
    with FileLock(str(final) + ".lock"):
        if final.is_file() and not force:  # another process finished it while this one waited
            return final
        info = zenodo_file(record, key, endpoint=endpoint)
        part = final.with_name(final.name + INCOMPLETE_SUFFIX)
        digests = _fetch(info, part, progress=progress, max_attempts=max_attempts)
        _verify(info, part, digests, sha256 or PUBLISHED_SHA256.get(info.md5))
        os.replace(part, final)
    logger.info("downloaded %s (%d bytes, md5 %s) to %s", key, info.size, info.md5, final)
    return final


def download_gz10(cache_dir: str | os.PathLike | None = None, *, force: bool = False, progress: bool = True) -> Path:
    """Galaxy10_DECals.h5 from Zenodo record 10845026 (about 2.7 GB), downloaded once and verified; its path."""
    return download_zenodo_file(GZ10_ZENODO_RECORD, GZ10_H5_FILENAME, cache_dir, force=force, progress=progress)


# --------------------------------------------------------------------------- transfer


class _Digests:
    """md5 and SHA-256 of the bytes written so far (computed while downloading: no second read of 2.7 GB)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.md5, self.sha256, self.bytes = hashlib.md5(usedforsecurity=False), hashlib.sha256(), 0

    def update(self, chunk: bytes) -> None:
        self.md5.update(chunk)
        self.sha256.update(chunk)
        self.bytes += len(chunk)

    @classmethod
    def of_file(cls, path: Path) -> _Digests:
        digests = cls()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                digests.update(chunk)
        return digests


def _fetch(info: ZenodoFile, part: Path, *, progress: bool, max_attempts: int) -> _Digests:
    """Bring `part` to `info.size` bytes, resuming from what it holds; return the digests of its bytes."""
    import httpx
    from huggingface_hub.utils import tqdm

    if part.is_file() and part.stat().st_size > info.size:
        part.unlink()  # longer than the published file: not a prefix of it
    digests = _Digests.of_file(part) if part.is_file() else _Digests()
    free = shutil.disk_usage(part.parent).free
    if free < info.size - digests.bytes:
        logger.warning(
            "%s needs %d more bytes; %s has %d free", info.key, info.size - digests.bytes, part.parent, free
        )
    bar = tqdm(
        total=info.size,
        initial=digests.bytes,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=info.key,
        disable=not progress,
    )
    failures = 0  # attempts in a row that brought no new byte
    with bar, httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, read=60.0)) as client:
        while digests.bytes < info.size:
            before, reason = digests.bytes, "the server ended the response early"
            try:
                _stream(client, info, part, digests, bar)
            except httpx.TransportError as err:
                reason = _reason(err)
            if digests.bytes >= info.size:
                break
            failures = 0 if digests.bytes > before else failures + 1
            if failures >= max_attempts:
                raise HfgalError(
                    f"the download of {info.key} broke off at {digests.bytes} of {info.size} bytes ({reason}); run "
                    "the same command again to resume it"
                )
            logger.warning("connection lost at %d of %d bytes (%s); resuming", digests.bytes, info.size, reason)
            time.sleep(min(0.5 * 2 ** max(failures - 1, 0), 8.0))
    return digests


def _stream(client, info: ZenodoFile, part: Path, digests: _Digests, bar) -> None:
    """One GET of the bytes `part` still lacks (a Range request when it holds some), appended as they arrive."""
    start = digests.bytes
    headers = {"Range": f"bytes={start}-"} if start else {}
    with client.stream("GET", info.url, headers=headers) as response:
        if start and response.status_code == 200:  # the server ignored the Range: take the whole file again
            logger.warning("%s does not resume downloads; starting %s over", info.url, info.key)
            start = 0
            digests.reset()
            bar.reset(total=info.size)
        elif start and response.status_code == 206:
            served = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if served is None or int(served.group(1)) != start:
                raise HfgalError(f"{info.url} resumed {info.key} at the wrong offset; delete {part} and try again")
        elif response.status_code != 200:
            raise HfgalError(f"{info.url} answered HTTP {response.status_code} for {info.key}; try again later")
        with open(part, "r+b" if start else "wb") as f:
            f.seek(start)
            f.truncate()
            for chunk in response.iter_bytes(CHUNK_BYTES):
                if digests.bytes + len(chunk) > info.size:
                    raise HfgalError(f"{info.url} sent more than the {info.size} bytes Zenodo lists for {info.key}")
                f.write(chunk)
                digests.update(chunk)
                bar.update(len(chunk))


def _verify(info: ZenodoFile, part: Path, digests: _Digests, sha256: str | None) -> None:
    """Refuse (and delete) a download whose md5 or SHA-256 is not the published one."""
    problems = []
    if digests.md5.hexdigest() != info.md5:
        problems.append(f"md5 {digests.md5.hexdigest()} instead of {info.md5}")
    if sha256 and digests.sha256.hexdigest() != sha256.lower():
        problems.append(f"SHA-256 {digests.sha256.hexdigest()} instead of {sha256.lower()}")
    if problems:
        part.unlink()
        raise HfgalError(
            f"{info.key} from Zenodo record {info.record} is corrupt ({'; '.join(problems)}); it was deleted, run "
            "the download again"
        )


def _reason(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return text[:160] or type(err).__name__
