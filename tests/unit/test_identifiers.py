"""Identifier normalisation: canonical forms, malformed values and the IBAN check."""

from __future__ import annotations

import pytest

from protocols.identifiers import ID_TYPES, IdentifierError, normalise, normalise_many


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12345678", "12345678"),
        (" 1234 5678 ", "12345678"),
        ("12.34.56.78", "12345678"),
        (1234567, "01234567"),
        ("1234567", None),
        ("123456789", None),
        ("1234567a", None),
        ("", None),
        (None, None),
        (float("nan"), None),
        (123456789, None),
        (True, None),
    ],
)
def test_kvk(raw: object, expected: str | None) -> None:
    assert normalise("kvk", raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("  p-00042 ", "P-00042"), ("abc", "ABC"), ("   ", None), (None, None), (42, "42")],
)
def test_person(raw: object, expected: str | None) -> None:
    assert normalise("person", raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("NL91 ABNA 0417 1643 00", "NL91ABNA0417164300"),
        ("nl91abna0417164300", "NL91ABNA0417164300"),
        ("GB82 WEST 1234 5698 7654 32", "GB82WEST12345698765432"),
        ("DE89 3704 0044 0532 0130 00", "DE89370400440532013000"),
        ("BE68 5390 0754 7034", "BE68539007547034"),
        # One digit changed: the mod-97 check fails.
        ("NL91ABNA0417164301", None),
        # Check digits swapped.
        ("NL19ABNA0417164300", None),
        # Right checksum shape but wrong length for NL.
        ("NL91ABNA041716430", None),
        ("NL91-ABNA-0417-1643-00", None),
        ("", None),
        (None, None),
    ],
)
def test_iban(raw: object, expected: str | None) -> None:
    assert normalise("iban", raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1234 AB 12", "1234AB-12"),
        ("1234ab12", "1234AB-12"),
        ("  1234-ab, 12 ", "1234AB-12"),
        ("1234 AB 12a", "1234AB-12-A"),
        ("1234 AB 12-A", "1234AB-12-A"),
        ("1234 AB 12 bis", "1234AB-12-BIS"),
        ("0234 AB 12", None),
        ("1234 SA 12", None),
        ("1234 A 12", None),
        ("1234 AB", None),
        ("1234 AB 0", None),
        (None, None),
    ],
)
def test_postcode(raw: object, expected: str | None) -> None:
    assert normalise("postcode", raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Café   de  Flore ", "cafe de flore"),
        ("JOSÉ\tÁlvarez", "jose alvarez"),
        ("Straße", "strasse"),
        ("Ĳsselmeer", "ijsselmeer"),
        (" \n ", None),
        (None, None),
    ],
)
def test_text(raw: object, expected: str | None) -> None:
    assert normalise("text", raw) == expected


def test_normalise_many_counts_malformed_and_keeps_order() -> None:
    values, malformed = normalise_many("kvk", ["1234 5678", "bad", None, "87654321", "12345678"])
    assert values == ["12345678", "87654321", "12345678"]
    assert malformed == 2


def test_normalise_many_iban() -> None:
    values, malformed = normalise_many("iban", ["NL91ABNA0417164300", "NL91ABNA0417164301"])
    assert values == ["NL91ABNA0417164300"]
    assert malformed == 1


def test_unknown_type_names_the_rule() -> None:
    with pytest.raises(IdentifierError) as info:
        normalise("bsn", "123")
    assert info.value.rule == "identifier_type"
    assert "bsn" in str(info.value)
    with pytest.raises(IdentifierError):
        normalise_many("passport", [])


def test_every_type_has_a_canonical_fixed_point() -> None:
    samples = {
        "kvk": "1234 5678",
        "person": " x1 ",
        "iban": "nl91 abna 0417 1643 00",
        "postcode": "1234 ab 12",
        "text": "Ëén  Twee",
    }
    assert set(samples) == set(ID_TYPES)
    for id_type, raw in samples.items():
        once = normalise(id_type, raw)
        assert once is not None
        assert normalise(id_type, once) == once
