"""Email addresses as the gateway compares them: the one place an address is normalised, so
that /auth/init, the callback's identity check and every lookup apply the same rule.

ASCII letters compare without regard to case; every other character must match exactly.
``str.lower()``, ``str.upper()`` and ``str.casefold()`` turn some non-ASCII characters into ASCII
ones (the Kelvin sign U+212A into ``k``, the long s U+017F into ``s``/``S``, ``ß`` into ``ss``,
the dotted capital I U+0130 into ``i`` and a combining dot): an address holding one could be
made to equal an ASCII address it is not. Such an address is refused, never folded.
"""

from __future__ import annotations

import functools

#: A-Z to a-z and nothing else.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@functools.lru_cache(maxsize=4096)
def folds_into_ascii(char: str) -> bool:
    """Whether a non-ASCII character changes case, or case-folds, into ASCII."""
    return not char.isascii() and any(
        part.isascii() for changed in (char.lower(), char.upper(), char.casefold())
        for part in changed)


def normalise(address: str) -> str | None:
    """The address trimmed, its ASCII letters lower-cased; None when it holds a character that
    changes case into ASCII (see the module's docstring)."""
    address = address.strip()
    if not address.isascii() and any(folds_into_ascii(char) for char in address):
        return None
    return address.translate(_ASCII_LOWER)


def same(normalised: str, other: str) -> bool:
    """Whether ``other``, as a provider or a person wrote it, is the already normalised
    address ``normalised``."""
    return normalise(other) == normalised
