"""python -m ghn_ext.cli: the `ghn` command (what torchrun launches)."""
import sys

from ghn_ext.cli import main

sys.exit(main())
