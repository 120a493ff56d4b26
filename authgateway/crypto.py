"""The key ring: Fernet keys with short fingerprints, so every ciphertext records its key."""

from __future__ import annotations

import binascii
import functools
import hashlib
from collections.abc import Callable, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .errors import DecryptionFailedError

KEY_ID_LENGTH = 12
#: How many access tokens KeyRing.decrypt_cached remembers: the active users of a busy process.
CACHED_PLAINTEXTS = 4096


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def key_id(key: str) -> str:
    """A fingerprint that names a key in the database and the logs without revealing it."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()[:KEY_ID_LENGTH]


class KeyRingError(ValueError):
    pass


class KeyRing:
    """Encrypts with the primary key; decrypts with whichever key a ciphertext names."""

    def __init__(self, primary: str, older: Sequence[str] = ()) -> None:
        keys = [primary, *older]
        self._fernets: dict[str, Fernet] = {}
        for position, key in enumerate(keys):
            try:
                fernet = Fernet(key.encode("ascii"))
            except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
                which = "the encryption key" if position == 0 else f"rotation key #{position}"
                raise KeyRingError(f"{which} is not a Fernet key") from exc
            kid = key_id(key)
            if kid in self._fernets:
                raise KeyRingError(f"key {kid} is listed twice")
            self._fernets[kid] = fernet
        self.primary_id = key_id(primary)
        self._primary = self._fernets[self.primary_id]
        self.multi = MultiFernet(list(self._fernets.values()))
        self.decrypt_cached = functools.lru_cache(maxsize=CACHED_PLAINTEXTS)(self.decrypt)

    @property
    def ids(self) -> list[str]:
        return list(self._fernets)

    def encrypt(self, plaintext: str) -> str:
        return self._primary.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str, kid: str) -> str:
        fernet = self._fernets.get(kid)
        if fernet is None:
            raise DecryptionFailedError(reason=f"no configured key has id {kid}")
        try:
            return fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise DecryptionFailedError(
                reason=f"the ciphertext does not verify under key {kid}") from None

    #: ``decrypt``, remembering the last CACHED_PLAINTEXTS answers by ciphertext: for the access
    #: token on the hot path, which is the same ciphertext on every call until it is refreshed.
    #: Fernet's verification and decryption cost as much as the database read, and a
    #: ciphertext that verified once always decrypts to the same text. Failures are not
    #: remembered. The plaintexts stay in this process's memory, next to the keys that would
    #: decrypt every stored token anyway.
    decrypt_cached: Callable[[str, str], str]

    def check(self) -> bool:
        """Round-trip a value through the primary key, for the health check."""
        return self._primary.decrypt(self._primary.encrypt(b"health")) == b"health"
