"""The `ghn` command: a thin parser over one module per verb group (train, search, studies, final,
anytime, demo, data, info), and the error handling every verb shares."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from typing import Optional, Sequence

from ghn_ext import __version__

# verb -> (module of ghn_ext.cli that adds its options and runs it, one line of help). Only the module of
# the verb being run is imported: `ghn --help` and a mistyped verb answer at once, without torch.
VERBS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a GHN on random architectures (resumes from OUT)"),
    "score": ("search", "predicted accuracy of architectures listed in a file"),
    "search": ("search", "rank random architectures with a trained GHN"),
    "show": ("search", "print an architecture's summary and render it"),
    "groundtruth": ("studies", "train random architectures with SGD: the correlation benchmark's ground truth "
                    "(resumes, grows with --num-archs)"),
    "correlate": ("studies", "rank correlation of predictors (GHN, one-shot, SGD-k) with the ground truth: "
                  "markdown table and scatter plot (resumes)"),
    "ablate": ("studies", "the paper's ablations on the ground truth: nodes per training cell, sync vs "
               "forward-backward over T, stacked-GHN variants (resumes)"),
    "compare-top": ("studies", "train a search's top k under the ground-truth protocol and compare them with k "
                    "random ground-truth architectures (paper Fig. 4; resumes)"),
    "train-final": ("final", "train a chosen architecture to the end (paper appendix 7.3: cosine SGD, cutout, "
                    "drop-path, auxiliary head; resumes)"),
    "anytime": ("anytime", "anytime prediction (paper Sec. 5.2): train the GHN, search by the area under the "
                "accuracy-FLOPs curve, train the winner against an MSDNet-style baseline"),
    "demo": ("demo", "train a small GHN, search, and write a report (about 10 minutes)"),
    "data": ("data", "the CIFAR-10 data the commands read"),
    "info": ("info", "the version, torch, and which compiled kernels (CPU, CUDA) run or whether the pure-PyTorch "
             "fallback does"),
}


def user_errors() -> tuple[type[BaseException], ...]:
    """Everything a user can get wrong: it ends as one clear line; anything else (a bug) keeps its traceback."""
    from ghn_ext.core.checkpoints import CheckpointError
    from ghn_ext.core.checks import InputError
    from ghn_ext.core.data import DatasetError
    from ghn_ext.core.files import InUseError
    from ghn_ext.core.graph import GraphError
    from ghn_ext.workflows.train import NonFiniteLossError
    return (GraphError, CheckpointError, DatasetError, NonFiniteLossError, InputError, FileNotFoundError,
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


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The whole parser, or with `only` one verb's options alone (the other verbs listed, empty)."""
    parser = _Parser(prog="ghn", description="Graph HyperNetworks for architecture search")
    parser.add_argument("--version", action="version", version=f"ghn_ext {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for verb, (module, help_text) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        if only is None or verb == only:
            importlib.import_module(f"ghn_ext.cli.{module}").add_arguments(verb, p)
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
    from ghn_ext.core.distributed import launched_as_main
    from ghn_ext.core.files import run_file, run_folder
    holds = getattr(a, "holds", None)
    if not launched_as_main() or holds is None or getattr(a, holds) is None:
        return contextlib.nullcontext()
    return run_folder(a.out) if holds == "out" else run_file(a.output)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = next((word for word in argv if not word.startswith("-")), "")  # none: only the verbs' list
    args = build_parser(only=verb).parse_args(argv)
    try:
        with _output_held(args):
            return args.func(args)
    except user_errors() as exc:
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
