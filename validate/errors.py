"""The one error type the CLI turns into a single line (and exit status) for the user."""

from __future__ import annotations


class ValidateError(RuntimeError):
    """A condition the user can act on; the message is one sentence, printed without a traceback.

    `exit_code` lets the CLI tell "this machine cannot do what was asked" (2, e.g. `--gpu`
    with no CUDA) from a failed run (1).
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
