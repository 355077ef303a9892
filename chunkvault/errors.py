"""Errors a user can act on. The CLI prints ``message`` (and ``hint``) on one line, no traceback."""

from __future__ import annotations


class ChunkvaultError(Exception):
    """An expected failure with a message that says what is wrong and what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class WriteOnlyHost(ChunkvaultError):
    """A command that needs the passphrase, on a host configured with a writer credential."""

    exit_code = 12

    def __init__(self, what: str) -> None:
        super().__init__(
            f"this host holds a write-only credential (keys.writer_credential_file): it "
            f"stores files but cannot {what}",
            "run it where the passphrase is",
        )
