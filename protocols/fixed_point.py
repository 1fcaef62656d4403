"""Fixed-point encoding of real or integer vectors into the ring Z_{2^bits} for secure aggregation.

Values are scaled, rounded to the nearest integer and stored in two's complement, so the sum of
encodings decodes to the sum of values (Bonawitz et al. 2017, section 3: inputs live in Z_R).
Nothing wraps silently: values outside the declared range, and ranges whose sum over the declared
number of parties could overflow, are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocols.lazy import lazy_module
from protocols.secagg_errors import SecAggError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    np = lazy_module("numpy")

_FLOAT_EXACT = 1 << 53  # integers above this are not exact in float64


@dataclass(frozen=True)
class FixedPointCodec:
    """Encoding of values in [lo, hi] as round(value * scale) mod 2^bits, for up to ``max_parties`` summands.

    With ``scale = 1`` and integer ``lo``/``hi`` the encoding of integer vectors is exact.
    """

    lo: float
    hi: float
    scale: float = 1.0
    bits: int = 64
    max_parties: int = 1024

    def __post_init__(self) -> None:
        if not 8 <= self.bits <= 64:
            raise SecAggError("fixed_point_bits", f"bits must be between 8 and 64, got {self.bits}")
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)) or self.lo > self.hi:
            raise SecAggError("fixed_point_range", f"range [{self.lo}, {self.hi}] is not a finite interval")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise SecAggError(
                "fixed_point_scale", f"scale must be a positive finite number, got {self.scale}"
            )
        if self.max_parties < 1:
            raise SecAggError(
                "fixed_point_parties", f"max_parties must be at least 1, got {self.max_parties}"
            )
        largest = math.ceil(max(abs(self.lo), abs(self.hi)) * self.scale)
        # The sum of max_parties encodings must stay strictly inside the signed half of the ring.
        if self.max_parties * largest >= 1 << (self.bits - 1):
            raise SecAggError(
                "fixed_point_overflow",
                f"{self.max_parties} parties x {largest} exceeds the signed range of 2^{self.bits}; "
                "lower the scale or the range, or raise bits",
            )
        if largest > _FLOAT_EXACT and self.scale != 1:
            raise SecAggError("fixed_point_scale", "scaled range exceeds 2^53 and would lose precision")

    @property
    def modulus_mask(self) -> np.uint64:
        return np.uint64((1 << self.bits) - 1)

    @property
    def resolution(self) -> float:
        """Largest rounding error per encoded value."""
        return 0.5 / self.scale

    def encode(self, values: npt.ArrayLike) -> npt.NDArray[np.uint64]:
        """Encode a 1-D vector; raises ``fixed_point_range`` for any value outside [lo, hi]."""
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise SecAggError("fixed_point_shape", f"expected a 1-D vector, got shape {arr.shape}")
        if arr.dtype.kind in "iu":
            if arr.size and (arr.min() < self.lo or arr.max() > self.hi):
                bad = arr[(arr < self.lo) | (arr > self.hi)][0]
                raise SecAggError("fixed_point_range", f"value {bad} is outside [{self.lo}, {self.hi}]")
            ints = arr.astype(np.int64, copy=False)
            if self.scale != 1:
                ints = np.rint(ints.astype(np.float64) * self.scale).astype(np.int64)
        elif arr.dtype.kind == "f":
            outside = ~((arr >= self.lo) & (arr <= self.hi))  # NaN counts as outside
            if outside.any():
                bad = arr[outside][0]
                raise SecAggError("fixed_point_range", f"value {bad} is outside [{self.lo}, {self.hi}]")
            ints = np.rint(arr.astype(np.float64, copy=False) * self.scale).astype(np.int64)
        else:
            raise SecAggError("fixed_point_dtype", f"cannot encode values of dtype {arr.dtype}")
        # Two's complement: int64 -> uint64 reinterprets; the mask reduces mod 2^bits.
        return ints.view(np.uint64) & self.modulus_mask

    def decode_sum(self, total: npt.NDArray[np.uint64], as_integer: bool = False) -> npt.NDArray[np.generic]:
        """Decode a sum of encodings (mod 2^bits) back to values; integers stay exact with ``as_integer``."""
        total = np.asarray(total, dtype=np.uint64) & self.modulus_mask
        if self.bits == 64:
            signed = total.view(np.int64)
        else:
            half = np.uint64(1 << (self.bits - 1))
            signed = total.astype(np.int64) - np.where(total >= half, np.int64(1 << self.bits), np.int64(0))
        if as_integer and self.scale == 1:
            return signed
        return signed.astype(np.float64) / self.scale
