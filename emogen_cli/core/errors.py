"""The error types the CLI renders as one clean line (no traceback), and the exit codes it uses.

Exit codes (README, "Exit codes and errors"): 0 success, 1 bad input or state the user can fix,
2 usage (unknown option, wrong type), 3 training diverged, 4 internal error (a bug: set
EMOGEN_DEBUG=1 for the traceback), 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


class EmogenError(Exception):
    """Bad input or state the user can fix: `message` says what, `hint` says how."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class TrainingDiverged(EmogenError):
    """The loss became NaN/inf; the last good checkpoint is kept."""

    exit_code = EXIT_DIVERGED


class Interrupted(EmogenError):
    """Ctrl-C (or SIGTERM) during a long run; what was finished is kept."""

    exit_code = EXIT_INTERRUPTED


def load_failure(exc: BaseException) -> str:
    """Why torch could not read a file, in a few words. torch's own advice to retry with
    `weights_only=False` would execute whatever code the file carries, so it never reaches the user:
    such a file is refused as one that would run code."""
    import pickle

    text = str(exc).strip()
    if "invalid load key" in text:  # not a pickle at all (text, an image, a truncated zip)
        return "it is not a PyTorch file"
    if (isinstance(exc, pickle.UnpicklingError) or "weights_only" in text or "Weights only load failed" in text
            or "Unsupported global" in text):
        return ("refused: it holds pickled Python objects besides tensors, and loading those would run code "
                "(emogen only reads plain tensors)")
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:200]
