"""Utility of federated DP answers against central DP on the pooled rows, in the same run.

    python -m bench.bench_utility [--runs 1000] [--error-runs 300] [--real 20] [--seed 3]
                                  [--parts central,node,plain,secure,median,distinct,real]

Scenario: six partners, seven countries; at every partner every country has 30-400 accounts
(drawn from one pool per country, so partners share accounts), 1-3 rows per account at a partner
(``max_rows_per_unit = 3``), amounts clamped to the declared bounds [0, 10000]. Every query runs
at epsilon 1.

* Central baseline: OpenDP's Context API on the pooled rows in this process, with the same
  neighbouring relation as each node's (one account's rows at one partner, at most 3) and the
  same split of epsilon over the measurements; public group keys, so nothing is suppressed.
* Federated, in process: each node's real ``protect`` on its exact aggregates (DuckDB), combined
  by the coordinator's real ``combine`` (plain, local DP), or each node's secure noise share
  (``add_noise``) summed and assembled as the coordinator does (secure; the SecAgg masks cancel
  in the sum, so they are left out here). ``--runs`` repetitions.
* Federated, real processes: a coordinator and six nodes over gRPC, ``--real`` plain queries and a
  few secure ones, for the share released and the interval coverage.

Figures: share of groups released, median relative error of COUNT and SUM per group (ratio to
the central baseline's; SUM also with the clamp tightened per query to [0, 6000], on both sides),
and 95% interval coverage of COUNT, SUM and AVG; of MEDIAN (plain: the secure path has no
percentiles); and the median relative error of the union COUNT(DISTINCT account) across the six
partners (real PSI union in process, the coordinator's one OpenDP noise) against the central
baseline's count of distinct accounts. ``--parts`` runs a subset, for long runs in pieces.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import opendp.prelude as dp
import pandas as pd

from bench.signals import local_federation
from coordinator.combine import combine
from coordinator.distinct import UnionAnswer
from coordinator.secure_query import assemble, secagg_parameters
from federation.client import Client
from federation.processes import free_port
from federation.query import parse_query
from federation.scenario import coordinator_config
from nodes.config import NodeConfig, load_node_config
from nodes.protect import Budget, exact_columns, protect
from nodes.release import compute
from nodes.secure_release import add_noise, exact_blocks, reuses_count
from nodes.sources import DataSources
from nodes.validate import Plan, validate
from privacy.distinct import groups_per_unit, union_noise
from privacy.distributed import secure_rho
from privacy.dp import release_counts
from privacy.suppression import ThresholdNoise, combined_threshold
from protocols import federation_pb2 as pb
from protocols.psi_union import run_union_in_memory
from protocols.values import from_value, to_value

dp.enable_features("contrib")

PARTNERS = ["douane", "belastingdienst", "politie", "om", "fiod", "kmar"]
COUNTRIES = ["NL", "BE", "DE", "FR", "GB", "ES", "IT"]
POOL = 600  # accounts per country that partners draw from: most accounts are at several partners
ROWS_PER_UNIT = 3
UPPER = 10_000.0
EPSILON = 1.0

COUNT_SQL = "SELECT country, COUNT(*) AS n FROM accounts GROUP BY country"
SUM_SQL = "SELECT country, COUNT(*) AS n, SUM(amount) AS total FROM accounts GROUP BY country"
# The analyst tightens the clamp within the declared bounds for this query (per-query bounds).
TIGHT = 6000.0
TIGHT_SQL = (
    f"SELECT country, COUNT(*) AS n, SUM(LEAST(GREATEST(amount, 0), {TIGHT:g})) AS total FROM accounts "
    "GROUP BY country"
)
ALL_SQL = (
    "SELECT country, COUNT(*) AS n, SUM(amount) AS total, AVG(amount) AS mean FROM accounts GROUP BY country"
)
MEDIAN_SQL = "SELECT country, MEDIAN(amount) AS med FROM accounts GROUP BY country"
DISTINCT_SQL = "SELECT country, COUNT(DISTINCT account) AS accounts FROM accounts GROUP BY country"
PARTS = ("central", "node", "plain", "secure", "median", "distinct", "real")


# --------------------------------------------------------------------------- scenario


def scenario(seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    frames = {}
    for partner in PARTNERS:
        parts = []
        for country in COUNTRIES:
            n = int(rng.integers(30, 401))
            accounts = rng.choice(POOL, size=n, replace=False)
            rows = rng.integers(1, ROWS_PER_UNIT + 1, size=n)
            ids = np.repeat([f"{country}{a:05d}" for a in accounts], rows)
            amounts = np.minimum(rng.gamma(2.0, 1500.0, size=len(ids)), UPPER * 1.2)  # some get clamped
            parts.append(pd.DataFrame({"account": ids, "country": country, "amount": amounts}))
        frames[partner] = pd.concat(parts, ignore_index=True)
    return frames


def node_toml(partner: str, address: str) -> str:
    domain = ", ".join(f'"{c}"' for c in COUNTRIES)
    return f"""[node]
id = "{partner}"
coordinator = "{address}"
state_dir = "../state/{partner}"
insecure = true

[policy]
min_group_size = 10
# Synthetic data and many runs: every project gets a budget without a grant, and the cap over
# all of them is large enough for the whole benchmark.
require_budget = false
budget_epsilon = 1000000.0
dataset_budget_epsilon = 1000000.0

[[datasets]]
name = "accounts"
privacy_unit = "account"
max_rows_per_unit = {ROWS_PER_UNIT}

[datasets.source]
kind = "parquet"
path = "../data/{partner}/accounts.parquet"

[[datasets.columns]]
name = "account"
local = "account"
kind = "identifier"
id_type = "text"

[[datasets.columns]]
name = "country"
local = "country"
kind = "category"
domain = [{domain}]

[[datasets.columns]]
name = "amount"
local = "amount"
kind = "numeric"
bounds = [0, {UPPER:g}]
"""


def write(root: Path, frames: dict[str, pd.DataFrame], address: str) -> dict[str, Path]:
    paths = {}
    for partner, frame in frames.items():
        (root / "data" / partner).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(root / "data" / partner / "accounts.parquet", index=False)
        (root / "nodes").mkdir(parents=True, exist_ok=True)
        paths[partner] = root / "nodes" / f"{partner}.toml"
        paths[partner].write_text(node_toml(partner, address))
    text = coordinator_config(address).replace("[coordinator]\n", "[coordinator]\ninsecure = true\n", 1)
    paths["coordinator"] = root / "coordinator.toml"
    paths["coordinator"].write_text(text)
    return paths


@dataclass
class Truth:
    rows: pd.Series
    total: pd.Series
    mean: pd.Series
    tight: pd.Series  # sums with the clamp tightened to [0, TIGHT]
    median: pd.Series  # PERCENTILE_CONT(0.5) of the clamped amounts
    distinct: pd.Series  # distinct accounts over all partners


def truth(frames: dict[str, pd.DataFrame]) -> Truth:
    pooled = pd.concat(frames.values(), ignore_index=True)
    clamped = pooled.assign(amount=pooled["amount"].clip(0, UPPER))
    g = clamped.groupby("country")["amount"]
    tight = pooled.assign(amount=pooled["amount"].clip(0, TIGHT)).groupby("country")["amount"].sum()
    return Truth(
        g.size().reindex(COUNTRIES),
        g.sum().reindex(COUNTRIES),
        g.mean().reindex(COUNTRIES),
        tight.reindex(COUNTRIES),
        g.median().reindex(COUNTRIES),
        pooled.groupby("country")["account"].nunique().reindex(COUNTRIES),
    )


# --------------------------------------------------------------------------- central baseline


class Central:
    """COUNT(*) (and SUM) per country on the pooled rows, built with OpenDP's Context API.

    The budget is split over ``measurements`` like the federation's plan; the sums of different
    countries touch disjoint accounts (an account has one country), so they compose in parallel.
    Each query is resolved to its OpenDP measurement once and invoked once per run.
    """

    def __init__(
        self,
        frames: dict[str, pd.DataFrame],
        measurements: int,
        with_sum: bool,
        upper: float = UPPER,
        rho: float | None = None,
    ) -> None:
        pooled = pd.concat(frames.values(), ignore_index=True)
        unit = dp.unit_of(contributions=ROWS_PER_UNIT)
        ctx = dp.Context.compositor(
            data=list(pooled["country"]),
            privacy_unit=unit,
            privacy_loss=dp.loss_of(rho=rho) if rho else dp.loss_of(epsilon=EPSILON),
            split_evenly_over=measurements,
        )
        self.countries = list(pooled["country"])
        query = ctx.query()
        if rho:  # the zCDP baseline: discrete Gaussian, as the secure sum's one noise
            query = query.count_by_categories(
                categories=COUNTRIES, null_category=False, MO=dp.L2Distance[int]
            )
            self.count = query.gaussian().resolve()
        else:
            query = query.count_by_categories(categories=COUNTRIES, null_category=False)
            self.count = query.laplace().resolve()
        self.sums: list[tuple[dp.Measurement, list[float]]] = []
        if with_sum:
            for country in COUNTRIES:
                values = [float(v) for v in pooled.loc[pooled["country"] == country, "amount"]]
                c = dp.Context.compositor(
                    data=values,
                    privacy_unit=unit,
                    privacy_loss=dp.loss_of(epsilon=EPSILON / measurements),
                    split_evenly_over=1,
                    domain=dp.vector_domain(dp.atom_domain(T=float, nan=False)),
                )
                self.sums.append((c.query().clamp((0.0, upper)).sum().laplace().resolve(), values))

    def release(self) -> tuple[list[int], list[float]]:
        counts = [int(v) for v in self.count(self.countries)]
        return counts, [float(m(values)) for m, values in self.sums]


# --------------------------------------------------------------------------- federated, in process


@dataclass
class Node:
    config: NodeConfig
    plans: dict[str, Plan]
    exact: dict[str, Any]


def load_nodes(paths: dict[str, Path]) -> list[Node]:
    nodes = []
    for partner in PARTNERS:
        config = load_node_config(paths[partner])
        sources = DataSources(config)
        try:
            plans = {
                sql: validate(parse_query(sql), config)
                for sql in (COUNT_SQL, SUM_SQL, TIGHT_SQL, ALL_SQL, MEDIAN_SQL)
            }
            exact = {sql: compute(plan, sources) for sql, plan in plans.items()}
        finally:
            sources.close()
        nodes.append(Node(config, plans, exact))
    return nodes


def plain_rows(nodes: list[Node], sql: str) -> list[pb.CombinedRow]:
    answers = {}
    for node in nodes:
        result, _ = protect(node.plans[sql], node.exact[sql], Budget(epsilon=EPSILON))
        answers[node.config.node_id] = result
    return combine(parse_query(sql), answers)


def secure_rows(nodes: list[Node], sql: str) -> list[pb.CombinedRow]:
    spec = parse_query(sql)
    spec.privacy.epsilon = EPSILON
    n = len(nodes)
    t, _ = secagg_parameters(n)
    budget = Budget(rho=secure_rho(EPSILON, None))
    total = None
    layout = pb.SecureReply()
    for node in nodes:
        plan = node.plans[sql]
        reuse = reuses_count(plan, spec.privacy)
        rows, units, numeric = exact_columns(plan, node.exact[sql])
        blocks = exact_blocks(plan, rows, units, numeric, reuse)
        components, _ = add_noise(plan, budget, blocks, n, t, ROWS_PER_UNIT)
        flat = np.asarray([v for b in blocks for v in b.values], dtype=np.int64)
        total = flat if total is None else total + flat
        if not layout.components:
            for key in plan.keys:
                layout.keys.add().key.extend(to_value(k) for k in key)
            layout.components.extend(components)
    assert total is not None
    return assemble(spec, layout, total, n, 10, max_rows_per_unit=ROWS_PER_UNIT)


def node_level_share(nodes: list[Node], runs: int) -> tuple[float, float]:
    """Share of groups released when every node suppresses on its own noisy count (policy
    ``suppression = "node"``, the only rule before the combined decision), for the COUNT and the
    COUNT, SUM, AVG questions."""
    shares = []
    for sql in (COUNT_SQL, ALL_SQL):
        released = total = 0
        for _ in range(runs):
            answers = {}
            for node in nodes:
                plan = node.plans[sql]
                ds = plan.dataset
                own = replace(plan, dataset=replace(ds, policy=replace(ds.policy, suppression="node")))
                answers[node.config.node_id], _ = protect(own, node.exact[sql], Budget(epsilon=EPSILON))
            rows = combine(parse_query(sql), answers)
            released += sum(1 for r in rows if not r.suppressed)
            total += len(rows)
        shares.append(released / total)
    return shares[0], shares[1]


def cells(rows: list[pb.CombinedRow], index: int) -> dict[str, pb.CombinedCell | None]:
    out: dict[str, pb.CombinedCell | None] = {}
    for row in rows:
        key = str(from_value(row.key[0]))
        out[key] = None if row.suppressed else row.cells[index]
    return out


# --------------------------------------------------------------------------- figures


@dataclass
class Tally:
    released: int = 0
    groups: int = 0
    errors: list[float] | None = None
    covered: int = 0
    intervals: int = 0

    def __post_init__(self) -> None:
        self.errors = []

    def add(self, cell: pb.CombinedCell | None, true: float) -> None:
        self.groups += 1
        if cell is None:
            return
        self.released += 1
        assert self.errors is not None
        self.errors.append(abs(cell.value - true) / true)
        self.intervals += 1
        self.covered += int(cell.ci_low <= true <= cell.ci_high)

    @property
    def share(self) -> float:
        return self.released / max(1, self.groups)

    @property
    def median(self) -> float:
        return statistics.median(self.errors) if self.errors else math.nan

    @property
    def rms(self) -> float:
        """Root mean square relative error: unlike the median, not rounded to whole counts."""
        return math.sqrt(statistics.fmean(e * e for e in self.errors)) if self.errors else math.nan

    @property
    def coverage(self) -> float:
        return self.covered / max(1, self.intervals)


def central_errors(frames: dict[str, pd.DataFrame], t: Truth, runs: int) -> dict[str, float]:
    """Median relative error of the central baseline: COUNT alone; SUM beside COUNT, clamped at the
    declared bound and at the tightened one (each against the exact sum at its own clamp)."""
    count_only = Central(frames, 1, with_sum=False)
    count_rho = Central(frames, 1, with_sum=False, rho=EPSILON**2 / 2)
    sums = {"sum": Central(frames, 2, with_sum=True), "tight": Central(frames, 2, with_sum=True, upper=TIGHT)}
    errors: dict[str, list[float]] = {"count": [], "count_rho": [], "sum": [], "tight": []}
    for _ in range(runs):
        for name, central in (("count", count_only), ("count_rho", count_rho)):
            counts, _ = central.release()
            errors[name] += [abs(c - t.rows[k]) / t.rows[k] for c, k in zip(counts, COUNTRIES, strict=True)]
        for name, central in sums.items():
            _, values = central.release()
            exact = t.total if name == "sum" else t.tight
            errors[name] += [abs(v - exact[k]) / exact[k] for v, k in zip(values, COUNTRIES, strict=True)]
    out = {name: statistics.median(values) for name, values in errors.items()}
    out.update({f"{name}_rms": math.sqrt(statistics.fmean(e * e for e in v)) for name, v in errors.items()})
    return out


def federated(nodes: list[Node], t: Truth, runs: int, error_runs: int, secure: bool) -> dict[str, Tally]:
    run = secure_rows if secure else plain_rows
    names = ("count", "sum", "tight", "cov_count", "cov_sum", "cov_avg")
    tallies = {name: Tally() for name in names}
    for i in range(runs):
        if i < error_runs:
            for key, cell in cells(run(nodes, COUNT_SQL), 0).items():
                tallies["count"].add(cell, t.rows[key])
            for key, cell in cells(run(nodes, SUM_SQL), 1).items():
                tallies["sum"].add(cell, t.total[key])
            for key, cell in cells(run(nodes, TIGHT_SQL), 1).items():
                tallies["tight"].add(cell, t.tight[key])
        rows = run(nodes, ALL_SQL)
        for name, index, series in (
            ("cov_count", 0, t.rows),
            ("cov_sum", 1, t.total),
            ("cov_avg", 2, t.mean),
        ):
            for key, cell in cells(rows, index).items():
                tallies[name].add(cell, series[key])
    return tallies


def median_coverage(nodes: list[Node], t: Truth, runs: int) -> Tally:
    """Plain MEDIAN per country: each node's noisy bin counts, summed by the coordinator."""
    tally = Tally()
    for _ in range(runs):
        for key, cell in cells(plain_rows(nodes, MEDIAN_SQL), 0).items():
            tally.add(cell, t.median[key])
    return tally


def union_errors(frames: dict[str, pd.DataFrame], t: Truth, runs: int) -> tuple[Tally, float, int]:
    """Union COUNT(DISTINCT account) per country across the six partners against central DP.

    The union counts come from the real PSI union (``protocols.psi_union``, all parties in this
    process; it is exact, so it runs once); each run adds the coordinator's one noise
    (``privacy.distinct.union_noise``, OpenDP discrete Laplace) and decides suppression on the
    noisy count as the coordinator does. The central baseline counts distinct accounts per country
    on the pooled rows with OpenDP's Context API under the same neighbouring relation (one
    account's rows at one partner, at most 3). Returns the federated tally, the central median
    relative error and the number of groups whose exact union count was wrong.
    """
    sets = {
        p: {(c,): list(f.loc[f["country"] == c, "account"]) for c in COUNTRIES} for p, f in frames.items()
    }
    counts, _ = run_union_in_memory(sets, "bench-union")
    wrong = sum(int(counts.get((c,), 0) != t.distinct[c]) for c in COUNTRIES)
    noise = union_noise(EPSILON, groups_per_unit(ROWS_PER_UNIT, len(COUNTRIES)))
    threshold = combined_threshold(10, [ThresholdNoise("laplace", noise.scale, 1)])
    exact = [int(counts.get((c,), 0)) for c in COUNTRIES]
    tally = Tally()
    keys = [(c,) for c in COUNTRIES]
    for _ in range(runs):
        values = [float(v) for v in release_counts(exact, noise)]
        answer = UnionAnswer("bench", keys, values, [v < threshold for v in values], threshold, noise)
        for i, c in enumerate(COUNTRIES):
            cell = answer.cell(i)
            tally.add(None if cell.suppressed else cell, t.distinct[c])
    pooled = pd.concat(frames.values(), ignore_index=True)
    unit = dp.unit_of(contributions=ROWS_PER_UNIT)
    central: list[float] = []
    measures = []
    for c in COUNTRIES:
        accounts = [str(a) for a in pooled.loc[pooled["country"] == c, "account"]]
        ctx = dp.Context.compositor(
            data=accounts,
            privacy_unit=unit,
            privacy_loss=dp.loss_of(epsilon=EPSILON),
            split_evenly_over=1,
            domain=dp.vector_domain(dp.atom_domain(T=str)),
        )
        measures.append((ctx.query().count_distinct().laplace().resolve(), accounts))
    for _ in range(runs):
        for c, (m, accounts) in zip(COUNTRIES, measures, strict=True):
            central.append(abs(int(m(accounts)) - t.distinct[c]) / t.distinct[c])
    return tally, statistics.median(central), wrong


def real_processes(paths: dict[str, Path], address: str, root: Path, t: Truth, runs: int) -> dict[str, Tally]:
    procs = local_federation(root, paths, PARTNERS, address)
    tallies = {f"{mode}_{name}": Tally() for mode in ("plain", "secure") for name in ("count", "sum", "avg")}
    procs.start(timeout=90)
    try:
        with Client(address) as fed:
            for i in range(runs + max(2, runs // 4)):
                secure = i >= runs
                mode = "secure" if secure else "plain"
                df = fed.query(ALL_SQL, epsilon=EPSILON, secure=secure, project="utility")
                noise = df.attrs["noise"]
                frame = df.set_index("country")
                for name, column, series in (
                    ("count", "n", t.rows),
                    ("sum", "total", t.total),
                    ("avg", "mean", t.mean),
                ):
                    released = {item["group"]["country"]: item for item in noise.get(column, [])}
                    for key in COUNTRIES:
                        item = released.get(key)
                        cell = None
                        if item is not None and not pd.isna(frame.loc[key, column]):
                            lo, hi = item["ci95"]
                            cell = pb.CombinedCell(value=float(frame.loc[key, column]), ci_low=lo, ci_high=hi)
                        tallies[f"{mode}_{name}"].add(cell, series[key])
    finally:
        procs.stop_all()
    return tallies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="in-process repetitions (coverage)")
    parser.add_argument("--error-runs", type=int, default=300, help="of which also measure errors")
    parser.add_argument("--real", type=int, default=20, help="plain queries through real processes")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (plain and secure need central for ratios)",
    )
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if parts - set(PARTS):
        parser.error(f"unknown part(s) {sorted(parts - set(PARTS))}; choose from {','.join(PARTS)}")
    root = Path(tempfile.mkdtemp(prefix="bench-utility-"))
    address = f"127.0.0.1:{free_port()}"
    frames = scenario(args.seed)
    paths = write(root, frames, address)
    t = truth(frames)
    sizes = pd.DataFrame({p: f.groupby("country")["account"].nunique() for p, f in frames.items()})
    shared = pd.concat(frames.values()).groupby("account").size()
    print(
        f"scenario: {len(PARTNERS)} partners x {len(COUNTRIES)} countries, {int(sizes.min().min())}-"
        f"{int(sizes.max().max())} accounts per partner and country; {(shared > 1).mean():.0%} of accounts "
        f"at more than one partner; epsilon {EPSILON:g} per query"
    )
    nodes = load_nodes(paths)
    started = time.perf_counter()
    central: dict[str, float] = {}
    if parts & {"central", "plain", "secure"}:
        central = central_errors(frames, t, args.error_runs)
        print(
            f"central (OpenDP Context API, pooled rows): median rel. error COUNT {central['count']:.4f}, "
            f"SUM {central['sum']:.4f}, SUM clamped at {TIGHT:g} {central['tight']:.4f}; "
            f"COUNT at rho {EPSILON**2 / 2:g} (discrete Gaussian) {central['count_rho']:.4f}; root mean square: "
            f"COUNT {central['count_rms']:.4f} (at rho {EPSILON**2 / 2:g}: {central['count_rho_rms']:.4f}), "
            f"SUM {central['sum_rms']:.4f}, clamped {central['tight_rms']:.4f}"
        )
    if "node" in parts:
        count_share, all_share = node_level_share(nodes, min(args.error_runs, 100))
        print(
            f"node-level suppression (each node on its own noisy count): released {count_share:.1%} (COUNT), "
            f"{all_share:.1%} (COUNT, SUM, AVG)"
        )
    for secure in (False, True):
        if ("secure" if secure else "plain") not in parts:
            continue
        label = (
            "secure (one discrete Gaussian, rho = eps^2/2)"
            if secure
            else f"plain (local DP per node: {len(PARTNERS)} noises, so about sqrt({len(PARTNERS)}) times "
            "central's sd by construction; secure=True is the mode that meets the targets)"
        )
        tallies = federated(nodes, t, args.runs, args.error_runs, secure)
        count, total, tight = tallies["count"], tallies["sum"], tallies["tight"]
        print(
            f"{label}: released {count.share:.1%} (COUNT) {total.share:.1%} (SUM) "
            f"{tallies['cov_count'].share:.1%} (COUNT, SUM, AVG); median rel. error "
            f"COUNT {count.median:.4f} ({count.median / central['count']:.2f}x central, "
            f"{count.median / central['count_rho']:.2f}x central at rho {EPSILON**2 / 2:g}), "
            f"SUM {total.median:.4f} ({total.median / central['sum']:.2f}x), "
            f"SUM clamped at {TIGHT:g} per query {tight.median:.4f} ({tight.median / central['tight']:.2f}x); "
            f"root mean square ratio COUNT {count.rms / central['count_rms']:.2f}x "
            f"({count.rms / central['count_rho_rms']:.2f}x at rho {EPSILON**2 / 2:g}), "
            f"SUM {total.rms / central['sum_rms']:.2f}x, clamped {tight.rms / central['tight_rms']:.2f}x; "
            f"95% coverage COUNT {tallies['cov_count'].coverage:.1%} SUM {tallies['cov_sum'].coverage:.1%} "
            f"AVG {tallies['cov_avg'].coverage:.1%} over {tallies['cov_count'].intervals} intervals each"
        )
    if "median" in parts:
        med = median_coverage(nodes, t, args.runs)
        print(
            f"plain MEDIAN: released {med.share:.1%}; 95% coverage {med.coverage:.1%} over {med.intervals} "
            f"intervals; median rel. error {med.median:.4f}"
        )
    if "distinct" in parts:
        union, central_distinct, wrong = union_errors(frames, t, args.runs)
        print(
            f"union COUNT(DISTINCT account) across {len(PARTNERS)} partners: exact union wrong in {wrong} of "
            f"{len(COUNTRIES)} groups; released {union.share:.1%}; median rel. error {union.median:.4f} vs "
            f"central {central_distinct:.4f} ({union.median / central_distinct:.2f}x); 95% coverage "
            f"{union.coverage:.1%} over {union.intervals} intervals"
        )
    print(f"in-process part: {time.perf_counter() - started:.0f}s")
    if args.real > 0 and "real" in parts:
        started = time.perf_counter()
        real = real_processes(paths, address, root, t, args.real)
        for mode in ("plain", "secure"):
            c, s, a = real[f"{mode}_count"], real[f"{mode}_sum"], real[f"{mode}_avg"]
            print(
                f"real processes, {mode}: {c.groups // len(COUNTRIES)} queries, released {c.share:.1%}; "
                f"95% coverage COUNT {c.coverage:.1%} SUM {s.coverage:.1%} AVG {a.coverage:.1%}"
            )
        print(f"real-process part: {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
