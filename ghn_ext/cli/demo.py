"""`ghn demo`: a small GHN trained, a search, a report."""
from __future__ import annotations

import argparse

from ghn_ext.cli.common import not_anytime, shared_args
from ghn_ext.spaces import SPACES


def cmd_demo(a: argparse.Namespace) -> int:
    not_anytime(a, "train|search|train-final")
    from ghn_ext.workflows.demo import run_demo
    run_demo(a.out, a.space, a.budget, a.data_dir, progress=not a.quiet)
    return 0


def add_arguments(verb: str, p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", choices=SPACES, default="classification", help="search space")
    p.add_argument("--budget", choices=("full", "ci"), default="full",
                   help="full: the ~10 minute demo; ci: a one-minute smoke run")
    p.add_argument("--out", default="report")
    shared_args(p, "data_dir", "quiet")
    p.set_defaults(func=cmd_demo, holds="out")


