"""Wide fixed point: real statistics summed exactly under secure aggregation in a 2^64 ring.

A model round releases sums such as X^T W X over millions of rows, whose magnitude and needed
precision together exceed one 64-bit word. Each value v is put on a grid, V = round(v * 2^frac),
as a signed integer of ``LIMBS * LIMB_BITS`` bits, and split into ``LIMBS`` words of
``LIMB_BITS`` bits each (two's complement over the whole width). Every word is below 2^32, so the
sum of one word over up to 2^31 parties stays below 2^63 and never wraps the SecAgg ring
(Bonawitz et al. 2017: inputs in Z_R); the coordinator recombines the summed words with carries
into the exact integer sum, which is exact whenever |sum| < 2^(width - 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from protocols.lazy import lazy_module
from protocols.secagg_errors import SecAggError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy")

LIMB_BITS = 32
LIMBS = 4
WIDTH = LIMB_BITS * LIMBS
MAX_PARTIES = 1 << 31
_MASK = (1 << LIMB_BITS) - 1


def to_grid(values: npt.ArrayLike, scale: float) -> list[int]:
    """round(v * scale) for each value, as Python integers. With a power-of-two ``scale`` the
    product is exact in float64, and so is the integer, at any magnitude."""
    scaled = np.rint(np.asarray(values, dtype=np.float64).ravel() * scale)
    if not np.all(np.isfinite(scaled)):
        raise SecAggError("fixed_point_range", "a statistic is not a finite number")
    return [int(x) for x in scaled]


def encode(grid: Sequence[int]) -> npt.NDArray[np.uint64]:
    """Words of each grid integer, ``LIMBS`` per value, lowest word first."""
    half = 1 << (WIDTH - 1)
    words = np.empty(len(grid) * LIMBS, dtype=np.uint64)
    for i, value in enumerate(grid):
        if not -half <= value < half:
            raise SecAggError("fixed_point_range", f"a statistic does not fit {WIDTH}-bit fixed point")
        word = value % (1 << WIDTH)
        for j in range(LIMBS):
            words[i * LIMBS + j] = (word >> (LIMB_BITS * j)) & _MASK
    return words


def decode_sum(words: npt.ArrayLike, parties: int) -> list[int]:
    """The exact integer sums from the summed words of ``parties`` encodings."""
    if not 1 <= parties <= MAX_PARTIES:
        raise SecAggError("fixed_point_range", f"wide fixed point sums at most {MAX_PARTIES} parties")
    flat = [int(w) for w in np.asarray(words, dtype=np.uint64).ravel()]
    if len(flat) % LIMBS:
        raise SecAggError("fixed_point_range", "the summed vector is not a whole number of values")
    half, full = 1 << (WIDTH - 1), 1 << WIDTH
    out = []
    for i in range(0, len(flat), LIMBS):
        total = sum(flat[i + j] << (LIMB_BITS * j) for j in range(LIMBS)) % full
        out.append(total - full if total >= half else total)
    return out


__all__ = ["LIMBS", "LIMB_BITS", "WIDTH", "decode_sum", "encode", "to_grid"]
