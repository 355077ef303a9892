"""Client-side encryption: passphrase KDF, key slots, master material and chunk envelopes.

The byte-level formats are specified in docs/format.md and pinned by test vectors.
"""
