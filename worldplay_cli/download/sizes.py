"""Byte counts as people write and read them (decimal units, like the Hub shows them)."""

from __future__ import annotations

import re

from worldplay_cli.contract.errors import BadInput

_UNITS = {
    "": 1,
    "B": 1,
    "K": 10**3,
    "KB": 10**3,
    "M": 10**6,
    "MB": 10**6,
    "G": 10**9,
    "GB": 10**9,
    "T": 10**12,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(text: str, option: str = "size") -> int:
    """`option` names what was typed (e.g. `--quota`) in the error."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise BadInput(f"cannot read {option} {text!r}", "write it like 500MB, 40GB or 1.5TB")
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(size: int | None, approximate: bool = False) -> str:
    """`approximate` marks an estimate with a leading `~`."""
    if size is None:
        return "?"
    if approximate:
        return "~" + format_size(size)
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.2f} TB"
