"""What a user sees when something is wrong: `HfgalError` (one line: what was wrong, what to do) and the runner
that turns it into `<tool>: error: <message>` and exit code 1 for every hfgal entry point."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any


class HfgalError(ValueError):
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


# The modules each optional extra of pyproject.toml installs (as imported).
EXTRA_MODULES = {
    "train": ("datasets", "accelerate", "evaluate", "codecarbon", "timm", "h5py", "scipy", "matplotlib", "pyarrow"),
    "demo": ("gradio", "matplotlib"),
    "astro": ("astropy",),
}


def require_extra(extra: str, what: str) -> None:
    """Check that the packages of an optional extra are installed, or say in one line how to install them.

    Args:
        extra: the extra (`train`, `demo`, `astro`).
        what: what needs them, for the message (e.g. "hfgal train").

    Raises:
        HfgalError: naming the missing modules and `pip install 'hfgal[<extra>]'`.
    """
    import importlib.util

    missing = [module for module in EXTRA_MODULES[extra] if importlib.util.find_spec(module) is None]
    if missing:
        raise HfgalError(f"{what} needs {', '.join(missing)} (the {extra} extra): pip install 'hfgal[{extra}]'")


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
