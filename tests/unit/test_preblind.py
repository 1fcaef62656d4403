"""The overlap offline phase at a node: pre-blinded sets over real DuckDB data, one per job."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import nacl.bindings as sodium
import pandas as pd
import pytest

from nodes.config import ConfigError, load_node_config
from nodes.overlap import _select_ids
from nodes.preblind import PreBlinder
from nodes.sources import DataSources
from protocols.identifiers import normalise_many
from protocols.psi import PsiParty, hash_to_group

KEY = ("declarations", "company")


@pytest.fixture()
def node(tmp_path: Path, customs, declarations: pd.DataFrame):  # type: ignore[no-untyped-def]
    config = load_node_config(
        customs.write_csv_node(tmp_path, declarations, dataset_policy='overlap_columns = ["company"]')
    )
    sources = DataSources(config)
    yield config, sources
    sources.close()


def _select(sources: DataSources):  # type: ignore[no-untyped-def]
    return lambda dataset, column: _select_ids(sources, dataset, dataset.columns[column], None, 1)


def test_offline_phase_blinds_every_valid_identifier_of_the_column(node, declarations) -> None:  # type: ignore[no-untyped-def]
    config, sources = node
    expected, _ = normalise_many("kvk", declarations["kvk_nummer"].dropna().unique())
    pre = PreBlinder(config, _select(sources))
    assert pre.columns() == [KEY]
    pre.start()
    try:
        assert pre.wait_ready(30), "the offline phase did not finish"
        assert pre.ready() == {KEY: len(set(expected))}
        taken = pre.take(*KEY)
        assert taken is not None and set(taken.tokens) == set(expected)
        # The set is H(x)^k for the key it hands to the job.
        party = PsiParty("douane.declarations", "job-1", prepared=taken)
        own = party.blind_own(sorted(set(expected)))
        by_hand = [sodium.crypto_scalarmult(taken.key, p) for p in hash_to_group(sorted(set(expected)))]
        assert sorted(own) == sorted(by_hand)
        # Handed out once; a fresh set with a fresh key follows.
        assert pre.wait_ready(30)
        again = pre.take(*KEY)
        assert again is not None and again.key != taken.key
        assert set(again.tokens.values()).isdisjoint(taken.tokens.values())
    finally:
        pre.close()


def test_refill_waits_until_no_overlap_job_runs(node) -> None:  # type: ignore[no-untyped-def]
    config, sources = node
    busy = threading.Event()
    pre = PreBlinder(config, _select(sources), busy=busy.is_set)
    busy.set()
    pre.start()
    try:
        time.sleep(1.0)
        assert pre.ready() == {}, "the offline phase ran while a job was busy"
        busy.clear()
        assert pre.wait_ready(30)
    finally:
        pre.close()


def test_offline_phase_can_be_turned_off_and_respects_the_set_bound(
    tmp_path: Path, customs, declarations
) -> None:  # type: ignore[no-untyped-def]
    off = customs.write_csv_node(
        tmp_path / "off",
        declarations,
        dataset_policy='overlap_columns = ["company"]\noverlap_preblind = false',
    )
    assert PreBlinder(load_node_config(off), lambda d, c: []).columns() == []
    small = load_node_config(
        customs.write_csv_node(
            tmp_path / "small",
            declarations,
            dataset_policy='overlap_columns = ["company"]\noverlap_min_set = 1\noverlap_max_set = 2',
        )
    )
    sources = DataSources(small)
    pre = PreBlinder(small, _select(sources))
    pre.start()
    try:
        assert not pre.wait_ready(1.5), "a column above overlap_max_set is not pre-blinded"
    finally:
        pre.close()
        sources.close()
    bad = customs.write_csv_node(tmp_path / "bad", declarations, dataset_policy='overlap_preblind = "yes"')
    with pytest.raises(ConfigError, match="overlap_preblind must be true or false"):
        load_node_config(bad)


def test_node_reads_at_most_one_value_over_the_bound(tmp_path: Path, customs, declarations) -> None:  # type: ignore[no-untyped-def]
    from nodes.context import NodeContext
    from nodes.overlap import OverlapNode

    distinct = declarations["kvk_nummer"].dropna().nunique()
    for bound, expected in ((3, 4), (distinct + 5, distinct)):
        folder = tmp_path / str(bound)
        config = load_node_config(
            customs.write_csv_node(
                folder,
                declarations,
                dataset_policy=f'overlap_columns = ["company"]\noverlap_min_set = 1\noverlap_max_set = {bound}',
            )
        )
        ctx = NodeContext.open(config)
        try:
            node = OverlapNode(ctx)
            dataset = config.datasets["declarations"]
            assert len(node._all_ids(dataset, "company")) == expected
            node.preblinder.start()
            # Above the bound the column is skipped; within it, it is pre-blinded.
            assert node.preblinder.wait_ready(1.5 if bound == 3 else 30) is (bound != 3)
            node.preblinder.close()
        finally:
            ctx.close()
