"""Files written so that nothing is ever half-written: atomic files and folders, output-folder locks, the check
that a cache folder is writable, and the card templates shipped with the package; and the count of cores this
process may use, which every stage sizes its workers by."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import HfgalError

# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; it replaces `path` atomically when the block succeeds.

    A crash or kill inside the block leaves `path` as it was (or absent), never half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and an atomic rename."""
    with atomic_file(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically (NaN/inf become null, so the file stays valid JSON)."""
    return atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, sort_keys=False) + "\n")


def _json_safe(obj: Any) -> Any:
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return _json_safe(obj.tolist())
    return obj


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a temporary sibling and rename it to `out` only when the block succeeds.

    A crash or SIGKILL inside the block leaves at most a hidden `.out.tmp-*` sibling (swept on the next call),
    never a half-written `out`.

    Raises:
        HfgalError: if `out` exists and `overwrite` is False.
    """
    out = Path(out).absolute()
    if out.exists() and not overwrite:
        raise HfgalError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        if not _owner_alive(stale):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            trash = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _owner_alive(tmp: Path) -> bool:
    """Whether the process that made a staging folder `.NAME.tmp-<pid>-...` is still running."""
    try:
        pid = int(tmp.name.split(".tmp-")[1].split("-")[0])
    except (IndexError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True


def require_writable_dir(path: str | os.PathLike, what: str, hint: str) -> Path:
    """Create `path` if needed and check that files can be made in it.

    Caches default to folders under the home directory; on a read-only home (containers, clusters) the user must
    learn which variable moves them, not read a PermissionError about `~/.cache`.

    Args:
        path: the folder.
        what: what goes there, for the message (e.g. "decoded image cache").
        hint: what to do instead, naming the environment variable or flag that moves it.

    Returns:
        `path` as a `Path`.

    Raises:
        HfgalError: the folder cannot be created or written.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".hfgal-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise HfgalError(f"cannot write the {what} in {path} ({err.strerror or err}); {hint}") from None
    return path


def default_cache_root() -> Path:
    """hfgal's cache folder (decoded images, downloads): `$HFGAL_CACHE`, else `$HF_HOME/hfgal`, else
    `~/.cache/huggingface/hfgal`."""
    if os.environ.get("HFGAL_CACHE"):
        return Path(os.environ["HFGAL_CACHE"])
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hfgal"


# --------------------------------------------------------------------------- locks


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, what: str = "hfgal") -> Iterator[Path]:
    """Hold the lock of an output folder (`.<name>.lock` beside it) for the duration of the block.

    A second process asking for the same folder fails at once with a one-line message. The lock is an OS file lock
    (`filelock`, as the Hugging Face caches use): the kernel releases it when its holder exits, so a killed run
    never leaves a lock that blocks the next one. The lock file itself stays, empty, like the Hub cache's.

    Raises:
        HfgalError: another process holds the folder.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder).absolute()
    lock = folder.with_name(f".{folder.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        held = FileLock(str(lock), timeout=0).acquire()
    except Timeout:
        raise HfgalError(f"{folder} is in use by another {what} (lock {lock}); wait for it to finish") from None
    with held:
        yield lock


# --------------------------------------------------------------------------- templates


def shipped_file(folder: str, name: str) -> Path | None:
    """A file of a top-level folder hfgal ships inside its wheel (`hub_cards/`, `recipes/`, installed as
    `hfgal.hub_cards`, `hfgal.recipes`), from an installed wheel or a source checkout; None when there is none.

    Args:
        folder: `hub_cards` or `recipes`.
        name: the file's path inside that folder, e.g. `model_card.md` or `study/full.yaml`.
    """
    from importlib import resources

    try:
        path = Path(str(resources.files(f"hfgal.{folder}").joinpath(name)))
        if path.is_file():
            return path
    except ModuleNotFoundError:  # a source checkout on sys.path: the folder sits beside the package
        pass
    path = Path(__file__).resolve().parent.parent / folder / name
    return path if path.is_file() else None


def card_template(name: str) -> Path:
    """Path of a card template shipped in `hub_cards/` (inside an installed wheel or a source checkout)."""
    path = shipped_file("hub_cards", name)
    if path is None:
        raise HfgalError(f"card template {name} not found; reinstall hfgal")
    return path


# --------------------------------------------------------------------------- cores


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask: a container's or scheduler's limit, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1
