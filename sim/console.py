"""Writing to the terminal from a run that must finish whatever the terminal does."""

from __future__ import annotations

import os
import sys


def say(text: str) -> None:
    """Print to stdout. A reader that went away (`| head`) must not stop a run before it has
    written its results: the rest of the output goes to /dev/null."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
