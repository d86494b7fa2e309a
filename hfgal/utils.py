"""Small shared pieces: the user-facing error type, atomic writes, output-folder locks, card templates, and the
CPU allocator setting of the training recipes."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


class HfgalError(Exception):
    """An error caused by the user's input: printed as one line (what was wrong, what to do), no traceback."""


def run_cli(main: Callable[[], Any], argv: list[str] | None = None, prog: str = "hfgal") -> None:
    """Run `main`, turning `HfgalError` (and a few well-known input errors) into a one-line message and exit 1.

    `--debug` anywhere on the command line (or `HFGAL_DEBUG=1`) keeps the full traceback; `--debug
    underflow_overflow` (a Trainer option) is left to the Trainer.
    """
    argv = sys.argv if argv is None else argv
    ours = "--debug" in argv and not _trainer_debug_flag(argv)
    debug = ours or os.environ.get("HFGAL_DEBUG") == "1"
    if ours:
        argv.remove("--debug")
    try:
        result = main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except (HfgalError, FileNotFoundError, PermissionError) as err:
        if debug:
            traceback.print_exc()
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(1)
    if isinstance(result, int) and result:
        sys.exit(result)


def _trainer_debug_flag(argv: list[str]) -> bool:
    """True when `--debug` is the Trainer's own flag (`--debug underflow_overflow`), which the recipe must keep."""
    i = argv.index("--debug")
    value = argv[i + 1] if i + 1 < len(argv) else ""
    if not value or value.startswith("-"):
        return False
    from transformers.debug_utils import DebugOption

    return all(part in {o.value for o in DebugOption} for part in value.split())


class OneLineUsageErrors:
    """Mixin for `argparse.ArgumentParser` subclasses: a usage error is one line, like every other hfgal error,
    and flags are never abbreviated.

    argparse prints the whole usage (hundreds of lines for the Trainer's flags) before its message; hfgal prints
    `<tool>: error: <message>; see `<prog> --help`` and exits 2, argparse's usage-error code.
    """

    def __init__(self, *args, **kwargs):
        # A flag is spelled out: `--learning_rat 1e-3` is an error, not a silent `--learning_rate`.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        tool = self.prog.split()[0]
        print(f"{tool}: error: {message}; see `{self.prog} --help`", file=sys.stderr)
        sys.exit(2)


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
    try:
        pid = int(tmp.name.split(".tmp-")[1].split("-")[0])
    except (IndexError, ValueError):
        return False
    return _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
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


# --------------------------------------------------------------------------- locks


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, what: str = "hfgal") -> Iterator[Path]:
    """Hold `<folder>.lock` (beside the folder) for the duration of the block.

    A second process asking for the same lock fails at once with a clear message; a lock left by a killed
    process (its pid is gone) is taken over.
    """
    folder = Path(folder).absolute()
    lock = folder.with_name(folder.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        if _create_lock(lock):
            break
        try:
            pid = int(lock.read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if _pid_alive(pid) and pid != os.getpid():
            raise HfgalError(
                f"{folder} is in use by another {what} (pid {pid}, lock {lock}); wait for it to finish"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    else:
        raise HfgalError(f"could not take the lock {lock}; remove it if no {what} is running")
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _create_lock(lock: Path) -> bool:
    """Create `lock` holding this process's pid, atomically; False if it exists already.

    The pid is written first and the file linked into place, so no other process ever reads an empty lock (which
    it would take for one left by a dead process, and steal).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{lock.name}.", suffix=".tmp", dir=lock.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, lock)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: exclusive create, then the pid
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


# --------------------------------------------------------------------------- CPU allocator


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed blocks instead of handing big ones back to the OS; True if it applied.

    By default glibc serves every allocation above a few MB (a batch of activations, an augmented batch) with a
    fresh `mmap` and unmaps it when freed, so a CPU training step page-faults its way through every large tensor
    again (a normalised 32 x 3 x 224 x 224 batch: 11 ms of page faults for 1 ms of arithmetic on the 2-core test
    machine). Serving them from the heap and never trimming it (`M_MMAP_MAX=0`, a 1 GB trim threshold) is what
    PyTorch's CPU tuning guide gets from jemalloc/tcmalloc, without preloading a library. It affects the whole
    process, so the recipes call it only to train on a CPU; resident memory then stays at its peak.
    `HFGAL_KEEP_FREED_MEMORY=0` leaves glibc's default (for a shared login node, say).
    """
    import ctypes
    import platform

    if os.environ.get("HFGAL_KEEP_FREED_MEMORY") == "0":
        return False
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


# --------------------------------------------------------------------------- templates


def hub_card_template(name: str) -> Path:
    """Path of a card template shipped in `hub_cards/` (inside an installed wheel or a source checkout)."""
    from importlib import resources

    try:
        path = Path(str(resources.files("hfgal.hub_cards").joinpath(name)))
        if path.is_file():
            return path
    except ModuleNotFoundError:
        pass
    path = Path(__file__).resolve().parent.parent / "hub_cards" / name
    if not path.is_file():
        raise HfgalError(f"card template {name} not found; reinstall hfgal")
    return path
