"""Seeded generation of the scenario: one universe of companies and persons, six partners' views.

A small criminal network (cocaine import through Rotterdam, precursors, laundering through front
companies, private flights) is planted so that it shows up at several partners at once.
Generation is vectorised numpy, seeded with ``numpy.random.default_rng``, so a seed always gives
the same data and a million rows per dataset take seconds.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from federation.scenario.datasets import SPECS, DatasetSpec, Scenario
from federation.scenario.errors import ScenarioError
from federation.scenario.vocabulary import (
    AIRPORTS,
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

# Relative weights; normalised where used.
_REGION_W = (0.10, 0.12, 0.10, 0.09, 0.12, 0.11, 0.13, 0.09, 0.09, 0.06)
_SECTOR_W = (0.12, 0.14, 0.15, 0.12, 0.08, 0.07, 0.22, 0.10)
# Yearly growth per phenomenon, for trend questions ("aard en omvang").
_GROWTH = (1.03, 1.08, 1.12, 1.10, 1.35, 1.05, 1.06, 1.04, 1.00, 1.10, 1.05, 1.15)
_SURNAMES = (
    "De Jong", "Jansen", "De Vries", "Van den Berg", "Van Dijk", "Bakker", "Janssen", "Visser", "Smit",
    "Meijer", "De Boer", "Mulder", "De Groot", "Bos", "Vos", "Peters", "Hendriks", "Van Leeuwen",
    "Dekker", "Brouwer", "De Wit", "Dijkstra", "Smits", "De Graaf", "Van der Meer", "Van der Linden",
    "Kok", "Jacobs", "De Haan", "Vermeulen", "Van den Heuvel", "Van der Veen", "Van den Broek",
    "De Bruijn", "De Bruin", "Van der Heijden", "Schouten", "Van Beek", "Willems", "Van Vliet",
    "Van de Ven", "Hoekstra", "Maas", "Verhoeven", "Koster", "Van Dam", "Prins", "Blom", "Huisman",
    "Peeters",
)  # fmt: skip
_TRADE_WORDS = {
    "transport": ("Transport", "Logistiek", "Expeditie", "Koeriers"),
    "wholesale": ("Handelsonderneming", "Import & Export", "Groothandel", "Trading"),
    "construction": ("Bouw", "Aannemersbedrijf", "Installatietechniek", "Sloopwerken"),
    "hospitality": ("Horeca", "Shisha Lounge", "Eethuis", "Hotel"),
    "real_estate": ("Vastgoed", "Onroerend Goed", "Beheer", "Projectontwikkeling"),
    "finance": ("Holding", "Beleggingen", "Trustkantoor", "Financial Services"),
    "retail": ("Telecom", "Autobedrijf", "Kapsalon", "Supermarkt"),
    "agriculture": ("Kwekerij", "Agrarisch Bedrijf", "Loonbedrijf", "Tuinbouw"),
}
# Two-digit starts of KvK numbers: the former chamber codes and the post-2012 range.
_KVK_PREFIXES = (14, 17, 18, 20, 24, 27, 28, 30, 32, 33, 34, 37, 39, 41, 50, 51, 52, 53, 54, 55, 56, 57,
                 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 80,
                 81, 82, 83, 84, 85, 86, 87, 88, 90, 91, 92, 93)  # fmt: skip

NETWORK_COMPANIES = 40
NETWORK_PERSONS = 25
MIN_ROWS = 1000


@dataclass
class _Universe:
    kvk: np.ndarray  # str, one per company
    company_region: np.ndarray  # index into REGIONS
    company_sector: np.ndarray  # index into SECTORS
    company_name: np.ndarray
    person: np.ndarray  # str, one per person
    person_region: np.ndarray
    net_companies: np.ndarray  # indices into kvk
    net_persons: np.ndarray  # indices into person
    bg_companies: np.ndarray  # companies outside the planted network
    bg_persons: np.ndarray


def _p(weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    return w / w.sum()


def _draw(rng: np.random.Generator, weights: Sequence[float], n: int) -> np.ndarray:
    return rng.choice(len(weights), size=n, p=_p(weights))


def _draw_given(rng: np.random.Generator, matrix: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Draw one index per row from ``matrix[given[row]]`` (rows are probability vectors)."""
    cdf = np.cumsum(matrix / matrix.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(given.size)
    idx = (u[:, None] > cdf[given]).sum(axis=1)
    return np.minimum(idx, matrix.shape[1] - 1)


def _years_for(rng: np.random.Generator, phenomenon: np.ndarray) -> np.ndarray:
    """Years following each phenomenon's yearly growth."""
    steps = np.arange(len(YEARS))
    matrix = np.power(np.asarray(_GROWTH)[:, None], steps[None, :])
    return np.asarray(YEARS)[_draw_given(rng, matrix, phenomenon)]


def _dates(rng: np.random.Generator, years: np.ndarray) -> np.ndarray:
    start = (years - 1970).astype("datetime64[Y]").astype("datetime64[D]")
    end = (years - 1969).astype("datetime64[Y]").astype("datetime64[D]")
    length = (end - start).astype(np.int64)
    offset = np.floor(rng.random(years.size) * length).astype(np.int64)
    return np.datetime_as_string(start + offset.astype("timedelta64[D]"), unit="D").astype(object)


def _amounts(
    rng: np.random.Generator, mean_log: np.ndarray | float, sigma: float, hi: int, n: int
) -> np.ndarray:
    return np.round(np.clip(rng.lognormal(mean_log, sigma, n), 0, hi), 2)


def _units(rng: np.random.Generator, pool: np.ndarray, target: int, cap: int) -> np.ndarray:
    """Privacy units for ``~target`` rows, each unit at least once and at most ``cap`` times.

    Activity is skewed (log-normal), as a few importers file most declarations.
    """
    target = max(target, 0)
    size = min(pool.size, target)
    chosen = rng.choice(pool, size=size, replace=False)
    if size == 0:
        return chosen
    activity = rng.lognormal(0.0, 0.7, size)
    lam = activity / activity.mean() * max(target / size - 1.0, 0.0)
    counts = np.minimum(1 + rng.poisson(lam), cap)
    units = np.repeat(chosen, counts)
    rng.shuffle(units)
    return units


def _per_unit(rng: np.random.Generator, units: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Repeat each planted unit between ``lo`` and ``hi`` times."""
    return np.repeat(units, rng.integers(lo, hi + 1, units.size))


def _optional(rng: np.random.Generator, ids: np.ndarray, pool: np.ndarray, share: float) -> np.ndarray:
    """An optional identifier column: ``share`` of the rows get one from ``pool``, the rest None."""
    out = np.full(ids.size, None, dtype=object)
    mask = rng.random(out.size) < share
    out[mask] = rng.choice(pool, size=int(mask.sum()))
    return out


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct integers (a plain sort beats hashing for these sizes)."""
    ordered = np.sort(values)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]


def _universe(seed: int, rows: int) -> _Universe:
    rng = np.random.default_rng(seed)
    n_companies = max(3000, rows * 3 // 5)
    n_persons = max(5000, rows)

    prefix = rng.choice(np.asarray(_KVK_PREFIXES, dtype=np.int64), size=int(n_companies * 1.3))
    raw = _distinct(prefix * 1_000_000 + rng.integers(0, 1_000_000, size=prefix.size))
    kvk = rng.permutation(raw)[:n_companies].astype(str).astype(object)
    if kvk.size < n_companies:  # the draw above leaves a wide margin; this guards the invariant
        raise RuntimeError("could not draw enough distinct KvK numbers")

    company_region = _draw(rng, _REGION_W, n_companies)
    company_sector = _draw(rng, _SECTOR_W, n_companies)

    person_numbers = rng.permutation(_distinct(rng.integers(1, 10_000_000, size=int(n_persons * 1.2))))
    person = np.char.add("P", np.char.zfill(person_numbers[:n_persons].astype(str), 7)).astype(object)
    person_region = _draw(rng, _REGION_W, n_persons)

    net_companies = rng.choice(n_companies, size=NETWORK_COMPANIES, replace=False)
    net_persons = rng.choice(n_persons, size=NETWORK_PERSONS, replace=False)
    # The network operates from the Rotterdam port area, through transport and trade fronts.
    company_region[net_companies] = rng.choice(
        [REGIONS.index(r) for r in ("Rotterdam", "Zeeland-West-Brabant", "Oost-Brabant", "Amsterdam")],
        size=NETWORK_COMPANIES,
        p=[0.6, 0.15, 0.15, 0.1],
    )
    company_sector[net_companies] = rng.choice(
        [SECTORS.index(s) for s in ("transport", "wholesale", "real_estate", "hospitality", "finance")],
        size=NETWORK_COMPANIES,
        p=[0.35, 0.3, 0.15, 0.1, 0.1],
    )
    person_region[net_persons] = rng.choice(
        [REGIONS.index(r) for r in ("Rotterdam", "Zeeland-West-Brabant", "Oost-Brabant")],
        size=NETWORK_PERSONS,
        p=[0.6, 0.2, 0.2],
    )

    surnames = np.asarray(_SURNAMES, dtype=object)[rng.integers(0, len(_SURNAMES), n_companies)]
    words = np.asarray([_TRADE_WORDS[s] for s in SECTORS], dtype=object)
    trade = words[company_sector, rng.integers(0, 4, n_companies)]
    company_name = surnames + " " + trade + " B.V."

    bg_c = np.ones(n_companies, dtype=bool)
    bg_c[net_companies] = False
    bg_p = np.ones(n_persons, dtype=bool)
    bg_p[net_persons] = False
    return _Universe(
        kvk=kvk,
        company_region=company_region,
        company_sector=company_sector,
        company_name=company_name,
        person=person,
        person_region=person_region,
        net_companies=net_companies,
        net_persons=net_persons,
        bg_companies=np.flatnonzero(bg_c),
        bg_persons=np.flatnonzero(bg_p),
    )


def _pool(rng: np.random.Generator, background: np.ndarray, share: float) -> np.ndarray:
    return rng.choice(background, size=max(1, round(share * background.size)), replace=False)


def _concat(rng: np.random.Generator, planted: dict[str, Any], background: dict[str, Any]) -> pd.DataFrame:
    """Mix planted and background rows in a random order."""
    frame = pd.concat([pd.DataFrame(planted), pd.DataFrame(background)], ignore_index=True)
    return frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)


def _idx(values: Sequence[Any], names: Sequence[Any]) -> list[int]:
    return [values.index(n) for n in names]


# --- per-dataset generators --------------------------------------------------------------------

_ORIGIN_GIVEN_GOODS = np.array(
    [
        # CN   BR   CO   EC   US   TR   IN   MA   DE   BE
        [60, 0, 0, 0, 0, 5, 30, 0, 5, 0],  # precursors
        [30, 0, 0, 0, 15, 5, 20, 0, 20, 10],  # chemicals
        [0, 25, 20, 30, 5, 5, 0, 15, 0, 0],  # fruit
        [60, 0, 0, 0, 15, 5, 5, 0, 10, 5],  # electronics
        [25, 0, 0, 0, 20, 5, 5, 0, 35, 10],  # machinery
        [35, 0, 0, 0, 0, 30, 20, 10, 0, 5],  # textiles
        [15, 0, 0, 0, 20, 10, 0, 0, 40, 15],  # vehicles
        [10, 10, 10, 10, 10, 10, 10, 10, 10, 10],  # other
    ],
    dtype=float,
)
_GOODS_MEAN_LOG = np.array([10.5, 10.8, 10.3, 11.2, 11.5, 10.0, 11.3, 9.8])


def _declarations(rng: np.random.Generator, u: _Universe, rows: int) -> pd.DataFrame:
    comp = _per_unit(rng, u.net_companies, 2, 6)
    m = comp.size
    goods = rng.choice(3, size=m, p=[0.5, 0.3, 0.2])  # precursors, chemicals, fruit
    origin = np.where(
        goods < 2,
        rng.choice(_idx(ORIGINS, ("CN", "IN")), size=m, p=[0.7, 0.3]),
        rng.choice(_idx(ORIGINS, ("CO", "EC", "BR")), size=m),
    )
    inspected = (rng.random(m) < 0.6).astype(np.int64)
    years = rng.choice(np.asarray(YEARS[2:]), size=m)
    planted = {
        "company": u.kvk[comp],
        "port": np.where(rng.random(m) < 0.85, 0, rng.choice([2, 3], size=m)),
        "goods_category": goods,
        "origin_country": origin,
        "value": _amounts(rng, 11.8, 0.9, 2_000_000, m),
        "inspected": inspected,
        "seizure": inspected * (rng.random(m) < 0.4),
        "year": years,
    }

    pool = _pool(rng, u.bg_companies, 0.35)
    units = _units(rng, pool, rows - m, cap=25)
    n = units.size
    goods = _draw(rng, (2, 10, 18, 20, 17, 13, 10, 10), n)
    origin = _draw_given(rng, _ORIGIN_GIVEN_GOODS, goods)
    risky_fruit = (goods == 2) & np.isin(origin, _idx(ORIGINS, ("CO", "EC")))
    p_inspect = np.where(goods == 0, 0.35, np.where(risky_fruit, 0.2, np.where(goods == 1, 0.1, 0.05)))
    inspected = (rng.random(n) < p_inspect).astype(np.int64)
    p_seize = np.where(goods == 0, 0.3, np.where(risky_fruit, 0.25, 0.04))
    background = {
        "company": u.kvk[units],
        "port": _draw(rng, (58, 22, 12, 8), n),
        "goods_category": goods,
        "origin_country": origin,
        "value": _amounts(rng, _GOODS_MEAN_LOG[goods], 1.1, 2_000_000, n),
        "inspected": inspected,
        "seizure": inspected * (rng.random(n) < p_seize),
        "year": np.asarray(YEARS)[_draw(rng, (14, 15, 16, 17, 18, 20), n)],
    }
    frame = _concat(rng, planted, background)
    frame["port"] = np.asarray(PORTS, dtype=object)[frame["port"]]
    frame["goods_category"] = np.asarray(GOODS, dtype=object)[frame["goods_category"]]
    frame["origin_country"] = np.asarray(ORIGINS, dtype=object)[frame["origin_country"]]
    frame["seizure"] = frame["seizure"].astype(np.int64)
    frame["date"] = _dates(rng, frame["year"].to_numpy())
    return frame


def _vat_returns(rng: np.random.Generator, u: _Universe, rows: int) -> pd.DataFrame:
    comp = _per_unit(rng, u.net_companies, 2, 5)
    m = comp.size
    planted = {
        "company": comp,
        "turnover": _amounts(rng, 13.5, 0.8, 5_000_000, m),
        "anomaly": (rng.random(m) < 0.85).astype(np.int64),
        "year": rng.choice(np.asarray(YEARS[1:]), size=m),
    }
    pool = _pool(rng, u.bg_companies, 0.9)
    units = _units(rng, pool, rows - m, cap=12)
    n = units.size
    sector = u.company_sector[units]
    # Cash-heavy sectors show more anomalies in practice.
    p_anomaly = np.where(np.isin(sector, _idx(SECTORS, ("hospitality", "real_estate"))), 0.06, 0.025)
    background = {
        "company": units,
        "turnover": _amounts(rng, np.where(sector == SECTORS.index("retail"), 12.0, 12.6), 1.3, 5_000_000, n),
        "anomaly": (rng.random(n) < p_anomaly).astype(np.int64),
        "year": np.asarray(YEARS)[_draw(rng, (15, 16, 16, 17, 18, 18), n)],
    }
    frame = _concat(rng, planted, background)
    comp_idx = frame["company"].to_numpy()
    return pd.DataFrame(
        {
            "company": u.kvk[comp_idx],
            "sector": np.asarray(SECTORS, dtype=object)[u.company_sector[comp_idx]],
            "region": np.asarray(REGIONS, dtype=object)[u.company_region[comp_idx]],
            "turnover": frame["turnover"],
            "anomaly": frame["anomaly"],
            "year": frame["year"],
        }
    )


_INCIDENT_W = (34, 10, 2, 3, 5, 3, 5, 6, 2, 3, 12, 1)
_CASE_W = (30, 14, 3, 4, 5, 4, 6, 7, 3, 4, 8, 1)


def _home_or_random(rng: np.random.Generator, home: np.ndarray, keep: float) -> np.ndarray:
    return np.where(rng.random(home.size) < keep, home, _draw(rng, _REGION_W, home.size))


def _incidents(rng: np.random.Generator, u: _Universe, rows: int) -> pd.DataFrame:
    pers = _per_unit(rng, u.net_persons, 2, 5)
    m = pers.size
    phen = np.where(rng.random(m) < 0.8, 0, 1)
    planted = {
        "person": u.person[pers],
        "company": np.where(rng.random(m) < 0.9, u.kvk[rng.choice(u.net_companies, size=m)], None),
        "unit": rng.choice(
            _idx(REGIONS, ("Rotterdam", "Zeeland-West-Brabant", "Oost-Brabant")), m, p=[0.6, 0.2, 0.2]
        ),
        "phenomenon": phen,
        "year": rng.choice(np.asarray(YEARS[2:]), size=m),
    }
    units = _units(rng, _pool(rng, u.bg_persons, 0.5), rows - m, cap=10)
    n = units.size
    phen = _draw(rng, _INCIDENT_W, n)
    background = {
        "person": u.person[units],
        "company": _optional(rng, units, u.kvk[_pool(rng, u.bg_companies, 0.2)], 0.35),
        "unit": _home_or_random(rng, u.person_region[units], 0.85),
        "phenomenon": phen,
        "year": _years_for(rng, phen),
    }
    frame = _concat(rng, planted, background)
    frame["unit"] = np.asarray(REGIONS, dtype=object)[frame["unit"]]
    frame["phenomenon"] = np.asarray(PHENOMENA, dtype=object)[frame["phenomenon"]]
    frame["date"] = _dates(rng, frame["year"].to_numpy())
    return frame


def _cases(rng: np.random.Generator, u: _Universe, rows: int) -> pd.DataFrame:
    pers = _per_unit(rng, u.net_persons, 1, 3)
    m = pers.size
    planted = {
        "person": u.person[pers],
        "company": np.where(rng.random(m) < 0.8, u.kvk[rng.choice(u.net_companies, size=m)], None),
        "phenomenon": np.where(rng.random(m) < 0.6, 0, 1),
        "status": rng.choice(_idx(STATUSES, ("registered", "summons", "convicted")), m, p=[0.3, 0.4, 0.3]),
        "seized_amount": _amounts(rng, 11.5, 1.0, 1_000_000, m),
        "year": rng.choice(np.asarray(YEARS[2:]), size=m),
    }
    units = _units(rng, _pool(rng, u.bg_persons, 0.4), rows - m, cap=8)
    n = units.size
    phen = _draw(rng, _CASE_W, n)
    seized = np.where(rng.random(n) < 0.4, _amounts(rng, 9.5, 1.5, 1_000_000, n), 0.0)
    background = {
        "person": u.person[units],
        "company": _optional(rng, units, u.kvk[_pool(rng, u.bg_companies, 0.15)], 0.3),
        "phenomenon": phen,
        "status": _draw(rng, (30, 25, 15, 20, 10), n),
        "seized_amount": seized,
        "year": _years_for(rng, phen),
    }
    frame = _concat(rng, planted, background)
    frame["phenomenon"] = np.asarray(PHENOMENA, dtype=object)[frame["phenomenon"]]
    frame["status"] = np.asarray(STATUSES, dtype=object)[frame["status"]]
    return frame


def _investigations(rng: np.random.Generator, u: _Universe, rows: int) -> pd.DataFrame:
    comp = _per_unit(rng, u.net_companies, 1, 3)
    m = comp.size
    planted = {
        "company": comp,
        "fraud_type": rng.choice(3, size=m, p=[0.6, 0.25, 0.15]),  # laundering, TBML, underground banking
        "damage": _amounts(rng, 13.5, 1.0, 10_000_000, m),
        "year": rng.choice(np.asarray(YEARS[2:]), size=m),
    }
    units = _units(rng, _pool(rng, u.bg_companies, 0.45), rows - m, cap=8)
    n = units.size
    fraud = _draw(rng, (35, 12, 10, 15, 13, 15), n)
    background = {
        "company": units,
        "fraud_type": fraud,
        "damage": _amounts(rng, 11.0, 1.5, 10_000_000, n),
        "year": _years_for(rng, np.asarray(_idx(PHENOMENA, FRAUD_TYPES))[fraud]),
    }
    frame = _concat(rng, planted, background)
    comp_idx = frame["company"].to_numpy()
    return pd.DataFrame(
        {
            "company": u.kvk[comp_idx],
            "fraud_type": np.asarray(FRAUD_TYPES, dtype=object)[frame["fraud_type"]],
            "damage": frame["damage"],
            "region": np.asarray(REGIONS, dtype=object)[u.company_region[comp_idx]],
            "year": frame["year"],
        }
    )


_AIRPORT_GIVEN_FLIGHT = np.array([[80, 7, 9, 0, 2, 2], [10, 20, 15, 35, 10, 10]], dtype=float)
_ORIGIN_GIVEN_FLIGHT = np.array(
    [
        # CN  BR  CO  EC  US  TR  IN  MA  DE  BE
        [10, 6, 3, 3, 20, 20, 8, 15, 10, 5],  # commercial
        [2, 5, 3, 2, 8, 10, 0, 10, 30, 30],  # private
    ],
    dtype=float,
)


def _crossings(rng: np.random.Generator, u: _Universe, rows: int) -> pd.DataFrame:
    pers = _per_unit(rng, u.net_persons, 2, 6)
    m = pers.size
    planted = {
        "person": u.person[pers],
        "company": np.where(rng.random(m) < 0.5, u.kvk[rng.choice(u.net_companies, size=m)], None),
        "airport": rng.choice(
            _idx(AIRPORTS, ("Lelystad", "Rotterdam The Hague", "Eindhoven", "Maastricht Aachen")),
            size=m,
            p=[0.4, 0.3, 0.2, 0.1],
        ),
        "origin_country": rng.choice(
            _idx(ORIGINS, ("CO", "BR", "MA", "BE", "TR")), m, p=[0.3, 0.2, 0.2, 0.15, 0.15]
        ),
        "flight_type": np.ones(m, dtype=np.int64),
        "year": rng.choice(np.asarray(YEARS[2:]), size=m),
    }
    units = _units(rng, _pool(rng, u.bg_persons, 0.5), rows - m, cap=15)
    n = units.size
    flight = (rng.random(n) < 0.05).astype(np.int64)
    background = {
        "person": u.person[units],
        "company": _optional(rng, units, u.kvk[_pool(rng, u.bg_companies, 0.1)], 0.08),
        "airport": _draw_given(rng, _AIRPORT_GIVEN_FLIGHT, flight),
        "origin_country": _draw_given(rng, _ORIGIN_GIVEN_FLIGHT, flight),
        "flight_type": flight,
        "year": np.asarray(YEARS)[_draw(rng, (18, 8, 12, 18, 21, 23), n)],  # travel dipped in 2020
    }
    frame = _concat(rng, planted, background)
    frame["airport"] = np.asarray(AIRPORTS, dtype=object)[frame["airport"]]
    frame["origin_country"] = np.asarray(ORIGINS, dtype=object)[frame["origin_country"]]
    frame["flight_type"] = np.asarray(FLIGHT_TYPES, dtype=object)[frame["flight_type"]]
    return frame


# What each partner tends to signal, and what it signals about the planted network.
_SIGNAL_W = {
    # Every phenomenon keeps a share of about 5% or more, so that a question across all six
    # partners (each suppresses its own small cells) still has answers by region.
    "politie": ((25, 8, 5, 5, 5, 5, 7, 7, 5, 5, 13, 5), ("drugs", "front_companies")),
    "om": ((22, 12, 5, 5, 5, 5, 7, 8, 6, 6, 9, 5), ("drugs", "money_laundering")),
    "fiod": ((9, 25, 12, 10, 11, 9, 6, 6, 5, 10, 5, 5), ("money_laundering", "tbml")),
    "douane": ((15, 5, 10, 5, 5, 5, 7, 5, 5, 5, 25, 6), ("risky_transport", "drugs")),
    "belastingdienst": ((9, 10, 8, 6, 7, 14, 17, 16, 5, 9, 5, 5), ("front_companies", "straw_men")),
    "kmar": ((14, 6, 5, 5, 5, 5, 5, 6, 5, 5, 18, 22), ("private_aviation", "risky_transport")),
}


def _signals_frame(node: str, rng: np.random.Generator, u: _Universe, rows: int) -> pd.DataFrame:
    weights, network_topics = _SIGNAL_W[node]
    # Each network company is known to most, not all, partners.
    net = u.net_companies[rng.random(u.net_companies.size) < 0.75]
    comp = _per_unit(rng, net, 1, 2)
    m = comp.size
    planted = {
        "company": comp,
        "phenomenon": rng.choice(_idx(PHENOMENA, network_topics), size=m),
        "region": u.company_region[comp],
        "year": rng.choice(np.asarray(YEARS[2:]), size=m),
    }
    units = _units(rng, _pool(rng, u.bg_companies, 0.4), rows - m, cap=10)
    n = units.size
    phen = _draw(rng, weights, n)
    background = {
        "company": units,
        "phenomenon": phen,
        "region": _home_or_random(rng, u.company_region[units], 0.9),
        "year": _years_for(rng, phen),
    }
    frame = _concat(rng, planted, background)
    return pd.DataFrame(
        {
            "company": u.kvk[frame["company"].to_numpy()],
            "phenomenon": np.asarray(PHENOMENA, dtype=object)[frame["phenomenon"]],
            "region": np.asarray(REGIONS, dtype=object)[frame["region"]],
            "year": frame["year"],
        }
    )


_GENERATORS = {
    "politie.incidents": _incidents,
    "om.cases": _cases,
    "fiod.investigations": _investigations,
    "douane.declarations": _declarations,
    "belastingdienst.vat_returns": _vat_returns,
    "kmar.crossings": _crossings,
}


def _shared_frame(key: str, rng: np.random.Generator, u: _Universe, rows: int) -> pd.DataFrame:
    spec = SPECS[key]
    if spec.name == "signals":
        frame = _signals_frame(spec.node, rng, u, rows)
    else:
        frame = _GENERATORS[key](rng, u, rows)
    frame = frame[[c.name for c in spec.columns]].copy()
    for col in spec.columns:
        if col.kind == "category" and col.domain and isinstance(col.domain[0], int):
            frame[col.name] = frame[col.name].astype(np.int64)
        elif col.kind == "numeric":
            frame[col.name] = frame[col.name].astype(np.float64)
    return frame


def _localise(frame: pd.DataFrame, spec: DatasetSpec, rng: np.random.Generator) -> pd.DataFrame:
    """Rename to local columns and replace shared values by local codes (several codes per value
    where the partner has them, as an SBI sector or an HS chapter has several classes)."""
    out: dict[str, Any] = {}
    for col in spec.columns:
        if col.codes:
            which, seen = pd.factorize(frame[col.name])
            local = np.empty(which.size, dtype=object)
            by_value: dict[Any, list[str]] = {}
            for code, shared in col.codes.items():
                by_value.setdefault(shared, []).append(code)
            for shared, codes in by_value.items():
                hits = np.flatnonzero(seen == shared)
                if hits.size == 0:
                    continue
                mask = which == hits[0]
                pick = rng.integers(0, len(codes), int(mask.sum()))
                local[mask] = np.asarray(codes, dtype=object)[pick]
            out[col.local] = local
        else:
            out[col.local] = frame[col.name].copy()
    return pd.DataFrame(out)


def generate(seed: int = 7, rows: int = 5000, datasets: Collection[str] | None = None) -> Scenario:
    """Generate the scenario for ``seed`` with about ``rows`` rows per dataset.

    ``datasets`` limits generation to some ``"node.dataset"`` keys; every dataset has its own
    random stream, so a dataset is the same whether or not the others are generated.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ScenarioError("seed_nonnegative_int", f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < MIN_ROWS:
        raise ScenarioError("rows_minimum", f"rows must be an integer of at least {MIN_ROWS}, got {rows!r}")
    keys = list(SPECS) if datasets is None else list(dict.fromkeys(datasets))
    for key in keys:
        if key not in SPECS:
            raise ScenarioError("dataset_known", f"unknown dataset {key!r}; known: {', '.join(SPECS)}")

    u = _universe(seed, rows)
    order = list(SPECS)
    frames: dict[str, pd.DataFrame] = {}
    local_frames: dict[str, pd.DataFrame] = {}
    for key in keys:
        rng = np.random.default_rng([seed, order.index(key) + 1])
        frames[key] = _shared_frame(key, rng, u, rows)
        local_frames[key] = _localise(frames[key], SPECS[key], rng)
    return Scenario(
        seed=seed,
        frames=frames,
        local_frames=local_frames,
        network_companies=sorted(u.kvk[u.net_companies].tolist()),
        network_persons=sorted(u.person[u.net_persons].tolist()),
        companies=pd.DataFrame(
            {
                "kvk": u.kvk,
                "name": u.company_name,
                "sector": np.asarray(SECTORS, dtype=object)[u.company_sector],
                "region": np.asarray(REGIONS, dtype=object)[u.company_region],
            }
        ),
        persons=pd.DataFrame(
            {"person": u.person, "region": np.asarray(REGIONS, dtype=object)[u.person_region]}
        ),
    )
