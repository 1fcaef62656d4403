"""``federation demo``: a six-partner federation on this machine, a short tour, a clean stop."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.panel import Panel

from federation.client import Client, with_intervals
from federation.display import swamped_hint
from federation.processes import LocalFederation, free_port
from federation.scenario import postgres_available, write_scenario
from protocols.errors import FederationError

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"

TOUR: list[tuple[str, str]] = [
    (
        "Customs declarations in 2023 per port (Douane)",
        "SELECT port, COUNT(*) AS declarations, SUM(value) AS total_value FROM declarations "
        "WHERE year = 2023 GROUP BY port",
    ),
    (
        "Companies with drugs signals per region, across all six partners: a company signalled by several "
        "partners is counted once (the union, by private set intersection; docs/distinct.md)",
        "SELECT region, COUNT(DISTINCT company) AS companies, COUNT(*) AS signals FROM signals "
        "WHERE phenomenon = 'drugs' GROUP BY region",
    ),
    (
        "Average turnover of companies with VAT anomalies per sector (Belastingdienst)",
        "SELECT sector, COUNT(*) AS returns, AVG(turnover) AS avg_turnover FROM vat_returns "
        "WHERE anomaly = 1 GROUP BY sector",
    ),
    (
        "Private flights per airport since 2022 (KMar)",
        "SELECT airport, COUNT(*) AS crossings FROM crossings "
        "WHERE flight_type = 'private' AND year BETWEEN 2022 AND 2024 GROUP BY airport",
    ),
]
BOUNDED = (
    "SELECT port, SUM(LEAST(GREATEST(value, 0), 500000)) AS total_value FROM declarations "
    "WHERE year = 2023 GROUP BY port"
)
REFUSED = (
    "An analyst asks for company numbers: refused by the node, with the rule",
    "SELECT company, COUNT(*) AS n FROM declarations GROUP BY company",
)


def _panel(console: Console, text: str) -> None:
    # The CLI's console does not wrap (tables and CSV stay intact), but a panel must.
    console.print(Panel(text), soft_wrap=False)


def run_demo(out_dir: Path | None, rows: int, port: int, console: Console) -> None:
    started = time.monotonic()
    keep = out_dir is not None
    root = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="federation-demo-"))
    address = f"127.0.0.1:{port or free_port()}"
    dsn = os.environ.get("FEDERATION_DEMO_PG", DEFAULT_PG)
    pg_schema = f"mit_demo_{uuid.uuid4().hex[:8]}"
    use_pg = bool(dsn) and postgres_available(dsn)
    console.rule("[bold]Federated analytics demo: six MIT partners on this machine")
    with console.status("Generating the synthetic MIT scenario ..."):
        paths = write_scenario(
            root,
            seed=7,
            rows=rows,
            coordinator=address,
            postgres_dsn=dsn if use_pg else None,
            pg_schema=pg_schema,
        )
    source_note = "Belastingdienst from PostgreSQL" if use_pg else "PostgreSQL not reachable: all from files"
    console.print(f"Data and configs in {root} ({rows} rows per dataset; {source_note})")
    fed_procs = LocalFederation(
        coordinator_config=paths["coordinator"],
        node_configs={k: v for k, v in paths.items() if k != "coordinator"},
        address=address,
        log_dir=root / "logs",
        tls_dir=root / "pki" / "kits" / "analyst",
    )
    try:
        with console.status("Starting the coordinator and six nodes (separate processes) ..."):
            fed_procs.start(timeout=60)
        _tour(address, paths, console, root / "pki" / "kits" / "analyst")
    finally:
        with console.status("Stopping the federation ..."):
            fed_procs.stop_all()
        if use_pg:
            _drop_schema(dsn, pg_schema)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    console.rule(f"[green]Demo finished in {time.monotonic() - started:.1f}s")


def _tour(address: str, paths: dict[str, Path], console: Console, kit: Path) -> None:
    from federation.cli import Format, print_frame

    console.print(
        "[dim]All links use mutual TLS with the demo's own federation root (kits in pki/kits).[/dim]"
    )
    with Client(address, tls_dir=kit) as fed:
        _panel(console, "Who is connected (public metadata only)")
        print_frame(fed.nodes()[["node", "connected", "datasets"]], Format.table)
        for title, sql in TOUR:
            _panel(console, f"{title}\n[dim]{sql}[/dim]")
            df = fed.query(sql)
            print_frame(with_intervals(df), Format.table)
            spent = ", ".join(
                f"{n['node']} epsilon {n.get('cost', {}).get('epsilon', 0):g}" for n in df.attrs["nodes"]
            )
            note = f"differentially private (OpenDP); charged: {spent}"
            if df.attrs["suppressed"]:
                note += (
                    f"; {len(df.attrs['suppressed'])} group(s) suppressed (noisy unit count below threshold)"
                )
            console.print(f"[dim]{note}[/dim]")
            hint = swamped_hint(df)
            if hint:
                console.print(hint, style="yellow", markup=False)
            if len(df.attrs["answered"]) > 1:
                console.print(_released_line(df))
            if df.attrs.get("distinct") == "union" and len(df.attrs["answered"]) > 1:
                console.print("[dim]COUNT(DISTINCT company): each company once across partners (union)[/dim]")
        _bounds_tour(fed, console)
        _secure_tour(fed, console)
        _overlap_tour(fed, console)
        _budget_tour(fed, paths, console)
        _glm_tour(fed, console)
        title, sql = REFUSED
        _panel(console, f"{title}\n[dim]{sql}[/dim]")
        try:
            fed.query(sql)
            raise FederationError("demo", "the identifier query was not refused")
        except FederationError as exc:
            if exc.rule == "demo":
                raise
            console.print(f"refused: {exc}", style="yellow", markup=False)

    _panel(console, "Privacy officer of Douane verifies the node's hash-chained audit log")
    from nodes.audit import Head, read_verify_key, verify, verify_key_file
    from nodes.config import load_node_config

    cfg = load_node_config(paths["douane"])
    # The head douane published with its last answer, as the coordinator kept it, anchors the log's end.
    with Client(address, tls_dir=kit) as fed:
        heads = [Head(int(h.seq), str(h.hash)) for h in fed.audit_heads(node="douane").itertuples()]
    report = verify(
        cfg.state_dir / "audit.log",
        verify_key=read_verify_key(verify_key_file(cfg.audit_key_path)),
        heads=heads,
    )
    if not report.ok:
        raise FederationError(
            report.rule, f"audit log of douane failed verification: {report.problems[0].message}"
        )
    console.print(
        f"[green]audit log of douane intact[/green]: {report.entries} entries, "
        f"{report.signatures_checked} signatures checked, head {report.head_seq}:{report.head_hash[:16]}..., "
        f"{report.heads_checked} head(s) published to the coordinator found",
        highlight=False,
    )


CROSS_PARTNER = TOUR[1][1]


def _released_line(df: pd.DataFrame) -> str:
    """How many groups of a cross-partner answer came back: suppression is decided once, by the
    coordinator, on the summed noisy unit count of all answering partners."""
    released = len(df) - len(df.attrs["suppressed"])
    return (
        f"{released} of {len(df)} groups released across {len(df.attrs['answered'])} partners; "
        "suppression decided once, on the combined noisy count"
    )


def _half_width(plan: pd.DataFrame, aggregate: str) -> float:
    row = plan[(plan["node"] == "all") & (plan["aggregate"] == aggregate)]
    return float(row["ci95_half_width"].iloc[0])


def _bounds_tour(fed: Client, console: Console) -> None:
    """Accuracy before spending, then a SUM with bounds tightened for the query."""
    from federation.cli import Format, print_frame

    declared = next(d for d in fed.dataset_infos() if d.name == "declarations").max_rows_per_unit
    rows = min(10, declared)
    _panel(
        console,
        "Accuracy before spending: the customs total per port, clamped at 500 000 per declaration and "
        f"{rows} declarations per company for this query instead of the declared [0, 2 000 000] and {declared}\n"
        f"[dim]fed.explain(sql); fed.query(sql, max_rows_per_unit={rows})[/dim]",
    )
    wide = _half_width(fed.explain(TOUR[0][1]), "total_value")
    tight = _half_width(fed.explain(BOUNDED, max_rows_per_unit=rows), "total_value")
    console.print(
        f"expected 95% interval of a port's total: +-{wide:,.0f} with the declared bounds, "
        f"+-{tight:,.0f} tightened (computed from public metadata; nothing read, nothing spent)"
    )
    df = fed.query(BOUNDED, max_rows_per_unit=rows)
    print_frame(with_intervals(df), Format.table)
    bounding = df.attrs["bounding"]
    cut, clamped = bounding["units_truncated"], bounding["values_clamped"]["total_value"]
    console.print(
        f"[dim]noisy bounding figures (part of the query's epsilon): about {cut['value']:,.0f} companies had "
        f"rows cut by truncation, about {clamped['value']:,.0f} values were clamped[/dim]"
    )


def _secure_tour(fed: Client, console: Console) -> None:
    from federation.cli import Format, print_frame

    _panel(
        console,
        "The same cross-partner question under secure aggregation: for the signal counts the coordinator "
        "sees only the sum, and the partners' noise shares add up to the noise of one trusted curator; "
        "companies are again counted once, by private set intersection\n"
        "[dim]fed.query(sql, secure=True, epsilon=1.0)[/dim]",
    )
    df = fed.query(CROSS_PARTNER, secure=True, epsilon=1.0)
    print_frame(with_intervals(df), Format.table)
    console.print(_released_line(df))


GLM_FORMULA = "phenomenon ~ C(region) + C(year)"


def _glm_tour(fed: Client, console: Console) -> None:
    _panel(
        console,
        "A logistic regression across all six partners: the odds that a signal is about drugs, by region "
        "and year. Each Fisher-scoring round, every partner computes X^T W X and the score on its own rows; "
        "the coordinator sees only their secure sum, with noise, charged per round (docs/modelling.md). "
        "Each company counts with at most 3 signals, so the noise stays small\n"
        f"[dim]fed.glm({GLM_FORMULA!r}, data='signals', family='binomial', event='drugs', epsilon=1.5, "
        "max_iterations=4, max_rows_per_unit=3, project='mit-rotterdam')[/dim]",
    )
    fit = fed.glm(
        GLM_FORMULA,
        data="signals",
        family="binomial",
        event="drugs",
        epsilon=1.5,
        max_iterations=4,
        max_rows_per_unit=3,
        project="mit-rotterdam",
    )
    console.print(fit.summary(), markup=False, highlight=False)
    answered = fit.nodes[fit.nodes["status"] == "answered"]
    for row in fit.nodes[fit.nodes["status"] != "answered"].itertuples():
        console.print(f"[dim]left out: {row.node}: {row.reason}[/dim]", highlight=False)
    console.print(
        f"[dim]{len(answered)} partners in every sum; each charged rho {fit.rho:.3g} over {fit.iterations} "
        f"rounds; {fit.seconds['nodes']:.1f} s node compute, {fit.seconds['secagg']:.1f} s secure aggregation[/dim]"
    )


OVERLAP = ["douane.declarations", "belastingdienst.vat_returns", "politie.incidents", "fiod.investigations"]
OVERLAP_WHERE = {"douane.declarations": "port = 'Rotterdam'", "belastingdienst.vat_returns": "anomaly = 1"}


def _overlap_tour(fed: Client, console: Console) -> None:
    """Entity overlap by private set intersection: which companies four partners share, counted."""
    from federation.cli import Format, print_frame
    from federation.scenario import NETWORK_COMPANIES

    _panel(
        console,
        (
            "Entity overlap: companies declaring at Rotterdam (Douane), with VAT anomalies (Belastingdienst), "
            "in police incidents (Politie) and FIOD investigations; no partner reveals a company number\n"
            "[dim]fed.overlap(on='company', datasets=[...4 datasets], where={...}, epsilon=1.0)[/dim]"
        ),
    )
    o = fed.overlap(on="company", datasets=OVERLAP, where=OVERLAP_WHERE, epsilon=1.0, timeout=60)
    shown = o.patterns.head(8).copy()
    for name in o.datasets:
        shown[name] = shown[name].map({True: "x", False: ""})
    print_frame(shown, Format.table)
    console.print(
        f"companies at >= 3 of the 4 partners (a case needs three): [bold]{o.at_least(3)}[/bold]; "
        f"the {NETWORK_COMPANIES} companies of the planted network are built to be among them"
    )
    console.print(
        f"[dim]DP counts (OpenDP, epsilon {o.epsilon:g}, charged at every partner): noise sd "
        f"{o.noise_sd:.1f} per pattern; the coordinator saw only fully blinded tokens[/dim]"
    )


def _budget_tour(fed: Client, paths: dict[str, Path], console: Console) -> None:
    from federation.cli import Format, print_frame
    from nodes.config import load_node_config
    from nodes.context import open_ledger

    _panel(
        console,
        (
            "Douane's privacy officer gives project 'mit-rotterdam' a budget of epsilon 2.5 on declarations;\n"
            "the analyst spends epsilon 1 per query until the node refuses"
        ),
    )
    # What `federation budget set --config douane.toml ...` does, at the node, by its officer.
    ledger = open_ledger(load_node_config(paths["douane"]))
    ledger.set_budget("declarations", "mit-rotterdam", 2.5, 1e-6, "officer")
    sql = "SELECT goods_category, COUNT(*) AS n FROM declarations WHERE port = 'Rotterdam' GROUP BY goods_category"
    for attempt in range(1, 4):
        try:
            fed.query(sql, epsilon=1.0, project="mit-rotterdam")
            left = fed.budget("mit-rotterdam")
            row = left[(left["node"] == "douane") & (left["dataset"] == "declarations")].iloc[0]
            console.print(f"query {attempt}: answered; remaining epsilon {row['remaining_epsilon']:.2f}")
        except FederationError as exc:
            console.print(f"query {attempt}: refused: {exc}", style="yellow", markup=False)
    left = fed.budget("mit-rotterdam")
    print_frame(left[left["releases"] > 0], Format.table)
    # What the officer sees with `federation budget show`: the cap bounds all projects together.
    cap = ledger.cap("declarations")
    console.print(
        f"[dim]douane's officer: declarations has spent epsilon {cap.spent_epsilon:.2f} of its cap of "
        f"{cap.total_epsilon:g} over all {cap.projects} project(s) (federation budget show)[/dim]"
    )


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except psycopg.Error:
        pass  # a leftover demo schema is harmless; the next demo uses a fresh name
