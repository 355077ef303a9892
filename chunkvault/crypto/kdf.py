"""Passphrase -> 32-byte slot key. Argon2id by default, scrypt as the alternative.

The algorithm, its cost parameters and a random salt are stored in each key slot, so a
slot can always be opened with the parameters it was made with, and new slots can use
stronger ones. The salt is generated here, never typed by a user.
"""

from __future__ import annotations

import base64
import os
from dataclasses import asdict, dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

KEY_BYTES = 32
SALT_BYTES = 16
KdfName = Literal["argon2id", "scrypt"]

# Argon2id: RFC 9106's second recommended option (64 MiB, t=3, p=4). scrypt: N=2^17,
# r=8, p=1 (128 MiB), the cost OWASP lists. Both take ~0.1-0.3 s here.
DEFAULTS: dict[str, dict[str, int]] = {
    "argon2id": {"memory_kib": 64 * 1024, "iterations": 3, "lanes": 4},
    "scrypt": {"n": 2**17, "r": 8, "p": 1},
}
# Refuse parameters so weak (or so costly) that they can only be tampering or a typo. The
# upper bounds matter because slots come from peers: a hostile keyring must not make an
# unlock take gigabytes or minutes (the review saw 4.3 GB RSS from 4 GiB x 64 iterations).
_LIMITS: dict[str, dict[str, tuple[int, int]]] = {
    "argon2id": {
        "memory_kib": (8 * 1024, 1024 * 1024),
        "iterations": (1, 8),
        "lanes": (1, 16),
    },
    "scrypt": {"n": (2**14, 2**20), "r": (1, 8), "p": (1, 4)},
}
SALT_MAX_BYTES = 64


class KdfError(ValueError):
    """Stored KDF parameters are missing, unknown or out of the accepted range."""


@dataclass(frozen=True)
class KdfParams:
    alg: KdfName
    salt: bytes
    params: dict[str, int]

    @classmethod
    def new(cls, alg: KdfName = "argon2id") -> KdfParams:
        if alg not in DEFAULTS:
            raise KdfError(f"unknown KDF {alg!r} (use argon2id or scrypt)")
        return cls(alg=alg, salt=os.urandom(SALT_BYTES), params=dict(DEFAULTS[alg]))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["salt"] = base64.b64encode(self.salt).decode()
        return data

    @classmethod
    def from_json(cls, data: Any) -> KdfParams:
        try:
            alg = data["alg"]
            salt = base64.b64decode(data["salt"], validate=True)
            params = dict(data["params"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KdfError(f"malformed KDF parameters: {exc}") from None
        if not isinstance(alg, str) or alg not in _LIMITS:
            raise KdfError(f"unknown KDF {alg!r}")
        if not SALT_BYTES <= len(salt) <= SALT_MAX_BYTES:
            raise KdfError(f"KDF salt is {len(salt)} bytes, need {SALT_BYTES}..{SALT_MAX_BYTES}")
        if set(params) != set(_LIMITS[alg]):
            raise KdfError(f"{alg} needs parameters {sorted(_LIMITS[alg])}, got {sorted(params)}")
        for name, (low, high) in _LIMITS[alg].items():
            value = params[name]
            # JSON integers only: a float (1e9, Infinity) or a bool is tampering, and
            # int(Infinity) would raise OverflowError far from here.
            if type(value) is not int or not low <= value <= high:
                raise KdfError(f"{alg} parameter {name}={value!r}: need an integer {low}..{high}")
        if alg == "scrypt" and params["n"] & (params["n"] - 1):
            raise KdfError(f"scrypt parameter n={params['n']} is not a power of two")
        return cls(alg=alg, salt=salt, params=params)

    @property
    def cost_kib(self) -> int:
        """Work of one derivation in KiB of memory traffic (memory x passes): what a
        keyring's total is capped by."""
        p = self.params
        if self.alg == "argon2id":
            return p["memory_kib"] * p["iterations"]
        return 128 * p["r"] * p["n"] // 1024 * p["p"] * 2  # scrypt: ~2 passes over 128rN B

    def derive(self, passphrase: str) -> bytes:
        secret = passphrase.encode("utf-8")
        p = self.params
        if self.alg == "argon2id":
            kdf = Argon2id(
                salt=self.salt,
                length=KEY_BYTES,
                iterations=p["iterations"],
                lanes=p["lanes"],
                memory_cost=p["memory_kib"],
            )
        else:
            kdf = Scrypt(salt=self.salt, length=KEY_BYTES, n=p["n"], r=p["r"], p=p["p"])
        return kdf.derive(secret)
