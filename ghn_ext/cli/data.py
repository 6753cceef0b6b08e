"""`ghn data download`: CIFAR-10 fetched with torchvision's downloader, where every verb looks for it."""
from __future__ import annotations

import argparse


def cmd_download(a: argparse.Namespace) -> int:
    from ghn_ext.core.data import ENV_VAR, download_cifar10, resolve_data_dir
    root, fetched = download_cifar10(a.dir)
    print(f"CIFAR-10 {'downloaded to' if fetched else 'is already in'} {root}")
    if root != resolve_data_dir(None):
        print(f"point the commands at it: export {ENV_VAR}={root} (or pass --data-dir {root})")
    return 0


def add_arguments(verb: str, p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="data_command", required=True, metavar="{download}")
    q = verbs.add_parser("download", help="fetch CIFAR-10 (about 170 MB) with torchvision's downloader, unless "
                         "it is already there; the commands look in $GHN_DATA_DIR, else ~/.cache/ghn_ext/cifar10")
    q.add_argument("--dir", default=None, help="folder to put it in (default: $GHN_DATA_DIR, else "
                   "~/.cache/ghn_ext/cifar10)")
    q.set_defaults(func=cmd_download)
