"""The shared vocabulary of the federation: partners, category domains and their meaning.

Every partner maps its own column names and codes onto these shared values in its node config
(docs/config.md); the synthetic scenario generates them, and docs/vocabulary.md is printed from
this module and the dataset specifications (``python -m federation.scenario.vocabulary_doc``).
"""

from __future__ import annotations

REGIONS = (
    "Noord-Nederland",
    "Oost-Nederland",
    "Midden-Nederland",
    "Noord-Holland",
    "Amsterdam",
    "Den Haag",
    "Rotterdam",
    "Zeeland-West-Brabant",
    "Oost-Brabant",
    "Limburg",
)
PHENOMENA = (
    "drugs",
    "money_laundering",
    "tbml",
    "underground_banking",
    "crypto",
    "real_estate",
    "front_companies",
    "straw_men",
    "corruption",
    "facilitators",
    "risky_transport",
    "private_aviation",
)
YEARS = (2019, 2020, 2021, 2022, 2023, 2024)
PORTS = ("Rotterdam", "Amsterdam", "Vlissingen", "Moerdijk")
GOODS = ("precursors", "chemicals", "fruit", "electronics", "machinery", "textiles", "vehicles", "other")
ORIGINS = ("CN", "BR", "CO", "EC", "US", "TR", "IN", "MA", "DE", "BE")
SECTORS = (
    "transport",
    "wholesale",
    "construction",
    "hospitality",
    "real_estate",
    "finance",
    "retail",
    "agriculture",
)
STATUSES = ("registered", "summons", "settled", "dismissed", "convicted")
FRAUD_TYPES = ("money_laundering", "tbml", "underground_banking", "crypto", "facilitators", "real_estate")
AIRPORTS = (
    "Schiphol",
    "Rotterdam The Hague",
    "Eindhoven",
    "Lelystad",
    "Groningen Eelde",
    "Maastricht Aachen",
)
FLIGHT_TYPES = ("commercial", "private")
FLAG = (0, 1)

NODES = ("politie", "om", "fiod", "douane", "belastingdienst", "kmar")
CONTROLLERS = {
    "politie": "Politie",
    "om": "Openbaar Ministerie",
    "fiod": "FIOD",
    "douane": "Douane",
    "belastingdienst": "Belastingdienst",
    "kmar": "Koninklijke Marechaussee",
}

# Domain name -> (values, what they mean); docs/vocabulary.md lists them in this order.
DOMAINS: dict[str, tuple[tuple[object, ...], str]] = {
    "region": (
        REGIONS,
        "the ten regional units of the national police; every partner's regions map onto them",
    ),
    "phenomenon": (PHENOMENA, "phenomena of undermining crime and their facilitators"),
    "year": (YEARS, "calendar year of registration"),
    "port": (PORTS, "seaports of entry"),
    "goods_category": (GOODS, "customs goods categories"),
    "origin_country": (ORIGINS, "ISO 3166-1 alpha-2 country of origin"),
    "sector": (SECTORS, "economic sector of a company (grouped SBI sections)"),
    "status": (STATUSES, "stage of a criminal case"),
    "fraud_type": (FRAUD_TYPES, "kind of financial crime investigated"),
    "airport": (AIRPORTS, "airports with border control"),
    "flight_type": (FLIGHT_TYPES, "commercial (scheduled or charter) or private (general aviation)"),
    "flag": (FLAG, "a yes/no flag: 1 yes, 0 no"),
}
