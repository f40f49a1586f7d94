"""The Dutch citizen service number (BSN) check: nine digits that pass the 11-test.

A referral with a BSN that fails the test is bad input (a typo would link the referral to
another person), so the validator rejects it wherever an identifier carries the BSN system.
"""

from __future__ import annotations

_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2, -1)


def is_valid_bsn(value: str) -> bool:
    """True when `value` is 9 ASCII digits, not all zeros, and 9*d1 + 8*d2 + ... + 2*d8 - d9 ≡ 0 (mod 11)."""
    if not isinstance(value, str) or len(value) != 9 or not value.isascii() or not value.isdigit():
        return False
    if value == "000000000":
        return False
    total = sum(w * (ord(c) - 48) for w, c in zip(_WEIGHTS, value, strict=True))
    return total % 11 == 0
