"""Human-readable sizes and counts, shared by the CLI and the markdown reports.

Sizes are 1024-based and labelled as such (KiB/MiB/GiB).
"""

from __future__ import annotations


def human_bytes(n: float | None) -> str:
    """``245423`` -> ``'239.7 KiB'``; None -> ``'-'``."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_count(n: float | None) -> str:
    """``11940000`` -> ``'11.94M'``; None -> ``'-'``."""
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"
