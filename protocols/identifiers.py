"""Canonical forms of the identifiers partners match on.

Two partners only find a common entity if they write its identifier the same way, so every
identifier is normalised before it is hashed for private set intersection. Each type has one
canonical text form; a value that cannot be put in that form is malformed (``None``) and is
counted, never guessed at.

- ``kvk``: Dutch Chamber of Commerce number, 8 digits. KvK publishes no check digit, so only
  the shape is checked.
- ``person``: a pseudonymous person id agreed between partners; trimmed and upper-cased.
- ``iban``: ISO 13616 account number; spaces removed, upper-cased, length per country where
  known, and the ISO 7064 mod-97-10 check (remainder 1).
- ``postcode``: Dutch postcode plus house number, e.g. ``"1234 ab 12"`` -> ``"1234AB-12"``;
  a house-number addition is kept after a second dash (``"1234AB-12-A"``).
- ``text``: free text such as a name; accents stripped (Unicode NFKD), case-folded,
  whitespace collapsed.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable

from protocols.errors import FederationError

__all__ = ["ID_TYPES", "IdentifierError", "normalise", "normalise_many"]


class IdentifierError(FederationError):
    """The identifier type is not one the federation knows."""

    def __init__(self, message: str, rule: str = "identifier_type") -> None:
        super().__init__(rule, message)


_KVK = re.compile(r"\d{8}")
_SEPARATORS = re.compile(r"[\s.]+")
_IBAN_SHAPE = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}")
# ISO 13616 registry lengths for the countries Dutch partners meet most; others get the
# generic shape and the mod-97 check only.
# fmt: off
_IBAN_LENGTH = {
    "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20,
    "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IT": 27,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25,
    "RO": 24, "SE": 24, "SI": 19, "SK": 24, "TR": 26,
}
# fmt: on
# Postcode: 4 digits not starting with 0, two letters (PostNL never issues SA, SD or SS),
# house number without leading zero, optional addition such as "A", "bis" or "2hg".
_POSTCODE = re.compile(
    r"(?P<digits>[1-9]\d{3})[\s-]*(?P<letters>[A-Z]{2})[\s,-]*"
    r"(?P<number>[1-9]\d{0,4})(?:[\s-]*(?P<addition>[A-Z0-9]{1,4}))?"
)
_FORBIDDEN_LETTERS = {"SA", "SD", "SS"}
_WHITESPACE = re.compile(r"\s+")


def _as_text(raw: object) -> str | None:
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, float) and math.isnan(raw):
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, int):
        return str(raw)
    return None


def _kvk(raw: object) -> str | None:
    # A KvK number read from a spreadsheet as an integer has lost its leading zeros.
    if isinstance(raw, int) and not isinstance(raw, bool):
        return f"{raw:08d}" if 0 <= raw < 10**8 else None
    text = _as_text(raw)
    if text is None:
        return None
    digits = _SEPARATORS.sub("", text)
    return digits if _KVK.fullmatch(digits) else None


def _person(raw: object) -> str | None:
    text = _as_text(raw)
    if text is None:
        return None
    value = text.strip().upper()
    return value or None


def _iban(raw: object) -> str | None:
    text = _as_text(raw)
    if text is None:
        return None
    value = _WHITESPACE.sub("", text).upper()
    if not _IBAN_SHAPE.fullmatch(value):
        return None
    expected = _IBAN_LENGTH.get(value[:2])
    if expected is not None and len(value) != expected:
        return None
    # ISO 7064 mod 97-10: move the first four characters to the end, letters become 10..35.
    rearranged = value[4:] + value[:4]
    number = int("".join(str(int(ch, 36)) for ch in rearranged))
    return value if number % 97 == 1 else None


def _postcode(raw: object) -> str | None:
    text = _as_text(raw)
    if text is None:
        return None
    match = _POSTCODE.fullmatch(text.strip().upper())
    if match is None or match["letters"] in _FORBIDDEN_LETTERS:
        return None
    value = f"{match['digits']}{match['letters']}-{match['number']}"
    if match["addition"]:
        value += f"-{match['addition']}"
    return value


def _text(raw: object) -> str | None:
    text = _as_text(raw)
    if text is None:
        return None
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    value = _WHITESPACE.sub(" ", stripped.casefold()).strip()
    return value or None


_NORMALISERS: dict[str, Callable[[object], str | None]] = {
    "kvk": _kvk,
    "person": _person,
    "iban": _iban,
    "postcode": _postcode,
    "text": _text,
}
ID_TYPES: tuple[str, ...] = tuple(_NORMALISERS)


def _normaliser(id_type: str) -> Callable[[object], str | None]:
    try:
        return _NORMALISERS[id_type]
    except (KeyError, TypeError):
        raise IdentifierError(
            f"unknown identifier type {id_type!r}; expected one of {', '.join(ID_TYPES)}"
        ) from None


def normalise(id_type: str, raw: object) -> str | None:
    """Return the canonical form of ``raw`` as an ``id_type``, or ``None`` if it is malformed.

    Raises :class:`IdentifierError` for an unknown ``id_type``.
    """
    return _normaliser(id_type)(raw)


def normalise_many(id_type: str, values: Iterable[object]) -> tuple[list[str], int]:
    """Normalise a column: the canonical values in input order and the number of malformed ones.

    Duplicates are kept; private set intersection removes them itself.
    """
    convert = _normaliser(id_type)
    out: list[str] = []
    malformed = 0
    for raw in values:
        value = convert(raw)
        if value is None:
            malformed += 1
        else:
            out.append(value)
    return out, malformed
