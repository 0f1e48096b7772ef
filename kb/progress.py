"""Progress bars on stderr for long work (reading, embedding, evaluating)."""

from __future__ import annotations

import sys


def progress_bar(enabled: bool, total: int, desc: str, unit: str = "passage", leave: bool = True):
    """A tqdm bar on stderr, or ``None`` when disabled or there is nothing to count."""
    if not enabled or total <= 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=leave)
