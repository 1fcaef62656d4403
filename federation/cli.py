"""The ``federation`` command: run nodes and the coordinator, query, inspect, audit, demo."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from federation.entry import run_reporting
from protocols.errors import FederationError

if TYPE_CHECKING:
    from federation.overlap import JobProgress
    from nodes.audit import Head

app = typer.Typer(
    help="Federated analytics: aggregates leave a partner's node, raw rows never do.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
node_app = typer.Typer(help="Run a partner node.", no_args_is_help=True)
coordinator_app = typer.Typer(help="Run the coordinator.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify and export a node's audit log.", no_args_is_help=True)
app.add_typer(node_app, name="node")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(audit_app, name="audit")
budget_app = typer.Typer(
    help="Privacy budgets: set and read at the node (officers); read remaining (analysts)."
)
app.add_typer(budget_app, name="budget")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

CoordinatorOption = Annotated[
    str,
    typer.Option(
        "--coordinator", "-c", envvar="FEDERATION_COORDINATOR", help="Coordinator address HOST:PORT."
    ),
]


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


def _wait_for_signal(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# ---------------------------------------------------------------------------- daemons


@node_app.command("start")
def node_start(
    config: Annotated[Path, typer.Option("--config", help="Node config (TOML).")],
    quiet: Annotated[bool, typer.Option("--quiet", help="Log warnings only.")] = False,
) -> None:
    """Start a node: it checks itself (as `node check`), dials out to the coordinator and serves jobs
    until stopped."""
    from nodes.serve import serve

    serve(config, quiet)


@node_app.command("check")
def node_check(
    config: Annotated[Path, typer.Option("--config", help="Node config (TOML).")],
) -> None:
    """Check a node without connecting to the coordinator: sources, declared tables and columns,
    values outside the domains, key file permissions, and the certificate (validity, role, name).
    Exits non-zero on any error."""
    from nodes.check import check_node, errors
    from nodes.config import load_node_config

    cfg = load_node_config(config)
    findings = check_node(cfg)
    styles = {"ok": "green", "warning": "yellow", "error": "bold red"}
    table = Table(title=f"node {cfg.node_id}", show_lines=False, expand=False)
    table.add_column("", no_wrap=True)
    table.add_column("what", overflow="fold")
    table.add_column("finding", overflow="fold", ratio=1)
    table.add_column("rule", overflow="fold")
    for f in findings:
        table.add_row(f"[{styles[f.level]}]{f.level}[/]", f.subject, f.message, f.rule)
    Console(soft_wrap=False).print(table)
    bad, warned = errors(findings), [f for f in findings if f.level == "warning"]
    summary = f"{len(bad)} error(s), {len(warned)} warning(s)"
    if bad:
        err.print(f"node {cfg.node_id}: {summary}; the node will not start", style="red", markup=False)
        raise typer.Exit(1)
    out.print(f"node {cfg.node_id}: {summary}; ready to start" + ("" if not warned else " (see warnings)"))


@node_app.command("reload")
def node_reload(
    config: Annotated[Path, typer.Option("--config", help="Node config (TOML).")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the node's answer.")] = 120.0,
) -> None:
    """Make the running node pick up its changed CSV and Parquet files now (it also looks every
    source_check_seconds). Each new version is built aside and swapped in whole; jobs already
    running finish on the old one. Exits non-zero if a source could not be loaded."""
    from nodes.config import load_node_config
    from nodes.source_reload import request_reload

    cfg = load_node_config(config)
    answer = request_reload(cfg, timeout=timeout)
    for name in answer.get("reloaded", []):
        out.print(f"dataset {name}: new version in use", markup=False)
    for name in answer.get("unchanged", []):
        out.print(f"dataset {name}: unchanged", markup=False)
    failed = answer.get("failed", {})
    for name, reason in failed.items():
        err.print(
            f"dataset {name}: not reloaded, the previous version stays: {reason}", style="red", markup=False
        )
    if failed:
        raise typer.Exit(1)


@coordinator_app.command("start")
def coordinator_start(
    config: Annotated[Path, typer.Option("--config", help="Coordinator config (TOML).")],
    quiet: Annotated[bool, typer.Option("--quiet", help="Log warnings only.")] = False,
) -> None:
    """Start the coordinator: node links and the analyst service on one port."""
    from coordinator.config import load_coordinator_config
    from coordinator.service import Coordinator

    _setup_logging(not quiet)
    coordinator = Coordinator(load_coordinator_config(config))
    coordinator.start()
    if coordinator.dashboard is not None:
        # The token is printed once here (for whoever started the process), never logged.
        print(
            f"Operator dashboard: {coordinator.dashboard.url}\n"
            f"Sign-in token (one use; the current one is always in {coordinator.dashboard.token_file}): "
            f"{coordinator.dashboard.token.current}",
            flush=True,
        )
    stop = threading.Event()
    _wait_for_signal(stop)
    stop.wait()
    coordinator.stop()


# ---------------------------------------------------------------------------- analysts


def print_frame(df: object, fmt: Format, title: str | None = None) -> None:
    import pandas as pd

    assert isinstance(df, pd.DataFrame)
    if fmt == Format.csv:
        sys.stdout.write(df.to_csv(index=False))
        return
    if fmt == Format.json:
        payload = {"rows": json.loads(df.to_json(orient="records", date_format="iso")), "meta": df.attrs}
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        return
    table = Table(title=title, show_lines=False)
    for column in df.columns:
        numeric = pd.api.types.is_numeric_dtype(df[column])
        table.add_column(str(column), justify="right" if numeric else "left", overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*[_fmt(v) for v in row])
    if _fits(table) or len(df.columns) <= 3:
        out.print(table)
        return
    _print_records(df, title)


def _fits(table: Table) -> bool:
    """Whether the table's natural width fits the terminal; a folded wide table is unreadable."""
    from rich.measure import Measurement

    unbounded = out.options.update_width(10_000)
    return Measurement.get(out, unbounded, table).maximum <= out.width


def _print_records(df: object, title: str | None) -> None:
    """One block per row, a field per line: readable at 80 columns whatever the number of columns."""
    import pandas as pd

    assert isinstance(df, pd.DataFrame)
    if title:
        out.print(f"[bold]{title}[/bold]")
    if df.empty:
        out.print("[dim](none)[/dim]")
        return
    width = max(len(str(c)) for c in df.columns)
    for i, row in enumerate(df.itertuples(index=False)):
        block = Table.grid(padding=(0, 1))
        block.add_column(style="dim", no_wrap=True, min_width=width)
        block.add_column(overflow="fold")
        for column, value in zip(df.columns, row, strict=True):
            text = _fmt(value)
            if text:
                block.add_row(str(column), text)
        if i:
            out.print()
        out.print(block)


def _fmt(value: object) -> str:
    import pandas as pd

    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return "[dim]suppressed[/dim]"
    if isinstance(value, float):
        # Small parameters such as delta = 1e-06 must not print as 0.00.
        return f"{value:.2g}" if 0 < abs(value) < 0.01 else f"{value:,.2f}"
    from rich.markup import escape

    # Values are data, not markup: "[rule: budget]" in a reason must print as written.
    return escape(str(value))


def _parse_bounds(items: list[str] | None) -> dict[str, tuple[float, float]]:
    """``column=lo:hi`` options as {column: (lo, hi)}."""
    out: dict[str, tuple[float, float]] = {}
    for item in items or []:
        column, _, pair = item.partition("=")
        lo, sep, hi = pair.partition(":")
        try:
            if not column or not sep:
                raise ValueError
            out[column.strip()] = (float(lo), float(hi))
        except ValueError:
            raise FederationError("bounds", f"--bounds takes column=lower:upper, not '{item}'") from None
    return out


def _query_bounds(items: list[str] | None) -> dict[str, tuple[float, float]] | Literal["auto"]:
    """``--bounds auto`` (each node chooses its clamp by a DP quantile), or ``column=lo:hi`` options."""
    if items == ["auto"]:
        return "auto"
    return _parse_bounds(items)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="SELECT ... FROM dataset [WHERE ...] [GROUP BY ...]")],
    coordinator: CoordinatorOption = "127.0.0.1:7100",
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    min_nodes: Annotated[int, typer.Option(help="Answer only if at least this many nodes answer.")] = 0,
    timeout: Annotated[float, typer.Option(help="Per-node timeout in seconds.")] = 0.0,
    epsilon: Annotated[float | None, typer.Option(help="Privacy budget to spend (pure DP).")] = None,
    rho: Annotated[float | None, typer.Option(help="Privacy budget to spend (zCDP).")] = None,
    project: Annotated[str, typer.Option(help="Project the query is run for.")] = "",
    bounds: Annotated[
        list[str] | None,
        typer.Option(
            "--bounds",
            help="Tighter clamping for a column's SUM/AVG: column=lower:upper; or 'auto': each node "
            "chooses its upper clamp by a DP quantile at 10% of epsilon.",
        ),
    ] = None,
    max_rows_per_unit: Annotated[
        int | None, typer.Option(help="Rows one unit may contribute, below the dataset's maximum.")
    ] = None,
    accuracy: Annotated[
        float | None,
        typer.Option(
            help="Wanted 95% half-width of the first aggregate: spend the smallest epsilon that meets it."
        ),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show the noise and cost the query would have; spend nothing.")
    ] = False,
) -> None:
    """Run an aggregate query across the federation."""
    from federation.client import Client, with_intervals

    clamp = _query_bounds(bounds)
    with Client(coordinator) as fed:
        if explain:
            plan = fed.explain(
                sql, epsilon=epsilon, rho=rho, bounds=clamp, max_rows_per_unit=max_rows_per_unit
            )
            # Columns with nothing to say (no refusal, no AVG, no zCDP) are left out of the table.
            empty = [c for c in ("refused", "note", "rho") if not plan[c].astype(bool).any()]
            plan = plan.drop(columns=empty) if fmt == Format.table else plan
            shown = plan.astype(object).where(plan.notna(), "n/a")
            print_frame(shown, fmt, title="expected noise (nothing read, nothing spent)")
            if fmt == Format.table and plan.attrs.get("hint"):
                typer.echo(plan.attrs["hint"])
            return
        df = fed.query(
            sql,
            min_nodes=min_nodes,
            timeout=timeout or None,
            epsilon=epsilon,
            rho=rho,
            project=project,
            bounds=clamp,
            max_rows_per_unit=max_rows_per_unit,
            accuracy=accuracy,
        )
    print_frame(with_intervals(df) if fmt == Format.table else df, fmt)
    if fmt == Format.table:
        _print_meta(df.attrs)
        from federation.display import swamped_hint

        hint = swamped_hint(df)
        if hint:
            err.print(hint, style="yellow", markup=False)


@app.command()
def glm(
    formula: Annotated[str, typer.Argument(help="outcome ~ column + C(category) [- 1]")],
    data: Annotated[str, typer.Option("--data", "-d", help="Shared dataset to fit on.")],
    family: Annotated[str, typer.Option(help="gaussian, binomial or poisson.")] = "gaussian",
    coordinator: CoordinatorOption = "127.0.0.1:7100",
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    epsilon: Annotated[
        float | None, typer.Option(help="Privacy budget over every iteration (pure DP ask).")
    ] = None,
    rho: Annotated[float | None, typer.Option(help="Privacy budget over every iteration (zCDP).")] = None,
    project: Annotated[str, typer.Option(help="Project the model is fitted for.")] = "",
    max_iterations: Annotated[int, typer.Option(help="Fisher scoring rounds at most.")] = 25,
    event: Annotated[
        str | None, typer.Option(help="Binomial with a category outcome: the level coded 1.")
    ] = None,
    bounds: Annotated[
        list[str] | None,
        typer.Option(
            "--bounds", help="Tighter clamping of a numeric covariate (DP only): column=lower:upper."
        ),
    ] = None,
) -> None:
    """Fit a GLM across the federation by Fisher scoring, every round secure-aggregated."""
    import pandas as pd

    from federation.client import Client

    with Client(coordinator) as fed:
        result = fed.glm(
            formula,
            data=data,
            family=family,
            epsilon=epsilon,
            rho=rho,
            project=project,
            max_iterations=max_iterations,
            bounds=_parse_bounds(bounds) or None,
            event=int(event) if event is not None and event.lstrip("-").isdigit() else event,
        )
    if fmt == Format.table:
        sys.stdout.write(result.summary() + "\n")
        return
    frame = pd.DataFrame(
        {
            "coef": result.params,
            "std_err": result.bse,
            "noise_sd": result.noise_sd,
            "z": result.tvalues,
            "p": result.pvalues,
            "ci_low": result.conf_int()[0],
            "ci_high": result.conf_int()[1],
        }
    )
    frame.index.name = "term"
    print_frame(frame.reset_index(), fmt, title=f"{formula} ({family}, n = {result.nobs:,.0f})")


def _print_meta(attrs: dict) -> None:
    answered = ", ".join(attrs.get("answered", [])) or "none"
    err.print(f"[dim]answered: {answered}[/dim]")
    for node, reason in attrs.get("missing", {}).items():
        err.print(f"not included: {node}: {reason}", style="yellow", markup=False)
    if attrs.get("suppressed"):
        err.print(f"[dim]{len(attrs['suppressed'])} group(s) suppressed (shown as 'suppressed')[/dim]")
    if "epsilon_for_accuracy" in attrs:
        err.print(f"[dim]epsilon spent for the requested accuracy: {attrs['epsilon_for_accuracy']:g}[/dim]")
    clipped = sorted(
        {c for c, cells in attrs.get("noise", {}).items() if any(x.get("clipped") for x in cells)}
    )
    if clipped:
        err.print(f"[dim]moved into the feasible range (e.g. no negative sums): {', '.join(clipped)}[/dim]")
    bounding = attrs.get("bounding", {})
    if bounding:
        from federation.display import interval_text

        parts = []
        if "units_truncated" in bounding:
            t = bounding["units_truncated"]
            parts.append(f"units cut by truncation {interval_text(t['value'], *t['ci95'])}")
        for alias, c in bounding.get("values_clamped", {}).items():
            parts.append(f"values clamped in {alias} {interval_text(c['value'], *c['ci95'])}")
        err.print(f"[dim]noisy bounding figures: {'; '.join(parts)}[/dim]", markup=True)
    for alias, per_node in attrs.get("chosen_bounds", {}).items():
        chosen = ", ".join(f"{node} [{c['bounds'][0]:g}, {c['bounds'][1]:g}]" for node, c in per_node.items())
        err.print(f"clamp of {alias} chosen by DP quantile: {chosen}", style="dim", markup=False)


@app.command()
def overlap(
    on: Annotated[str, typer.Option("--on", help="Identifier column to match on, e.g. company.")],
    dataset: Annotated[list[str], typer.Option("--dataset", "-d", help="node.dataset; give 2 to 12.")],
    where: Annotated[
        list[str] | None,
        typer.Option(help="node.dataset=CONDITION, e.g. \"douane.declarations=port = 'Rotterdam'\"."),
    ] = None,
    epsilon: Annotated[float | None, typer.Option(help="Privacy budget to spend (pure DP).")] = None,
    project: Annotated[str, typer.Option(help="Project the overlap is run for.")] = "",
    at_least: Annotated[int, typer.Option("--at-least", help="Report entities at >= K datasets.")] = 0,
    top: Annotated[
        int, typer.Option("--top", min=0, help="Table: the K largest patterns only (0: all of them).")
    ] = 20,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write an UpSet-style chart (PNG).")] = None,
    timeout: Annotated[float, typer.Option(help="Per-step timeout in seconds.")] = 0.0,
    coordinator: CoordinatorOption = "127.0.0.1:7100",
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
) -> None:
    """Count entities shared across datasets by private set intersection (docs/overlap.md)."""
    from federation.client import Client

    conditions: dict[str, str] = {}
    for item in where or []:
        name, sep, condition = item.partition("=")
        if not sep or not name.strip() or not condition.strip():
            raise FederationError("malformed_request", f"--where takes node.dataset=CONDITION, got {item!r}")
        conditions[name.strip()] = condition
    with Client(coordinator) as fed, _progress_bar("overlap") as progress:
        result = fed.overlap(
            on,
            dataset,
            where=conditions,
            epsilon=epsilon,
            project=project,
            timeout=timeout or None,
            progress=progress,
        )
    patterns = result.patterns
    if fmt != Format.table:
        print_frame(patterns, fmt)
    else:
        # 2^n - 1 patterns: 4,095 at twelve datasets. The table shows the largest (patterns are
        # sorted by count); csv and json carry them all.
        shown = (patterns.head(top) if top else patterns).copy()
        for name in result.datasets:
            shown[name] = shown[name].map({True: "x", False: ""})
        print_frame(shown, fmt, title="Entities per exact membership pattern")
        if len(shown) < len(patterns):
            err.print(
                f"[dim]the {len(shown)} largest of {len(patterns)} patterns; --top 0 shows all, "
                "--format csv writes all[/dim]"
            )
        print_frame(
            result.pairwise.reset_index(names="dataset"), fmt, title="Shared entities (diagonal: set size)"
        )
        for k in sorted({2, len(result.datasets), at_least} - {0}):
            if k <= len(result.datasets):
                out.print(f"entities at >= {k} of {len(result.datasets)} datasets: {result.at_least(k)}")
        if result.exact:
            err.print("[dim]exact counts (no node asked for DP)[/dim]")
        else:
            err.print(
                f"[dim]DP counts (OpenDP), epsilon {result.epsilon:g}: noise sd {result.noise_sd:.2f}, "
                f"95% interval +-{result.ci_half_width:g} per pattern[/dim]"
            )
    if plot is not None:
        result.plot(plot)
        err.print(f"[dim]chart written to {plot}[/dim]")


@contextmanager
def _progress_bar(label: str) -> Iterator[Callable[[JobProgress], None]]:
    """A progress bar on stderr for a long job, cleared when it ends; nothing when not a terminal."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("[dim]{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = bar.add_task(label, total=None, detail="")

    def update(p: JobProgress) -> None:
        bar.update(task, description=f"{label}: {p.phase}", completed=p.step, total=p.steps, detail=p.detail)

    with bar:
        yield update


@app.command()
def nodes(
    coordinator: CoordinatorOption = "127.0.0.1:7100",
    forget: Annotated[
        str, typer.Option("--forget", help="Admin only: drop this disconnected node from the list.")
    ] = "",
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """List the nodes known to the coordinator (an admin may --forget a disconnected one)."""
    from federation.client import Client

    with Client(coordinator) as fed:
        print_frame(fed.nodes(forget=forget), fmt)


@app.command()
def datasets(
    coordinator: CoordinatorOption = "127.0.0.1:7100",
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """List the datasets served, with their public schema."""
    from federation.client import Client

    with Client(coordinator) as fed:
        print_frame(fed.datasets(), fmt)


@app.command()
def mock(
    dataset: Annotated[str, typer.Argument(help="node.dataset or dataset")],
    n: Annotated[int, typer.Option("-n", help="Number of rows.")] = 20,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    coordinator: CoordinatorOption = "127.0.0.1:7100",
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """Synthetic rows with a dataset's declared schema (no node data involved)."""
    from federation.client import Client

    with Client(coordinator) as fed:
        print_frame(fed.mock(dataset, n=n, seed=seed), fmt)


@app.command()
def jobs(
    coordinator: CoordinatorOption = "127.0.0.1:7100",
    limit: Annotated[int, typer.Option(help="How many recent jobs.", min=1)] = 20,
    project: Annotated[str, typer.Option(help="Only jobs of this project.")] = "",
    page: Annotated[str, typer.Option(help="Continue from the page token a previous call printed.")] = "",
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """The coordinator's job history (the jobs you may read), newest first, a page at a time."""
    from federation.client import Client

    with Client(coordinator) as fed:
        frame = fed.jobs(limit=limit, project=project, page_token=page)
        print_frame(frame, fmt)
        token = frame.attrs.get("next_page_token", "")
        if token:
            # On stderr, so --format json/csv output stays machine-readable.
            typer.echo(f"older jobs: federation jobs --limit {limit} --page {token}", err=True)


@app.command()
def projects(
    coordinator: CoordinatorOption = "127.0.0.1:7100",
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """The projects jobs may run for: purpose, legal basis, members, expiry, quorum (docs/projects.md)."""
    from federation.client import Client

    with Client(coordinator) as fed:
        print_frame(fed.projects(), fmt)


# ---------------------------------------------------------------------------- approvals (officers, at the node)


def _approvals(config: Path):  # noqa: ANN202 - nodes.* is imported lazily
    from nodes.approvals import ApprovalStore, approvals_path
    from nodes.audit import AuditLog, load_or_create_signing_key
    from nodes.config import load_node_config

    cfg = load_node_config(config)
    audit = AuditLog(
        cfg.state_dir / "audit.log", cfg.node_id, signing_key=load_or_create_signing_key(cfg.audit_key_path)
    )
    return cfg, ApprovalStore(approvals_path(cfg.state_dir), cfg.node_id, audit)


@app.command()
def approve(
    config: Annotated[Path, typer.Option("--config", help="Node config (TOML) of your own node.")],
    job: Annotated[str | None, typer.Option("--job", help="Job hash, as the refusal gave it.")] = None,
    template: Annotated[
        str | None, typer.Option("--template", help="Template hash: the query with any filter values.")
    ] = None,
    note: Annotated[str, typer.Option(help="Why (recorded with the approval).")] = "",
    by: Annotated[str, typer.Option(help="Who approves, when no --kit is given.")] = "",
    kit: Annotated[
        Path | None,
        typer.Option("--kit", help="Your certificate kit: its subject is recorded."),
    ] = None,
    revoke: Annotated[bool, typer.Option("--revoke", help="Withdraw the approval instead.")] = False,
) -> None:
    """Approve a job (or a query template) at your node, as its privacy officer; audited.

    The approver recorded is the subject of your certificate kit (--kit or $FEDERATION_TLS_DIR),
    else the name given with --by. This acts on the node's own state through its config file,
    never over the network.
    """
    if (job is None) == (template is None):
        raise FederationError("bad_input", "give exactly one of --job HASH or --template HASH")
    who = _approver(kit, by)
    cfg, store = _approvals(config)
    digest = job or template or ""
    if revoke:
        done = store.revoke(digest, who, note)
        out.print(f"revoked at {cfg.node_id}: {done.scope} {done.hash} (approved by {done.approved_by})")
        return
    done = store.approve(digest, who, scope="job" if job else "template", note=note)
    known = [r for r in store.requests(pending_only=False) if digest in (r.job_hash, r.template_hash)]
    out.print(f"approved at {cfg.node_id}: {done.scope} {done.hash} by {done.approved_by}")
    for request in known[:1]:
        from protocols.spec_text import spec_text

        out.print(
            f"{request.kind} for project '{request.project}' asked by {request.requested_by}: "
            f"{spec_text(request.spec_json)}",
            markup=False,
            style="dim",
        )


def _approver(kit: Path | None, by: str) -> str:
    """Who signs off: the subject of the officer's own certificate (--kit), else an explicit --by
    name, else the kit in $FEDERATION_TLS_DIR; never the OS login."""
    if kit is None and not by.strip() and os.environ.get("FEDERATION_TLS_DIR"):
        kit = Path(os.environ["FEDERATION_TLS_DIR"])
    if kit is not None:
        from protocols.identity import PkiError, load_identity

        try:
            identity = load_identity(Path(kit) / "cert.pem")
        except (PkiError, OSError) as exc:
            raise FederationError("bad_input", f"--kit {kit}: no readable cert.pem ({exc})") from None
        if identity.role not in ("privacy_officer", "admin", "operator"):
            raise FederationError(
                "wrong_role",
                f"the kit of '{identity.subject}' has role {identity.role}; approvals are the privacy officer's",
            )
        if by and by != identity.subject:
            raise FederationError(
                "bad_input", f"--by {by} disagrees with your kit's subject {identity.subject}"
            )
        return identity.subject
    if not by.strip():
        raise FederationError(
            "bad_input", "say who approves: --kit YOUR_KIT (its subject is recorded) or --by NAME"
        )
    return by.strip()


@app.command()
def approvals(
    config: Annotated[Path, typer.Option("--config", help="Node config (TOML).")],
    pending: Annotated[
        bool, typer.Option("--pending", help="Show the refused jobs awaiting approval.")
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """The node's approvals (active and revoked), or with --pending the jobs waiting for one."""
    import pandas as pd

    from protocols.spec_text import spec_text

    _, store = _approvals(config)
    if pending:
        rows = [
            {
                "job": spec_text(r.spec_json),
                "job_hash": r.job_hash,
                "template_hash": r.template_hash,
                "kind": r.kind,
                "project": r.project,
                "purpose": r.purpose,
                "legal_basis": r.legal_basis,
                "requested_by": r.requested_by,
                "last_seen": r.last_seen,
                "times": r.times,
            }
            for r in store.requests()
        ]
        columns = [
            "job",
            "job_hash",
            "template_hash",
            "kind",
            "project",
            "purpose",
            "legal_basis",
            "requested_by",
        ]
        print_frame(pd.DataFrame(rows, columns=[*columns, "last_seen", "times"]), fmt)
        return
    rows = [
        {
            "hash": a.hash,
            "scope": a.scope,
            "status": "active" if a.active else "revoked",
            "approved_by": a.approved_by,
            "approved_at": a.approved_at,
            "note": a.note,
            "revoked_by": a.revoked_by or "",
            "revoked_at": a.revoked_at or "",
        }
        for a in store.approvals()
    ]
    columns = ["hash", "scope", "status", "approved_by", "approved_at", "note", "revoked_by", "revoked_at"]
    print_frame(pd.DataFrame(rows, columns=columns), fmt)


# ---------------------------------------------------------------------------- audit


@audit_app.command("verify")
def audit_verify(
    config: Annotated[Path, typer.Option("--config", help="Node config (TOML).")],
    verify_key: Annotated[
        Path | None,
        typer.Option(
            help="The node's public audit key, your own copy (default: the one beside its signing key)."
        ),
    ] = None,
    head: Annotated[
        list[str] | None,
        typer.Option(help="A head the node published, INDEX:HASH (from `federation audit heads`)."),
    ] = None,
    heads_from: Annotated[
        Path | None,
        typer.Option(help="Heads exported with `federation audit heads --format json` (or csv)."),
    ] = None,
) -> None:
    """Check the node's audit log: every entry intact, signed, in order, chained to the one before,
    and holding every head the node published (so no entry was cut from its end)."""
    from nodes.audit import AuditError, parse_head, read_verify_key, verify, verify_key_file
    from nodes.config import load_node_config

    cfg = load_node_config(config)
    path = cfg.state_dir / "audit.log"
    if not path.exists():
        raise FederationError("audit_missing", f"no audit log at {path}", cfg.node_id)
    key_path = verify_key or verify_key_file(cfg.audit_key_path)
    try:
        # No key, no verification: an unsigned check cannot tell a rewritten log from the real one.
        key = read_verify_key(key_path)
        heads = [parse_head(h) for h in head or []]
        if heads_from is not None:
            heads.extend(_heads_from(heads_from, cfg.node_id))
        report = verify(path, verify_key=key, heads=heads)
    except AuditError as exc:
        raise FederationError(exc.rule, exc.message, cfg.node_id) from None
    if not report.ok:
        for problem in report.problems:
            err.print(problem.message, style="red", markup=False)
        raise FederationError(
            report.rule,
            f"audit log {path} failed verification: {len(report.problems)} problem(s)",
            cfg.node_id,
        )
    out.print(
        f"[green]audit log of {cfg.node_id} is intact[/green]: {report.entries} entries, "
        f"{report.signatures_checked} signatures checked, head {report.head_seq}:{report.head_hash[:16]}..."
        + (f", {report.heads_checked} published head(s) found" if heads else ""),
        highlight=False,
    )
    if not heads:
        err.print(
            "warning: no published head given (--head or --heads-from), so entries cut from the end of the "
            "log cannot be detected",
            style="yellow",
            markup=False,
        )


def _heads_from(path: Path, node: str) -> list[Head]:
    """The heads of ``node`` in a file written by `federation audit heads` (JSON or CSV)."""
    import csv
    import io

    from nodes.audit import AuditInputError, parse_head

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FederationError("audit_heads_file", f"cannot read heads file {path}: {exc}", node) from None
    try:
        data = json.loads(text)
        rows = data.get("rows", []) if isinstance(data, dict) else data
    except json.JSONDecodeError:
        rows = list(csv.DictReader(io.StringIO(text)))
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise FederationError("audit_heads_file", f"{path} does not hold heads (node, seq, hash)", node)
    try:
        heads = [parse_head(f"{r.get('seq')}:{r.get('hash')}") for r in rows if r.get("node") == node]
    except AuditInputError as exc:
        raise FederationError(exc.rule, f"{path}: {exc.message}", node) from None
    if not heads:
        raise FederationError("audit_head_missing", f"{path} holds no head of node {node}", node)
    return heads


@audit_app.command("heads")
def audit_heads(
    coordinator: CoordinatorOption = "127.0.0.1:7100",
    node: Annotated[str, typer.Option(help="Only this node.")] = "",
    every: Annotated[bool, typer.Option("--all", help="Every head seen, not only the latest.")] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """The audit chain heads nodes published with their answers, as the coordinator kept them.

    Pass one to `federation audit verify --head INDEX:HASH`, or save `--format json` for `--heads-from`.
    """
    from federation.client import Client

    with Client(coordinator) as fed:
        df = fed.audit_heads(node=node, every=every)
    print_frame(df, fmt)
    for forked in df.attrs.get("forked", []):
        err.print(
            f"warning: node {forked} published two different entries under one number (log rewritten?)",
            style="yellow",
            markup=False,
        )


@audit_app.command("export")
def audit_export(
    config: Annotated[Path, typer.Option("--config", help="Node config (TOML).")],
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """The node's audit log, complete: per entry the requester, the job as SQL, what was released
    (groups, suppressed, epsilon) or why it was refused. ``--format json`` writes every entry whole."""
    import pandas as pd

    from nodes.audit import export
    from nodes.audit_report import CSV_COLUMNS, audit_rows, csv_rows
    from nodes.config import load_node_config

    cfg = load_node_config(config)
    entries = export(cfg.state_dir / "audit.log")
    if fmt == Format.json:
        sys.stdout.write(
            json.dumps({"node": cfg.node_id, "entries": entries}, indent=2, sort_keys=True) + "\n"
        )
        return
    if fmt == Format.csv:
        sys.stdout.write(pd.DataFrame(csv_rows(entries), columns=CSV_COLUMNS).to_csv(index=False))
        return
    rows = audit_rows(entries)
    for row in rows:
        row["job"] = row["job"][:12]
    print_frame(pd.DataFrame(rows, columns=["seq", "time", "kind", "job", "by", "what"]), fmt)


# ---------------------------------------------------------------------------- budgets


def _ledger(config: Path):  # noqa: ANN202 - nodes.* is imported lazily
    from nodes.config import load_node_config
    from nodes.context import open_ledger

    cfg = load_node_config(config)
    return cfg, open_ledger(cfg)


@budget_app.command("set")
def budget_set(
    config: Annotated[Path, typer.Option("--config", help="Node config (TOML).")],
    dataset: Annotated[str, typer.Option(help="Dataset name.")],
    epsilon: Annotated[float, typer.Option(help="Total budget (epsilon at --delta).")],
    project: Annotated[str, typer.Option(help="Project the budget is for.")] = "default",
    delta: Annotated[float, typer.Option(help="The delta at which epsilon is read.")] = 1e-6,
    by: Annotated[str, typer.Option(help="Who sets it (recorded in the history).")] = "",
) -> None:
    """Set the total privacy budget of one dataset for one project (privacy officers, at their node)."""
    import getpass

    from nodes.budgets import set_budget

    cfg, ledger = _ledger(config)
    status = set_budget(cfg, ledger, dataset, project, epsilon, delta, by or getpass.getuser())
    out.print(
        f"budget of {cfg.node_id}.{dataset} for project '{project}': epsilon {status.total_epsilon:g} "
        f"at delta {status.delta:g}; spent {status.spent_epsilon:.4g}, remaining {status.remaining_epsilon:.4g}"
    )


@budget_app.command("cap")
def budget_cap(
    config: Annotated[Path, typer.Option("--config", help="Node config (TOML).")],
    dataset: Annotated[str, typer.Option(help="Dataset name.")],
    epsilon: Annotated[float, typer.Option(help="Total over all projects (epsilon at --delta).")],
    delta: Annotated[float, typer.Option(help="The delta at which epsilon is read.")] = 1e-6,
    by: Annotated[str, typer.Option(help="Who sets it (recorded in the history).")] = "",
) -> None:
    """Set the cap of one dataset over all its projects together (privacy officers, at their node)."""
    import getpass

    from nodes.budgets import set_cap

    cfg, ledger = _ledger(config)
    cap = set_cap(cfg, ledger, dataset, epsilon, delta, by or getpass.getuser())
    out.print(
        f"cap of {cfg.node_id}.{dataset} over all projects: epsilon {cap.total_epsilon:g} at delta "
        f"{cap.delta:g}; spent {cap.spent_epsilon:.4g} by {cap.projects} project(s), "
        f"remaining {cap.remaining_epsilon:.4g}"
    )


@budget_app.command("show")
def budget_show(
    config: Annotated[Path, typer.Option("--config", help="Node config (TOML).")],
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    caps: Annotated[
        bool, typer.Option("--caps", help="Show each dataset's cap over all projects instead.")
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """Budgets, spending and what remains, per dataset and project; and each dataset's cap."""
    import pandas as pd

    cfg, ledger = _ledger(config)
    cap_rows = [
        {
            "dataset": c.dataset,
            "cap_epsilon": c.total_epsilon,
            "spent_epsilon": c.spent_epsilon,
            "remaining_epsilon": c.remaining_epsilon,
            "delta": c.delta,
            "releases": c.charges,
            "projects": c.projects,
            "default": c.is_default,
            "require_budget": ledger.policy(c.dataset).require_budget,
        }
        for c in ledger.caps()
    ]
    cap_frame = pd.DataFrame(cap_rows, columns=list(cap_rows[0]) if cap_rows else ["dataset"])
    if caps:
        print_frame(cap_frame, fmt)
        return
    rows = [
        {
            "dataset": s.dataset,
            "project": s.project,
            "total_epsilon": s.total_epsilon,
            "spent_epsilon": s.spent_epsilon,
            "remaining_epsilon": s.remaining_epsilon,
            "delta": s.delta,
            "releases": s.charges,
            "default": s.is_default,
        }
        for s in ledger.show(project)
    ]
    columns = [
        "dataset",
        "project",
        "total_epsilon",
        "spent_epsilon",
        "remaining_epsilon",
        "delta",
        "releases",
        "default",
    ]
    print_frame(pd.DataFrame(rows, columns=columns), fmt, title=f"budgets per project at {cfg.node_id}")
    if fmt == Format.table and project is None:
        # Both bound every release: the project's budget and its dataset's cap over all projects.
        print_frame(cap_frame, fmt, title=f"caps per dataset over all projects at {cfg.node_id}")


@budget_app.command("history")
def budget_history(
    config: Annotated[Path, typer.Option("--config", help="Node config (TOML).")],
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """Every budget change and every charge, oldest first."""
    import pandas as pd

    _, ledger = _ledger(config)
    rows = [
        {
            "at": h.at,
            "kind": h.kind,
            "dataset": h.dataset,
            "project": h.project if h.kind != "cap" else "(all projects)",
            "epsilon": h.epsilon,
            "by": h.by,
            "note": h.note,
        }
        for h in ledger.history(dataset, project)
    ]
    print_frame(
        pd.DataFrame(rows, columns=["at", "kind", "dataset", "project", "epsilon", "by", "note"]), fmt
    )


@budget_app.command("remaining")
def budget_remaining(
    coordinator: CoordinatorOption = "127.0.0.1:7100",
    project: Annotated[str, typer.Option(help="Project.")] = "default",
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """What remains per node and dataset for a project (read-only, for analysts)."""
    from federation.client import Client

    with Client(coordinator) as fed:
        print_frame(fed.budget(project), fmt)


# ---------------------------------------------------------------------------- demo


@app.command()
def vocabulary() -> None:
    """Print the shared datasets, columns and domains partners map onto (docs/vocabulary.md)."""
    from federation.scenario.vocabulary_doc import render

    # Plain print: the text is Markdown and must reach a pipe unchanged.
    print(render(), end="")


@app.command("demo-data")
def demo_data(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write data and configs into.")] = Path(
        "demo-out"
    ),
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 7,
    rows: Annotated[int, typer.Option(help="Rows per dataset.")] = 5000,
    coordinator: Annotated[
        str, typer.Option(help="Coordinator address written into the configs.")
    ] = "127.0.0.1:7100",
    postgres: Annotated[
        str | None,
        typer.Option(help="PostgreSQL DSN for the partner served from a database ('' to disable)."),
    ] = None,
) -> None:
    """Write the synthetic MIT scenario: six partners' datasets and their node configs."""
    from federation.scenario import postgres_available, write_scenario

    dsn = (
        os.environ.get("FEDERATION_DEMO_PG", "postgresql://postgres@127.0.0.1:5432/test")
        if postgres is None
        else postgres
    )
    if dsn and not postgres_available(dsn):
        err.print(f"[yellow]PostgreSQL not reachable at {dsn}; serving every partner from files[/yellow]")
        dsn = ""
    paths = write_scenario(out_dir, seed=seed, rows=rows, coordinator=coordinator, postgres_dsn=dsn or None)
    for name, path in paths.items():
        out.print(f"{name:16s} {path}")


@app.command()
def demo(
    out_dir: Annotated[Path | None, typer.Option("--out", help="Keep the demo files here.")] = None,
    rows: Annotated[int, typer.Option(help="Rows per dataset.")] = 50_000,
    port: Annotated[int, typer.Option(help="Coordinator port (0: pick a free one).")] = 0,
) -> None:
    """Start a six-partner federation on this machine, run a short tour, stop it again."""
    from federation.demo import run_demo

    run_demo(out_dir=out_dir, rows=rows, port=port, console=out)


def _mount_optional() -> None:
    from federation.pki_cli import pki_app

    app.add_typer(pki_app, name="pki")


_mount_optional()


def main() -> None:
    """Run the CLI: errors as ``federation.entry.run_reporting`` reports them, in red."""
    run_reporting(app, lambda text: err.print(text, style="red", markup=False, highlight=False))


if __name__ == "__main__":
    main()
