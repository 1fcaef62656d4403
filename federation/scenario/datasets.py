"""Dataset specifications: the datasets each partner serves under the shared vocabulary.

Each column has a shared name and kind (what analysts see) and the partner's local column name
and codes (what the partner stores); the node configs map the local form back to the shared one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from federation.scenario.vocabulary import (
    AIRPORTS,
    CONTROLLERS,
    FLAG,
    FLIGHT_TYPES,
    FRAUD_TYPES,
    GOODS,
    ORIGINS,
    PHENOMENA,
    PORTS,
    REGIONS,
    SECTORS,
    STATUSES,
    YEARS,
)

# --- local codes (local code -> shared value) ----------------------------------------------------

POLITIE_UNIT_CODES = dict(
    zip(("NN", "ON", "MN", "NH", "AM", "DH", "RT", "ZWB", "OB", "LB"), REGIONS, strict=True)
)
BD_REGION_CODES = {f"R{i + 1:02d}": region for i, region in enumerate(REGIONS)}
POLITIE_PHENOMENON_CODES = dict(
    zip(
        ("DRG", "WWT", "HGW", "OBK", "CRY", "VGD", "DMF", "KTV", "COR", "FAC", "RTR", "PLV"),
        PHENOMENA,
        strict=True,
    )
)
OM_PHENOMENON_CODES = dict(
    zip(
        ("OPW", "WW", "WW-HGW", "WW-OB", "WW-CR", "VG", "FRD-DM", "FRD-KV", "AMB", "FAC", "SMK", "LV"),
        PHENOMENA,
        strict=True,
    )
)
OM_STATUS_CODES = {
    "ING": "registered",
    "DAG": "summons",
    "TRA": "settled",
    "SBS": "settled",
    "SEP": "dismissed",
    "VER": "convicted",
}
FIOD_FRAUD_CODES = {
    "WW": "money_laundering",
    "TBML": "tbml",
    "OB": "underground_banking",
    "CRYPTO": "crypto",
    "FAC": "facilitators",
    "VG": "real_estate",
}
PORT_CODES = {"RTM": "Rotterdam", "AMS": "Amsterdam", "VLI": "Vlissingen", "MOE": "Moerdijk"}
# HS chapters and headings; letters keep the codes textual in CSV files.
GOODS_CODES = {
    "HS2914": "precursors",
    "HS2932": "precursors",
    "HS2939": "precursors",
    "HS28": "chemicals",
    "HS29": "chemicals",
    "HS38": "chemicals",
    "HS08": "fruit",
    "HS85": "electronics",
    "HS84": "machinery",
    "HS61": "textiles",
    "HS62": "textiles",
    "HS87": "vehicles",
    "HS99": "other",
}
# SBI 2008 section letter plus class.
SECTOR_CODES = {
    "H4941": "transport",
    "H5210": "transport",
    "H5229": "transport",
    "G4631": "wholesale",
    "G4675": "wholesale",
    "G4690": "wholesale",
    "F4120": "construction",
    "F4399": "construction",
    "I5510": "hospitality",
    "I5610": "hospitality",
    "I5630": "hospitality",
    "L6810": "real_estate",
    "L6820": "real_estate",
    "K6419": "finance",
    "K6420": "finance",
    "K6499": "finance",
    "G4711": "retail",
    "G4719": "retail",
    "A0113": "agriculture",
    "A0119": "agriculture",
}
AIRPORT_CODES = dict(zip(("EHAM", "EHRD", "EHEH", "EHLE", "EHGG", "EHBK"), AIRPORTS, strict=True))
FLIGHT_CODES = {"LIJN": "commercial", "CHARTER": "commercial", "GA": "private"}
YES_NO_CODES = {"J": 1, "N": 0}


@dataclass(frozen=True)
class ColumnSpec:
    """One column: its shared name, the partner's local name and codes, and its public metadata."""

    name: str
    local: str
    kind: str  # category | numeric | date | identifier
    domain: tuple[Any, ...] | None = None
    bounds: tuple[int, int] | None = None
    id_type: str | None = None
    date_range: tuple[str, str] | None = None
    codes: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset as one node serves it."""

    node: str
    name: str
    description: str
    privacy_unit: str
    columns: tuple[ColumnSpec, ...]

    @property
    def key(self) -> str:
        return f"{self.node}.{self.name}"


def _cat(name: str, local: str, domain: Sequence[Any], codes: Mapping[str, Any] | None = None) -> ColumnSpec:
    return ColumnSpec(name, local, "category", domain=tuple(domain), codes=codes)


def _num(name: str, local: str, hi: int) -> ColumnSpec:
    return ColumnSpec(name, local, "numeric", bounds=(0, hi))


def _date(name: str, local: str) -> ColumnSpec:
    return ColumnSpec(name, local, "date", date_range=(f"{YEARS[0]}-01-01", f"{YEARS[-1]}-12-31"))


def _ident(name: str, local: str, id_type: str) -> ColumnSpec:
    return ColumnSpec(name, local, "identifier", id_type=id_type)


def _signals(node: str, company: str, phenomenon: ColumnSpec, region: ColumnSpec, year: str) -> DatasetSpec:
    return DatasetSpec(
        node,
        "signals",
        f"{CONTROLLERS[node]} signals on companies in the shared vocabulary",
        "company",
        (_ident("company", company, "kvk"), phenomenon, region, _cat("year", year, YEARS)),
    )


DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "politie",
        "incidents",
        "Police incidents with the persons and companies involved",
        "person",
        (
            _ident("person", "betrokkene_id", "person"),
            _ident("company", "kvk_nummer", "kvk"),
            _cat("unit", "eenheid", REGIONS, POLITIE_UNIT_CODES),
            _cat("phenomenon", "fenomeen", PHENOMENA, POLITIE_PHENOMENON_CODES),
            _cat("year", "jaar", YEARS),
            _date("date", "pleegdatum"),
        ),
    ),
    _signals(
        "politie",
        "kvk_nummer",
        _cat("phenomenon", "fenomeen", PHENOMENA, POLITIE_PHENOMENON_CODES),
        _cat("region", "eenheid", REGIONS, POLITIE_UNIT_CODES),
        "jaar",
    ),
    DatasetSpec(
        "om",
        "cases",
        "Criminal cases registered by the Public Prosecution Service",
        "person",
        (
            _ident("person", "verdachte_nr", "person"),
            _ident("company", "kvk", "kvk"),
            _cat("phenomenon", "feitcategorie", PHENOMENA, OM_PHENOMENON_CODES),
            _cat("status", "zaakstatus", STATUSES, OM_STATUS_CODES),
            _num("seized_amount", "beslag_bedrag", 1_000_000),
            _cat("year", "instroomjaar", YEARS),
        ),
    ),
    _signals(
        "om",
        "kvk",
        _cat("phenomenon", "feitcategorie", PHENOMENA, OM_PHENOMENON_CODES),
        _cat("region", "arrondissement_regio", REGIONS),
        "instroomjaar",
    ),
    DatasetSpec(
        "fiod",
        "investigations",
        "FIOD criminal investigations into financial crime",
        "company",
        (
            _ident("company", "kvk_nummer", "kvk"),
            _cat("fraud_type", "fraudesoort", FRAUD_TYPES, FIOD_FRAUD_CODES),
            _num("damage", "geschatte_schade", 10_000_000),
            _cat("region", "regio", REGIONS),
            _cat("year", "startjaar", YEARS),
        ),
    ),
    _signals(
        "fiod",
        "kvk_nummer",
        _cat("phenomenon", "fenomeen", PHENOMENA),
        _cat("region", "regio", REGIONS),
        "jaar",
    ),
    DatasetSpec(
        "douane",
        "declarations",
        "Customs import declarations",
        "company",
        (
            _ident("company", "kvk_nummer", "kvk"),
            _cat("port", "haven", PORTS, PORT_CODES),
            _cat("goods_category", "goederencategorie", GOODS, GOODS_CODES),
            _cat("origin_country", "land_herkomst", ORIGINS),
            _num("value", "aangegeven_waarde", 2_000_000),
            _cat("inspected", "gecontroleerd", FLAG),
            _cat("seizure", "inbeslagname", FLAG),
            _cat("year", "jaar", YEARS),
            _date("date", "datum"),
        ),
    ),
    _signals(
        "douane",
        "kvk_nummer",
        _cat("phenomenon", "fenomeen", PHENOMENA),
        _cat("region", "regio", REGIONS),
        "jaar",
    ),
    DatasetSpec(
        "belastingdienst",
        "vat_returns",
        "VAT returns with company sector, region and anomaly flag",
        "company",
        (
            _ident("company", "kvk_nr", "kvk"),
            _cat("sector", "sbi_code", SECTORS, SECTOR_CODES),
            _cat("region", "vestigingsregio", REGIONS, BD_REGION_CODES),
            _num("turnover", "omzet", 5_000_000),
            _cat("anomaly", "afwijking", FLAG, YES_NO_CODES),
            _cat("year", "belastingjaar", YEARS),
        ),
    ),
    _signals(
        "belastingdienst",
        "kvk_nr",
        _cat("phenomenon", "fenomeen", PHENOMENA),
        _cat("region", "vestigingsregio", REGIONS, BD_REGION_CODES),
        "belastingjaar",
    ),
    DatasetSpec(
        "kmar",
        "crossings",
        "Border crossings at airports, including general aviation",
        "person",
        (
            _ident("person", "reiziger_id", "person"),
            _ident("company", "kvk", "kvk"),
            _cat("airport", "luchthaven", AIRPORTS, AIRPORT_CODES),
            _cat("origin_country", "herkomstland", ORIGINS),
            _cat("flight_type", "vluchttype", FLIGHT_TYPES, FLIGHT_CODES),
            _cat("year", "jaar", YEARS),
        ),
    ),
    _signals(
        "kmar",
        "kvk",
        _cat("phenomenon", "fenomeen", PHENOMENA),
        _cat("region", "regio", REGIONS),
        "jaar",
    ),
)
SPECS: dict[str, DatasetSpec] = {spec.key: spec for spec in DATASETS}


# --- scenario ----------------------------------------------------------------------------------


@dataclass
class Scenario:
    """A generated scenario. Keys of ``frames`` and ``local_frames`` are ``"node.dataset"``."""

    seed: int
    frames: dict[str, pd.DataFrame]
    local_frames: dict[str, pd.DataFrame]
    network_companies: list[str]
    network_persons: list[str]
    companies: pd.DataFrame = field(default_factory=pd.DataFrame)  # kvk, name, sector, region
    persons: pd.DataFrame = field(default_factory=pd.DataFrame)  # person, region

    def max_rows_per_unit(self, key: str) -> int:
        """Largest number of rows any privacy unit has in dataset ``key``."""
        frame = self.frames[key]
        if frame.empty:
            return 1
        return int(frame.groupby(SPECS[key].privacy_unit).size().max())
