"""The ``repro`` command line: subcommands only; each calls one library function."""

from __future__ import annotations

import os
import sys

from repro.cli.arguments import resolve_hook
from repro.cli.parser import build_parser

__all__ = ["build_parser", "main", "resolve_hook"]


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or a missing asset: reported in one line, no traceback."""
    errors: list[type[BaseException]] = [ValueError, FileExistsError, FileNotFoundError]
    for module, name in (("repro.data", "DatasetUnavailable"), ("repro.backbones", "BackboneUnavailable")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def _hide_library_progress_bars() -> None:
    """``--quiet`` also hides the Hugging Face libraries' bars (e.g. transformers' "Loading weights")."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub / transformers are imported
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand of ``argv`` (default ``sys.argv[1:]``); its exit status (2: bad input, in one line)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        _hide_library_progress_bars()
    try:
        return args.func(args)
    except Exception as e:
        if not isinstance(e, _user_errors()):
            raise
        print(f"repro {args.command}: error: {e}", file=sys.stderr)
        return 2
