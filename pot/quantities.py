"""Kubernetes resource quantities as plain integers.

The local cluster's scheduler and the operator's gang-fit check both add up
requests and compare them with allocatable amounts, and the kubelet hands them
to `resourceFieldRef` env vars: all need "500m", "1Gi" and "4" read exactly as
the API server means them (floats would let "0.1 + 0.2" CPUs miss a fit by a
hair). CPU is kept in millicores and everything else in base units, so sums
stay exact integers. Pure, stdlib only.
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
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}


def parse(value: str | int | float) -> Decimal:
    """The exact value of a quantity string ("1.5Gi", "250m", "2e3", 4)."""
    if isinstance(value, int | float):
        return Decimal(str(value))
    text = value.strip()
    for suffix, factor in _BINARY.items():
        if text.endswith(suffix):
            return _number(text[: -len(suffix)], value) * factor
    if text and text[-1] in _DECIMAL and not text[-1].isdigit():
        return _number(text[:-1], value) * _DECIMAL[text[-1]]
    return _number(text, value)


def _number(text: str, original: object) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise errors.ConfigError(f"{original!r} is not a resource quantity") from None


def amount(resource: str, value: str | int | float) -> int:
    """``value`` in the scheduler's integer unit: millicores for cpu, else base units.

    Rounded up, as the API server does, so a request never shrinks.
    """
    exact = parse(value)
    if resource == "cpu":
        exact *= 1000
    return math.ceil(exact)


def render(resource: str, units: int) -> str:
    """Human text for an integer amount ("500m", "4", "2Gi"): the inverse of ``amount``."""
    if resource == "cpu":
        return f"{units // 1000}" if units % 1000 == 0 else f"{units}m"
    if resource == "memory":
        for suffix in ("Ti", "Gi", "Mi", "Ki"):
            unit = _BINARY[suffix]
            if units >= unit and units % unit == 0:
                return f"{units // unit}{suffix}"
    return str(units)
