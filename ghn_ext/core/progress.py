"""Progress bars for long work (training, search, ground truth): tqdm on stderr."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int, initial: int = 0, desc: str = "", disable: bool = False) -> tqdm:
    """A bar that starts at `initial` (a resumed run) and shows the key metric in its postfix."""
    return tqdm(total=total, initial=initial, desc=desc, disable=disable, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5, smoothing=0.1)
