"""`ghn info`: what is installed and which kernels run."""
from __future__ import annotations

import argparse


def cmd_info(a: argparse.Namespace) -> int:
    from ghn_ext.ops.build_info import info
    print(info())
    return 0


def add_arguments(verb: str, p: argparse.ArgumentParser) -> None:
    p.set_defaults(func=cmd_info)
