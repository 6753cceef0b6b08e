"""The `ghn` command: a thin parser over one module per verb group (train, search, studies, final,
anytime, demo, data, info), and the error handling every verb shares."""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Optional, Sequence

from ghn_ext import __version__
from ghn_ext.cli import anytime as anytime_cli
from ghn_ext.cli import data, demo, final, info, search, studies, train
from ghn_ext.core.checkpoints import CheckpointError
from ghn_ext.core.checks import InputError
from ghn_ext.core.data import DatasetError
from ghn_ext.core.distributed import launched_as_main
from ghn_ext.core.files import InUseError, run_file, run_folder
from ghn_ext.core.graph import GraphError
from ghn_ext.workflows.train import NonFiniteLossError

# Everything a user can get wrong ends as one clear line; anything else (a bug) keeps its traceback.
USER_ERRORS = (GraphError, CheckpointError, DatasetError, NonFiniteLossError, InputError, FileNotFoundError,
               InUseError)


class _ShowDefaults(argparse.HelpFormatter):
    """An option's default after its help, unless the help already says it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = (action.option_strings and action.default is not None and action.default is not False
                 and action.default != argparse.SUPPRESS)  # 0 is a default to show, False (a flag) is not
        if shown and "default" not in text:
            text += (" " if text else "") + "(default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """Every verb's --help shows each option's default (sub-parsers are made of this class too)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _ShowDefaults)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ghn", description="Graph HyperNetworks for architecture search")
    parser.add_argument("--version", action="version", version=f"ghn_ext {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (train, search, studies, final, anytime_cli, demo, data, info):
        group.add_parsers(sub)
    return parser


def _first_line(exc: BaseException) -> str:
    # some messages (torch.load's on a damaged file) run over several lines
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation that failed (sizes too large for this machine), not a bug."""
    import torch
    text = str(exc)
    return (isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in text
            or "Storage size calculation overflowed" in text
            # the ops' own size checks (csrc/emit_plan.cpp, csrc/propagate_checks.cpp)
            or "makes the emitted buffer too large" in text or "more bytes than an int64 can count" in text)


def _output_held(a: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The command's output (its --out folder or --output file, as its parser's `holds` says) held for
    this run alone; under torchrun rank 0 holds it for all ranks."""
    holds = getattr(a, "holds", None)
    if not launched_as_main() or holds is None or getattr(a, holds) is None:
        return contextlib.nullcontext()
    return run_folder(a.out) if holds == "out" else run_file(a.output)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _output_held(args):
            return args.func(args)
    except USER_ERRORS as exc:
        print(f"ghn {args.command}: error: {_first_line(exc)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError, ValueError) as exc:
        if not _out_of_memory(exc):
            raise  # a bug: its traceback
        print(f"ghn {args.command}: error: too large for this machine ({_first_line(exc)}); try smaller sizes "
              "(--channels, --batch-size, --archs-per-batch ...)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ghn {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
