"""The one error type the CLI renders as a single clean line (no traceback)."""

from __future__ import annotations


class EmogenError(Exception):
    """Bad input or state the user can fix: `message` says what, `hint` says how."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class TrainingDiverged(EmogenError):
    """The loss became NaN/inf; the last good checkpoint is kept."""

    exit_code = 3


class Interrupted(EmogenError):
    """Ctrl-C during training; a checkpoint was saved."""

    exit_code = 130
