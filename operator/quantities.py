"""Kubernetes resource quantities as exact integers (millicores for cpu).

The gang-fit arithmetic adds requests and compares them with nodes'
allocatable amounts; floats would let "0.1 + 0.2" CPUs miss a fit by a hair.
Pure, stdlib only.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

from pot import errors

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}


def parse(value: str | int | float) -> Decimal:
    """The exact value of "1.5Gi", "250m", "4" or 4."""
    if isinstance(value, int | float):
        return Decimal(str(value))
    text = value.strip()
    factor: Decimal | int = 1
    for suffix, mult in _BINARY.items():
        if text.endswith(suffix):
            text, factor = text[: -len(suffix)], mult
            break
    else:
        if text and text[-1] in _DECIMAL:
            text, factor = text[:-1], _DECIMAL[text[-1]]
    try:
        return Decimal(text) * factor
    except InvalidOperation:
        raise errors.ConfigError(f"{value!r} is not a resource quantity") from None


def amount(resource: str, value: str | int | float) -> int:
    """Integer units: millicores for cpu, base units otherwise (rounded up)."""
    exact = parse(value)
    if resource == "cpu":
        exact *= 1000
    return math.ceil(exact)


def render(resource: str, units: int) -> str:
    """Human text for an integer amount ("500m", "4", "2Gi")."""
    if resource == "cpu":
        return str(units // 1000) if units % 1000 == 0 else f"{units}m"
    if resource == "memory":
        for suffix in ("Ti", "Gi", "Mi", "Ki"):
            unit = _BINARY[suffix]
            if units >= unit and units % unit == 0:
                return f"{units // unit}{suffix}"
    return str(units)
