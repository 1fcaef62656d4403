"""The privacy parameters an analyst may ask for, checked the same way at the SDK, the coordinator
and the node (rule ``privacy_request``).

On the wire (``PrivacyRequest``) a zero means "not given: the node's policy decides". Anything given
must be a finite number within the federation's range: not NaN, not infinite, not negative, not
below ``EPSILON_FLOOR`` (noise that large answers nothing and loses floating-point precision in the
mechanisms' scales), not above ``EPSILON_CEILING``. Each node then applies its own, tighter policy
(``max_epsilon``). Pure DP composes in epsilon and zCDP in rho = epsilon^2 / 2 (Bun & Steinke 2016),
so rho's range is the image of epsilon's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from protocols import federation_pb2 as pb
from protocols.errors import FederationError

RULE = "privacy_request"
EPSILON_FLOOR = 1e-6
EPSILON_CEILING = 1e3
RHO_FLOOR = EPSILON_FLOOR**2 / 2
RHO_CEILING = EPSILON_CEILING**2 / 2


@dataclass(frozen=True)
class PrivacyAsk:
    """A checked request: ``None`` where the analyst left the choice to the node's policy."""

    epsilon: float | None = None
    rho: float | None = None


def _number(name: str, value: object, floor: float, ceiling: float, node: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FederationError(RULE, f"{name} must be a number, not {type(value).__name__}", node)
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise FederationError(RULE, f"{name} must be a finite number", node)
    if not floor <= number <= ceiling:
        raise FederationError(RULE, f"{name} must be between {floor:g} and {ceiling:g}", node)
    return number


def check_privacy(
    epsilon: float | None = None, rho: float | None = None, *, pure_only: bool = False, node: str = ""
) -> PrivacyAsk:
    """Check what an analyst gives (``None``: not given); refuse with ``privacy_request``."""
    if epsilon is not None and rho is not None:
        raise FederationError(RULE, "give either epsilon or rho, not both", node)
    if pure_only and rho is not None:
        raise FederationError(RULE, "this job takes epsilon (pure DP), not rho", node)
    return PrivacyAsk(
        epsilon=None
        if epsilon is None
        else _number("epsilon", epsilon, EPSILON_FLOOR, EPSILON_CEILING, node),
        rho=None if rho is None else _number("rho", rho, RHO_FLOOR, RHO_CEILING, node),
    )


def check_wire(epsilon: float, rho: float, *, pure_only: bool = False, node: str = "") -> PrivacyAsk:
    """Check a ``PrivacyRequest`` as it arrives: exactly 0 (either sign) means "not given"."""
    return check_privacy(
        None if epsilon == 0 else epsilon, None if rho == 0 else rho, pure_only=pure_only, node=node
    )


def check_query(spec: pb.QuerySpec, node: str = "") -> PrivacyAsk:
    """Every privacy-relevant number of a query as it arrives: epsilon or rho (``check_wire``), and
    each aggregate's clamping bounds (finite, lower <= upper; rule ``bounds``) and quantile (a
    fraction). Whether bounds lie within a dataset's declared ones only its node can say."""
    ask = check_wire(spec.privacy.epsilon, spec.privacy.rho, node=node)
    for agg in spec.aggregates:
        if agg.HasField("bounds"):
            given = [getattr(agg.bounds, side) for side in ("lower", "upper") if agg.bounds.HasField(side)]
            if any(math.isnan(v) or math.isinf(v) for v in given):
                raise FederationError("bounds", "clamping bounds must be finite numbers", node)
            if len(given) == 2 and given[0] > given[1]:
                raise FederationError("bounds", "clamping bounds have lower above upper", node)
        if not 0.0 <= agg.quantile <= 1.0:  # NaN fails this too
            raise FederationError("malformed_request", "a quantile must be a fraction between 0 and 1", node)
    return ask
