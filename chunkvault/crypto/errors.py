"""The crypto layer's one error, apart from its modules so that each can raise it."""

from __future__ import annotations


class EnvelopeError(ValueError):
    """The object is not a valid chunk envelope, or failed authentication."""
