"""The synthetic MIT scenario: determinism, vocabulary, planted network and the written configs."""

from __future__ import annotations

import os
import re
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from federation import scenario as demo_data
from federation.scenario import (
    SPECS,
    Scenario,
    ScenarioError,
    generate,
    ground_truth_overlap,
    node_configs,
    postgres_available,
    write_scenario,
)

ROWS = 1500
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return generate(7, ROWS)


@pytest.fixture(scope="module")
def configs(scenario: Scenario) -> dict[str, dict[str, Any]]:
    return {name: tomllib.loads(text) for name, text in node_configs(scenario).items()}


def _dataset_configs(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{name}.{ds['name']}": ds
        for name, cfg in configs.items()
        if name != "coordinator"
        for ds in cfg["datasets"]
    }


def _to_shared(local: pd.DataFrame, ds: dict[str, Any]) -> pd.DataFrame:
    """What a node does with its rows: local names and codes to the shared vocabulary."""
    out = {}
    for col in ds["columns"]:
        values = local[col["local"]]
        if "codes" in col:
            values = values.map(col["codes"])
        if col["kind"] == "category" and isinstance(col["domain"][0], int):
            values = values.astype(np.int64)
        out[col["name"]] = values
    return pd.DataFrame(out)


def _frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    # String columns may be object or pandas str; missing values None or NaN. Values must match.
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False)


def _read_source(config_path: Path, ds: dict[str, Any]) -> pd.DataFrame:
    src = ds["source"]
    path = config_path.parent / src["path"]
    if src["kind"] == "csv":
        text_cols = {
            c["local"]: str
            for c in ds["columns"]
            if c["kind"] in ("identifier", "date")
            or (c["kind"] == "category" and isinstance(c["domain"][0], str))
        }
        return pd.read_csv(path, dtype=text_cols)
    return pd.read_parquet(path)


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_same_scenario(scenario: Scenario) -> None:
    again = generate(7, ROWS)
    assert again.frames.keys() == scenario.frames.keys()
    for key in scenario.frames:
        pd.testing.assert_frame_equal(again.frames[key], scenario.frames[key])
        pd.testing.assert_frame_equal(again.local_frames[key], scenario.local_frames[key])
    assert again.network_companies == scenario.network_companies
    assert again.network_persons == scenario.network_persons


def test_other_seed_gives_other_scenario(scenario: Scenario) -> None:
    other = generate(8, ROWS)
    assert other.network_companies != scenario.network_companies
    for key in scenario.frames:
        assert not other.frames[key].equals(scenario.frames[key]), key


def test_one_dataset_alone_equals_it_within_the_whole(scenario: Scenario) -> None:
    alone = generate(7, ROWS, datasets=["fiod.investigations"])
    assert list(alone.frames) == ["fiod.investigations"]
    pd.testing.assert_frame_equal(alone.frames["fiod.investigations"], scenario.frames["fiod.investigations"])


def test_rows_per_dataset_near_the_request(scenario: Scenario) -> None:
    for key, frame in scenario.frames.items():
        assert 0.8 * ROWS <= len(frame) <= 1.1 * ROWS, (key, len(frame))


def test_default_size_is_fast() -> None:
    started = time.perf_counter()
    s = generate(7, 5000)
    assert time.perf_counter() - started < 3.0
    assert sum(len(f) for f in s.frames.values()) > 12 * 4000


# --- identifiers and domains -------------------------------------------------------------------


def test_kvk_numbers_are_eight_digit_and_unique(scenario: Scenario) -> None:
    kvk = scenario.companies["kvk"]
    assert kvk.is_unique and len(kvk) >= 3000
    assert kvk.str.fullmatch(r"[1-9]\d{7}").all()
    known = set(kvk)
    for key, frame in scenario.frames.items():
        ids = frame["company"].dropna() if "company" in frame else pd.Series([], dtype=str)
        assert ids.map(lambda v: isinstance(v, str) and re.fullmatch(r"\d{8}", v) is not None).all(), key
        assert set(ids) <= known, key
    assert scenario.companies["name"].str.endswith(" B.V.").all()


def test_person_ids_are_pseudonyms(scenario: Scenario) -> None:
    persons = scenario.persons["person"]
    assert persons.is_unique and len(persons) >= 5000
    assert persons.str.fullmatch(r"P\d{7}").all()
    for key in ("politie.incidents", "om.cases", "kmar.crossings"):
        assert set(scenario.frames[key]["person"]) <= set(persons), key


def test_values_stay_in_declared_domains(scenario: Scenario) -> None:
    for key, spec in SPECS.items():
        frame = scenario.frames[key]
        assert list(frame.columns) == [c.name for c in spec.columns], key
        for col in spec.columns:
            values = frame[col.name]
            if not (col.kind == "identifier" and col.name != spec.privacy_unit):
                assert values.notna().all(), (key, col.name)
            if col.kind == "category":
                assert set(values.unique()) <= set(col.domain), (key, col.name)
            elif col.kind == "numeric":
                assert values.between(*col.bounds).all(), (key, col.name)
            elif col.kind == "date":
                assert values.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all(), key
                assert (pd.to_datetime(values).dt.year == frame["year"]).all(), key


def test_shared_vocabulary_is_the_agreed_one() -> None:
    assert len(demo_data.REGIONS) == 10 and "Zeeland-West-Brabant" in demo_data.REGIONS
    assert len(demo_data.PHENOMENA) == 12 and {"tbml", "straw_men", "private_aviation"} <= set(
        demo_data.PHENOMENA
    )
    assert set(demo_data.FRAUD_TYPES) <= set(demo_data.PHENOMENA)
    assert demo_data.YEARS == tuple(range(2019, 2025))
    assert {key.split(".")[0] for key in SPECS} == set(demo_data.NODES)
    assert all(f"{node}.signals" in SPECS for node in demo_data.NODES)


# --- planted network ---------------------------------------------------------------------------


def test_planted_network_shows_up_at_three_partners_or_more(scenario: Scenario) -> None:
    assert 35 <= len(scenario.network_companies) <= 45
    assert 20 <= len(scenario.network_persons) <= 30
    for on, members in (("company", scenario.network_companies), ("person", scenario.network_persons)):
        partners: dict[str, set[str]] = {m: set() for m in members}
        for key, frame in scenario.frames.items():
            if on in frame:
                for m in set(frame[on].dropna()) & partners.keys():
                    partners[m].add(key.split(".")[0])
        assert min(len(p) for p in partners.values()) >= 3, on


def test_the_three_partner_question_finds_the_network(scenario: Scenario) -> None:
    f = scenario.frames
    d = f["douane.declarations"]
    flagged = set(
        d.loc[(d.port == "Rotterdam") & d.goods_category.isin(["precursors", "chemicals"]), "company"]
    )
    v = f["belastingdienst.vat_returns"]
    anomalous = set(v.loc[v.anomaly == 1, "company"])
    i = f["politie.incidents"]
    drugs = set(i.loc[i.phenomenon == "drugs", "company"].dropna())
    hits = flagged & anomalous & drugs
    network = set(scenario.network_companies)
    assert len(hits & network) >= 20
    assert len(hits - network) <= len(hits & network) // 4  # the background hardly matches all three
    seized = d.loc[d.company.isin(network) & (d.seizure == 1)]
    assert len(seized) > 0 and (d.seizure <= d.inspected).all()
    k = f["kmar.crossings"]
    private = set(k.loc[k.flight_type == "private", "person"])
    assert set(scenario.network_persons) <= private
    assert set(f["fiod.investigations"].company) >= network


def test_ground_truth_overlap_matches_plain_sets(scenario: Scenario) -> None:
    keys = ["douane.declarations", "belastingdienst.vat_returns", "politie.incidents"]
    got = ground_truth_overlap(scenario, "company", keys)
    sets = {k: set(scenario.frames[k]["company"].dropna()) for k in keys}
    union = set().union(*sets.values())
    expected: dict[frozenset[str], int] = {}
    for entity in union:
        pattern = frozenset(k for k in keys if entity in sets[k])
        expected[pattern] = expected.get(pattern, 0) + 1
    assert got == expected
    assert sum(got.values()) == len(union)
    assert got[frozenset(keys)] >= 20


# --- group sizes -------------------------------------------------------------------------------


def _units_per_cell(frame: pd.DataFrame, by: list[str], unit: str) -> pd.Series:
    return frame.groupby(by)[unit].nunique()


def test_common_groupings_clear_the_minimum_and_small_cells_exist() -> None:
    s = generate(7, 5000)
    f = s.frames
    assert _units_per_cell(f["douane.declarations"], ["port"], "company").min() >= 10
    assert _units_per_cell(f["belastingdienst.vat_returns"], ["region"], "company").min() >= 10
    assert _units_per_cell(f["fiod.investigations"], ["fraud_type", "year"], "company").min() >= 10
    trend = _units_per_cell(f["politie.incidents"], ["phenomenon", "year"], "person")
    assert (trend >= 10).mean() > 0.8 and (trend < 10).any()
    fine = _units_per_cell(f["politie.signals"], ["region", "phenomenon", "year"], "company")
    assert (fine < 10).any() and (fine >= 10).any()
    # A cell of a question to all six partners is released only if every partner can release it.
    for node in demo_data.NODES:
        signals = f[f"{node}.signals"]
        drugs = _units_per_cell(signals[signals.phenomenon == "drugs"], ["region"], "company")
        assert len(drugs) == 10 and drugs.min() >= 10, node


# --- configs -----------------------------------------------------------------------------------


def test_configs_follow_the_reference_layout(configs: dict[str, dict[str, Any]]) -> None:
    assert set(configs) == {"coordinator", *demo_data.NODES}
    coord = configs["coordinator"]["coordinator"]
    assert coord["listen"] == "127.0.0.1:7100" and coord["state_dir"] == "state/coordinator"
    for node in demo_data.NODES:
        cfg = configs[node]
        assert cfg["node"] == {
            "id": node,
            "coordinator": "127.0.0.1:7100",
            "state_dir": f"../state/{node}",
            "heartbeat_seconds": 5,
        }
        assert cfg["policy"]["min_group_size"] == 10
        assert cfg["policy"]["operations"] == [
            "count",
            "count_distinct",
            "sum",
            "avg",
            "variance",
            "percentile",
        ]
        for ds in cfg["datasets"]:
            assert ds["exposed"] is True and ds["controller"]
            names = [c["name"] for c in ds["columns"]]
            assert ds["privacy_unit"] in names
            for col in ds["columns"]:
                if "codes" in col:
                    assert set(col["codes"].values()) == set(col["domain"]), (node, col["name"])


def test_local_frames_map_back_to_shared_frames(
    scenario: Scenario, configs: dict[str, dict[str, Any]]
) -> None:
    datasets = _dataset_configs(configs)
    assert set(datasets) == set(scenario.frames)
    for key, ds in datasets.items():
        local = scenario.local_frames[key]
        assert list(local.columns) == [c["local"] for c in ds["columns"]], key
        _frames_equal(_to_shared(local, ds), scenario.frames[key])


def test_partners_use_their_own_names_and_codes(scenario: Scenario) -> None:
    local = scenario.local_frames
    assert set(local["douane.declarations"]["haven"]) == {"RTM", "AMS", "VLI", "MOE"}
    assert set(local["politie.incidents"]["eenheid"]) <= set(demo_data.POLITIE_UNIT_CODES)
    assert set(local["belastingdienst.vat_returns"]["afwijking"]) == {"J", "N"}
    assert local["belastingdienst.vat_returns"]["sbi_code"].str.fullmatch(r"[A-Z]\d{4}").all()
    # The same shared term is stored differently by different partners.
    assert "fenomeen" in local["politie.incidents"] and "feitcategorie" in local["om.cases"]


def test_max_rows_per_unit_is_honest(scenario: Scenario, configs: dict[str, dict[str, Any]]) -> None:
    for key, ds in _dataset_configs(configs).items():
        unit_local = next(c["local"] for c in ds["columns"] if c["name"] == ds["privacy_unit"])
        per_unit = scenario.local_frames[key].groupby(unit_local).size()
        assert per_unit.max() == ds["max_rows_per_unit"], key  # never exceeded, and tight


def test_written_files_round_trip(tmp_path: Path) -> None:
    paths = write_scenario(
        tmp_path, seed=5, rows=1000, coordinator="10.0.0.1:7200", formats={"douane": "parquet"}
    )
    s = generate(5, 1000)
    assert set(paths) == {"coordinator", *demo_data.NODES}
    assert paths["coordinator"] == tmp_path / "coordinator.toml"
    assert tomllib.loads(paths["coordinator"].read_text())["coordinator"]["listen"] == "10.0.0.1:7200"
    kinds = {}
    for node in demo_data.NODES:
        assert paths[node] == tmp_path / "nodes" / f"{node}.toml"
        cfg = tomllib.loads(paths[node].read_text())
        assert (paths[node].parent / cfg["node"]["state_dir"]).resolve() == (
            tmp_path / "state" / node
        ).resolve()
        for ds in cfg["datasets"]:
            key = f"{node}.{ds['name']}"
            kinds[key] = ds["source"]["kind"]
            local = _read_source(paths[node], ds)
            _frames_equal(local, s.local_frames[key])
            _frames_equal(_to_shared(local, ds), s.frames[key])
    assert kinds["politie.incidents"] == "csv" and kinds["kmar.crossings"] == "csv"
    assert kinds["douane.declarations"] == "parquet" and kinds["om.cases"] == "parquet"
    assert kinds["belastingdienst.vat_returns"] == "parquet"  # no PostgreSQL DSN given


def test_configs_round_trip_awkward_strings(scenario: Scenario) -> None:
    dsn = 'postgresql://u@h/db?application_name=say "hi"\\C:\\x\na\tb Curaçao ✓ x\x7fy'
    texts = node_configs(scenario, formats={"belastingdienst": "postgres"}, postgres_dsn=dsn)
    cfg = tomllib.loads(texts["belastingdienst"])
    assert {d["source"]["dsn"] for d in cfg["datasets"]} == {dsn}


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "rule"),
    [
        (lambda: generate(7, 10), "rows_minimum"),
        (lambda: generate(-1, 2000), "seed_nonnegative_int"),
        (lambda: generate(7, 2000, datasets=["douane.parcels"]), "dataset_known"),
        (lambda: write_scenario(Path("/nonexistent"), formats={"rivm": "csv"}), "node_known"),
        (lambda: write_scenario(Path("/nonexistent"), formats={"om": "xlsx"}), "format_known"),
        (lambda: write_scenario(Path("/nonexistent"), pg_schema="x; drop"), "pg_schema_identifier"),
        (lambda: write_scenario(Path("/nonexistent"), coordinator="nohost"), "coordinator_address"),
        (
            lambda: write_scenario(Path("/nonexistent"), formats={"belastingdienst": "postgres"}),
            "postgres_reachable",
        ),
    ],
)
def test_bad_input_names_the_rule(call: Any, rule: str) -> None:
    with pytest.raises(ScenarioError) as info:
        call()
    assert info.value.rule == rule
    assert "\n" not in str(info.value)


def test_bad_overlap_requests_name_the_rule(scenario: Scenario) -> None:
    for on, keys, rule in (
        ("iban", ["om.cases"], "overlap_column"),
        ("person", ["douane.declarations"], "overlap_column"),
        ("company", ["douane.parcels"], "dataset_known"),
        ("company", [], "datasets_nonempty"),
    ):
        with pytest.raises(ScenarioError) as info:
            ground_truth_overlap(scenario, on, keys)
        assert info.value.rule == rule


def test_unreachable_postgres_is_reported_not_raised() -> None:
    assert postgres_available("postgresql://postgres@127.0.0.1:1/none", timeout=1) is False
    assert postgres_available("not a dsn at all", timeout=1) is False


# --- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture
def pg_dsn() -> str:
    dsn = os.environ.get("FEDERATION_TEST_PG") or os.environ.get("FEDERATION_DEMO_PG") or DEFAULT_PG
    if not postgres_available(dsn):
        message = f"PostgreSQL not reachable at {dsn}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI requires it")
        pytest.skip(f"{message} (set FEDERATION_TEST_PG to a reachable server to run this test)")
    return dsn


@pytest.mark.postgres
def test_postgres_round_trip(tmp_path: Path, pg_dsn: str) -> None:
    import psycopg
    from psycopg import sql

    schema = f"demo_test_{uuid.uuid4().hex[:12]}"
    try:
        paths = write_scenario(tmp_path, seed=3, rows=1000, postgres_dsn=pg_dsn, pg_schema=schema)
        s = generate(3, 1000)
        cfg = tomllib.loads(paths["belastingdienst"].read_text())
        sources = {ds["name"]: ds for ds in cfg["datasets"]}
        vat = sources["vat_returns"]
        assert vat["source"] == {
            "kind": "postgres",
            "dsn": pg_dsn,
            "table": f"{schema}.belastingdienst_vat_returns",
        }
        assert not (tmp_path / "data" / "belastingdienst").exists()
        for name, ds in sources.items():
            key = f"belastingdienst.{name}"
            table_schema, table = ds["source"]["table"].split(".")
            cols = [c["local"] for c in ds["columns"]]
            with psycopg.connect(pg_dsn) as conn:
                rows = conn.execute(
                    sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
                        sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(table_schema, table)
                    )
                ).fetchall()
            loaded = pd.DataFrame(rows, columns=cols)
            expected = s.local_frames[key].sort_values(cols[0], kind="stable")
            assert len(loaded) == len(expected)
            _frames_equal(
                loaded.sort_values(cols).reset_index(drop=True),
                expected.sort_values(cols).reset_index(drop=True),
            )
            pooled = _to_shared(loaded, ds).sort_values(list(s.frames[key].columns)).reset_index(drop=True)
            truth = s.frames[key].sort_values(list(s.frames[key].columns)).reset_index(drop=True)
            _frames_equal(pooled, truth)
        # Writing again replaces the tables instead of appending to them.
        write_scenario(tmp_path, seed=3, rows=1000, postgres_dsn=pg_dsn, pg_schema=schema)
        with psycopg.connect(pg_dsn) as conn:
            count = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(
                    sql.Identifier(schema, "belastingdienst_vat_returns")
                )
            ).fetchone()
        assert count is not None and count[0] == len(s.frames["belastingdienst.vat_returns"])
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
