"""chunkvault: an encrypted, replicated, restorable copy of a directory on S3-compatible peers."""

__version__ = "0.1.0"
