"""The analyst SDK: ``Client`` talks to the coordinator's Analyst service and returns DataFrames."""

from __future__ import annotations

import getpass
import math
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import grpc
import pandas as pd
from google.protobuf.json_format import MessageToDict

from federation.display import ResultFrame
from federation.explain import accuracy_epsilon, explain_frame
from federation.flower import FlowerFit, make_grid, run_flower
from federation.glm import FAMILIES, GLMResult, parse_formula, result_from
from federation.kit import check_kit, explain_handshake
from federation.mock import mock_frame
from federation.overlap import (
    JobProgress,
    OverlapResult,
    ProgressCallback,
    aggregate_frame,
    build_request,
    result_from_response,
)
from federation.query import parse_query, parse_with_post
from privacy.auto_bounds import DEFAULT_QUANTILE as DEFAULT_BOUND_QUANTILE
from privacy.auto_bounds import bound_share as bound_share_of
from privacy.auto_bounds import check_quantile
from protocols import federation_pb2 as pb
from protocols import federation_pb2_grpc as pb_grpc
from protocols.channels import channel_options
from protocols.errors import FederationError
from protocols.identity import grpc_channel_credentials
from protocols.privacy_request import check_privacy, check_query
from protocols.spec_limits import check_name
from protocols.values import from_value, to_value

if TYPE_CHECKING:
    from federation.flower_grid import FlowerGrid

DEFAULT_COORDINATOR = "127.0.0.1:7100"
_KINDS = {pb.CATEGORY: "category", pb.NUMERIC: "numeric", pb.DATE: "date", pb.IDENTIFIER: "identifier"}


class CoordinatorUnavailable(FederationError):
    """The coordinator cannot be reached or answered with a transport error."""


_RULE_SUFFIX = re.compile(r"\s*\[rule: ([a-z0-9_]+)\]$")
_NAMED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
)


def _rpc_error(exc: grpc.RpcError, address: str) -> FederationError:
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
    named = _RULE_SUFFIX.search(details)
    if named is not None and code in _NAMED:
        # The coordinator refused the request, or this caller, and named the rule.
        return FederationError(named.group(1), details[: named.start()])
    if code == grpc.StatusCode.UNAVAILABLE:
        return CoordinatorUnavailable("coordinator_unreachable", f"cannot reach the coordinator at {address}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CoordinatorUnavailable("timeout", f"the coordinator at {address} did not answer in time")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return FederationError(
            "oversized_request", f"the request is larger than the coordinator accepts ({details})"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED or code == grpc.StatusCode.PERMISSION_DENIED:
        return FederationError("not_authorised", details or "the coordinator refused this identity")
    name = code.name if code else "error"
    return FederationError("coordinator_error", f"the coordinator answered {name}: {details}")


PROGRESS_POLL_SECONDS = 0.5
JOBS_PAGE = 200  # jobs asked for per page; the coordinator may answer fewer (it caps pages by size)


def check_timeout(timeout: float | None) -> None:
    """A job's timeout must be a finite number of seconds above 0 (the coordinator caps it further)."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
        raise FederationError(
            "invalid_timeout", f"timeout must be a finite number of seconds above 0, not {timeout!r}"
        )


class Client:
    """A connection to the federation's coordinator.

    >>> fed = Client("localhost:7100")
    >>> fed.query("SELECT port, COUNT(*) AS n FROM declarations GROUP BY port")
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = 60.0,
        user: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        tls_dir: str | Path | None = None,
    ) -> None:
        """``tls_dir`` is your certificate kit (cert.pem, key.pem, ca.pem), default ``$FEDERATION_TLS_DIR``.

        Without a kit the client speaks plaintext, which only a development coordinator accepts.
        """
        self.address = address or os.environ.get("FEDERATION_COORDINATOR", DEFAULT_COORDINATOR)
        self.timeout = timeout
        self.user = user or os.environ.get("FEDERATION_USER") or getpass.getuser()
        kit = tls_dir or os.environ.get("FEDERATION_TLS_DIR")
        self._kit: Path | None = None
        if credentials is None and kit:
            folder = Path(kit)
            check_kit(folder)  # expired, not yet valid or foreign: said before dialing (federation/kit.py)
            self._kit = folder
            credentials = grpc_channel_credentials(folder / "cert.pem", folder / "key.pem", folder / "ca.pem")
        if credentials is not None:
            self._channel = grpc.secure_channel(self.address, credentials, options=channel_options())
        else:
            self._channel = grpc.insecure_channel(self.address, options=channel_options())
        self._stub = pb_grpc.AnalystStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _follow(
        self, method: str, request: Any, timeout: float | None, progress: ProgressCallback | None
    ) -> Any:
        """Call ``method``; while it runs, poll ``Progress`` and pass each change to ``progress``."""
        if progress is None:
            return self._call(method, request, timeout=timeout)
        request.progress_id = uuid.uuid4().hex
        metadata = (("x-federation-user", self.user),)
        wait = timeout or self.timeout
        try:
            future = getattr(self._stub, method).future(request, timeout=wait, metadata=metadata)
            seen: tuple[str, int] | None = None

            def poll() -> None:
                nonlocal seen
                try:
                    status = self._stub.Progress(
                        pb.ProgressRequest(progress_id=request.progress_id), timeout=5, metadata=metadata
                    )
                except grpc.RpcError:
                    return  # progress is best effort; the job's own answer decides
                if status.found and (status.phase, status.step) != seen:
                    seen = (status.phase, status.step)
                    progress(JobProgress(status.phase, status.step, status.steps, status.detail))

            # The call carries its own deadline; the loop ends with it at the latest.
            deadline = time.monotonic() + wait + PROGRESS_POLL_SECONDS
            while not future.done() and time.monotonic() < deadline:
                try:
                    future.result(timeout=PROGRESS_POLL_SECONDS)
                except grpc.FutureTimeoutError:
                    poll()
            response = future.result()
            poll()  # the final state: done, or where it failed
            return response
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def _error(self, exc: grpc.RpcError) -> FederationError:
        code = exc.code() if hasattr(exc, "code") else None
        if code == grpc.StatusCode.UNAVAILABLE and self._kit is not None:
            # "Socket closed" may be a refused handshake: say which certificate rule failed.
            refused = explain_handshake(self.address, self._kit)
            if refused is not None:
                return refused
        return _rpc_error(exc, self.address)

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self._stub, method)(
                request, timeout=timeout or self.timeout, metadata=(("x-federation-user", self.user),)
            )
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    # ------------------------------------------------------------------ discovery

    def nodes(self, forget: str = "") -> pd.DataFrame:
        """Who is connected, since when, serving which datasets; ``forget`` (admins only) first
        drops that disconnected node's entry."""
        response = self._call("Nodes", pb.NodesRequest(forget=forget))
        rows = [
            {
                "node": n.node_id,
                "connected": n.connected,
                "datasets": ", ".join(n.datasets),
                "last_seen": pd.to_datetime(n.last_seen_unix_ms, unit="ms", utc=True)
                if n.last_seen_unix_ms
                else None,
            }
            for n in response.nodes
        ]
        return pd.DataFrame(rows, columns=["node", "connected", "datasets", "last_seen"])

    def dataset_infos(self) -> list[pb.DatasetInfo]:
        return list(self._call("Datasets", pb.DatasetsRequest()).datasets)

    def datasets(self) -> pd.DataFrame:
        """Public schema metadata of every served dataset: one row per (node, dataset, column)."""
        rows = []
        for ds in self.dataset_infos():
            for col in ds.columns:
                detail = ""
                if col.kind == pb.CATEGORY:
                    detail = ", ".join(str(from_value(v)) for v in col.domain)
                elif col.kind == pb.NUMERIC:
                    detail = f"[{col.lower:g}, {col.upper:g}]"
                elif col.kind == pb.DATE and col.first_day:
                    detail = f"[{col.first_day}, {col.last_day}]"
                elif col.kind == pb.IDENTIFIER:
                    detail = col.id_type + (" (privacy unit)" if col.name == ds.privacy_unit else "")
                rows.append(
                    {
                        "node": ds.node,
                        "dataset": ds.name,
                        "column": col.name,
                        "kind": _KINDS.get(col.kind, "?"),
                        "domain_or_bounds": detail,
                    }
                )
        return pd.DataFrame(rows, columns=["node", "dataset", "column", "kind", "domain_or_bounds"])

    def mock(self, dataset: str, n: int = 100, seed: int | None = None) -> pd.DataFrame:
        """Synthetic rows with the declared schema of ``node.dataset`` (or ``dataset``), for exploring.

        The rows are drawn from the public metadata only (domains, bounds); no node is asked for data.
        """
        node, _, name = dataset.rpartition(".")
        infos = [d for d in self.dataset_infos() if d.name == name and (not node or d.node == node)]
        if not infos:
            raise FederationError("unknown_dataset", f"no connected node serves dataset '{dataset}'")
        return mock_frame(infos[0], n=n, seed=seed)

    # ------------------------------------------------------------------ Flower strategies

    def flower_grid(
        self,
        model: str,
        data: str,
        outcome: str,
        features: Sequence[str],
        *,
        rounds: int = 10,
        epsilon: float | None = None,
        rho: float | None = None,
        clip_norm: float = 0.0,
        learning_rate: float = 0.1,
        local_epochs: int = 1,
        batch_size: int = 32,
        proximal_mu: float = 0.0,
        l2: float = 0.0,
        hidden: Sequence[int] = (),
        seed: int = 0,
        project: str = "",
        max_rows_per_unit: int = 0,
        node_wait: float = 30.0,
        timeout: float | None = None,
    ) -> FlowerGrid:
        """A ``flwr.serverapp.Grid`` over this federation for a Flower strategy (docs/modelling.md).

        ``model`` is a node trainer: logistic, softmax or mlp. Every message batch the strategy
        sends becomes one secure round on every node serving ``data``; ``rounds`` caps the secure
        rounds (train and evaluate) and, with ``epsilon``/``rho`` (the total), splits the budget
        over them (DP-FedAvg: per-unit updates clipped to ``clip_norm``). Flower's config keys
        ``lr``, ``local-epochs``, ``batch-size`` and ``proximal-mu`` override the defaults here.

        >>> grid = fed.flower_grid("softmax", "signals", "phenomenon", ["region", "year"])
        >>> FedAvg(fraction_evaluate=0.0).start(grid=grid, initial_arrays=grid.initial_arrays())
        """
        check_timeout(timeout)
        wait = (timeout or 0.0) * 4 + max(self.timeout, 60.0)

        def call(request: pb.ModelRoundRequest) -> pb.ModelRoundResponse:
            response: pb.ModelRoundResponse = self._call("ModelRound", request, timeout=wait)
            return response

        grid, _, _ = make_grid(
            self.dataset_infos,
            call,
            model,
            data,
            outcome,
            list(features),
            rounds=rounds,
            node_wait=node_wait,
            timeout=timeout or 0.0,
            epsilon=epsilon,
            rho=rho,
            clip_norm=clip_norm,
            learning_rate=learning_rate,
            local_epochs=local_epochs,
            batch_size=batch_size,
            proximal_mu=proximal_mu,
            l2=l2,
            hidden=hidden,
            seed=seed,
            project=project,
            max_rows_per_unit=max_rows_per_unit,
        )
        return grid

    def fit_flower(
        self,
        strategy: Any,
        *,
        rounds: int = 10,
        model: str = "logistic",
        data: str,
        outcome: str,
        features: Sequence[str],
        train_config: Mapping[str, float | int] | None = None,
        **options: Any,
    ) -> FlowerFit:
        """Run a Flower ``strategy`` (FedAvg, FedAvgM, FedProx, FedAdam, FedYogi, FedAdagrad) for
        ``rounds`` rounds over the nodes serving ``data``; other keywords as ``flower_grid``.

        >>> fit = fed.fit_flower(FedAvg(fraction_evaluate=0.0), rounds=10, model="softmax",
        ...                      data="signals", outcome="phenomenon", features=["region", "year"])
        >>> fit.params, fit.history
        """
        return run_flower(
            self.flower_grid, strategy, rounds, model, data, outcome, features, train_config, options
        )

    # ------------------------------------------------------------------ queries

    def query(
        self,
        sql: str,
        *,
        min_nodes: int = 0,
        timeout: float | None = None,
        epsilon: float | None = None,
        rho: float | None = None,
        project: str = "",
        secure: bool = False,
        bounds: dict[str, tuple[float, float]] | Literal["auto"] | None = None,
        max_rows_per_unit: int | None = None,
        diagnostics: bool = True,
        accuracy: float | dict[str, float] | None = None,
        bound_quantile: float = DEFAULT_BOUND_QUANTILE,
        bound_share: float | None = None,
    ) -> pd.DataFrame:
        """Run an aggregate query over every node that serves the dataset; return a DataFrame.

        ``bounds`` maps a numeric column to tighter clamping (lo, hi) for its SUM/AVG, and
        ``max_rows_per_unit`` lowers the rows one unit may contribute: both within what the dataset
        declares, both shrink the noise (docs/privacy.md). ``accuracy`` asks for a 95% half-width
        (a number for the first aggregate, or {alias: half-width}); the smallest epsilon that meets
        it is spent, or the query is refused with ``accuracy_unreachable``. ``diagnostics=False``
        spends nothing on the truncation and clamping figures.

        ``bounds="auto"`` lets each node choose the upper clamp of every SUM/AVG without bounds as
        a DP quantile (``bound_quantile``, default 0.99) of its values, spending ``bound_share``
        of epsilon (default 0.1) on it; ``df.attrs["chosen_bounds"]`` lists what each node chose.

        ``df.attrs`` holds the metadata: job id, per-node outcome and cost, suppressed cells, noise,
        the bounding figures and which figures were moved into their feasible range.

        HAVING, ORDER BY and LIMIT are applied here, to the released figures: nodes never see them
        and they cost nothing (``df.attrs["post_processing"]`` says which ran).
        """
        check_timeout(timeout)
        spec = self._spec(
            sql, epsilon, rho, bounds, max_rows_per_unit, diagnostics, bound_quantile, bound_share
        )
        spec.min_nodes = max(0, int(min_nodes))
        check_name(project, "the project name")
        spec.project = project
        spec.secure = bool(secure)  # secure aggregation with distributed noise (docs/secure-aggregation.md)
        chosen = None
        if accuracy is not None:
            if epsilon is not None or rho is not None:
                raise FederationError("privacy_request", "give accuracy or a budget (epsilon, rho), not both")
            if secure:
                raise FederationError(
                    "accuracy", "accuracy= plans plain queries; give epsilon with secure=True"
                )
            chosen = accuracy_epsilon(spec, self._infos(spec), accuracy)
            spec.privacy.epsilon = chosen
        request = pb.QueryRequest(spec=spec, sql=sql, timeout_seconds=timeout or 0.0)
        call_timeout = (timeout or 30.0) + 30.0
        if any(a.function == pb.COUNT_DISTINCT and not a.per_node for a in spec.aggregates):
            # A union across nodes runs several steps per node (docs/distinct.md), each within ``timeout``.
            call_timeout += 10 * max(timeout or 0.0, 120.0)
        response: pb.QueryResponse = self._call("Query", request, timeout=call_timeout)
        if not response.ok:
            raise FederationError(response.error_rule or "refused", response.error)
        # HAVING, ORDER BY and LIMIT: post-processing of the released figures, here and only here.
        df = parse_with_post(sql)[1].apply(to_frame(spec, response))
        if chosen is not None:
            df.attrs["epsilon_for_accuracy"] = chosen
        return df

    def explain(
        self,
        sql: str,
        *,
        epsilon: float | None = None,
        rho: float | None = None,
        bounds: dict[str, tuple[float, float]] | Literal["auto"] | None = None,
        max_rows_per_unit: int | None = None,
        diagnostics: bool = True,
        bound_quantile: float = DEFAULT_BOUND_QUANTILE,
        bound_share: float | None = None,
    ) -> pd.DataFrame:
        """What a query would cost and how noisy it would be, before anything is spent.

        Computed from the nodes' public metadata alone (privacy/explain.py, the same planning the
        nodes run): no node reads data and no budget is charged. One row per aggregate for the
        combined figure (node "all"), then one per node and aggregate: noise sd, 95% half-width,
        the node's suppression threshold and the epsilon it would charge (or why it would refuse).
        """
        spec = self._spec(
            sql, epsilon, rho, bounds, max_rows_per_unit, diagnostics, bound_quantile, bound_share
        )
        return explain_frame(spec, self._infos(spec))

    def _infos(self, spec: pb.QuerySpec) -> list[pb.DatasetInfo]:
        return [
            d
            for d in self.dataset_infos()
            if d.name == spec.dataset and (not spec.node or d.node == spec.node)
        ]

    @staticmethod
    def _spec(
        sql: str,
        epsilon: float | None,
        rho: float | None,
        bounds: dict[str, tuple[float, float]] | Literal["auto"] | None,
        max_rows_per_unit: int | None,
        diagnostics: bool,
        bound_quantile: float = DEFAULT_BOUND_QUANTILE,
        bound_share: float | None = None,
    ) -> pb.QuerySpec:
        spec = parse_query(sql)
        ask = check_privacy(epsilon, rho)  # the coordinator and every node check it again
        if ask.epsilon is not None:
            spec.privacy.epsilon = ask.epsilon
        if ask.rho is not None:
            spec.privacy.rho = ask.rho
        if isinstance(bounds, str):
            if bounds != "auto":
                raise FederationError(
                    "bounds", f"bounds must be {{column: (lower, upper)}} or 'auto', not {bounds!r}"
                )
            apply_auto_bounds(spec, bound_quantile, bound_share)
        else:
            apply_bounds(spec, bounds or {})
        if max_rows_per_unit is not None:
            if (
                isinstance(max_rows_per_unit, bool)
                or not isinstance(max_rows_per_unit, int)
                or max_rows_per_unit < 1
            ):
                raise FederationError("max_rows_per_unit", "max_rows_per_unit must be a whole number >= 1")
            spec.max_rows_per_unit = max_rows_per_unit
        spec.no_diagnostics = not diagnostics
        check_query(spec)  # bounds written in the SQL too; the coordinator and every node check again
        return spec

    # ------------------------------------------------------------------ entity overlap

    def overlap(
        self,
        on: str,
        datasets: list[str],
        *,
        where: dict[str, str] | None = None,
        epsilon: float | None = None,
        project: str = "",
        timeout: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> OverlapResult:
        """Entities per membership pattern across ``datasets`` ("node.dataset"), by private set intersection.

        ``where`` maps a dataset to a condition on its rows, e.g. ``{"douane.declarations": "port =
        'Rotterdam'"}``. Identifiers never leave a node readable (docs/overlap.md). ``progress``,
        if given, is called with a :class:`JobProgress` each time the job moves on.
        """
        request = build_request(on, datasets, where, epsilon, project, timeout)
        deadline = _overlap_deadline(timeout, len(datasets))
        return result_from_response(self._follow("Overlap", request, deadline, progress))

    def overlap_aggregate(
        self,
        on: str,
        base: str,
        present_at: list[str],
        group_by: str,
        sum: str,  # noqa: A002 - the analyst's word for it
        *,
        where: dict[str, str] | None = None,
        epsilon: float | None = None,
        project: str = "",
        timeout: float | None = 120.0,
        progress: ProgressCallback | None = None,
    ) -> pd.DataFrame:
        """Count and sum of ``sum`` per ``group_by`` over the entities of ``base`` also present at
        every dataset in ``present_at`` (intersection-sum, Ion et al. 2020). ``timeout`` is per step;
        ``progress`` as for :meth:`overlap`."""
        others = [present_at] if isinstance(present_at, str) else list(present_at)
        request = build_request(
            on, [base, *others], where, epsilon, project, timeout, aggregate=(group_by, sum)
        )
        deadline = _overlap_deadline(timeout, len(others) + 1)
        return aggregate_frame(self._follow("OverlapAggregate", request, deadline, progress), sum)

    def glm(
        self,
        formula: str,
        data: str,
        family: str = "gaussian",
        *,
        epsilon: float | None = None,
        rho: float | None = None,
        project: str = "",
        max_iterations: int = 25,
        tolerance: float = 1e-8,
        bounds: dict[str, tuple[float, float]] | None = None,
        max_rows_per_unit: int = 0,
        node: str = "",
        event: str | int | None = None,
        timeout: float | None = None,
    ) -> GLMResult:
        """Fit a GLM across the nodes serving ``data`` by Fisher scoring (docs/modelling.md).

        Each iteration's statistics are secure-aggregated; with ``epsilon`` or ``rho`` (the total
        over every iteration) they carry distributed Gaussian noise. ``bounds`` clamps numeric
        covariates tighter than declared (DP only). ``event`` is the level of a category outcome
        coded 1 in a binomial model (default: the last level of a two-level category).

        >>> fed.glm("anomaly ~ turnover + C(sector)", data="vat_returns", family="binomial", epsilon=1.0)
        """
        if family not in FAMILIES:
            raise FederationError(
                "model_family", f"family must be one of {', '.join(FAMILIES)}, got {family!r}"
            )
        infos = [i for i in self.dataset_infos() if i.name == data and (not node or i.node == node)]
        if not infos:
            raise FederationError("unknown_dataset", f"no connected node serves dataset '{data}'")
        spec = parse_formula(formula, infos[0])
        spec.family = family
        spec.trainer = "glm"
        spec.max_iterations = int(max_iterations)
        spec.tolerance = float(tolerance)
        spec.project = project
        spec.max_rows_per_unit = int(max_rows_per_unit)
        spec.node = node
        if event is not None:
            spec.event.CopyFrom(to_value(event))
        ask = check_privacy(epsilon, rho)
        spec.privacy.epsilon = ask.epsilon or 0.0
        spec.privacy.rho = ask.rho or 0.0
        for cov in spec.covariates:
            if bounds and cov.column in bounds:
                cov.bounds.lower, cov.bounds.upper = (float(v) for v in bounds[cov.column])
        unknown = sorted(set(bounds or {}) - {c.column for c in spec.covariates})
        if unknown:
            raise FederationError(
                "model_formula", f"bounds given for columns not in the formula: {', '.join(unknown)}"
            )
        # ``timeout`` bounds each step at the nodes; the call waits for every round's four steps.
        wait = max(self.timeout, (timeout or 60.0) * 4 * max_iterations)
        request = pb.ModelRequest(spec=spec, timeout_seconds=timeout or 0.0, formula=formula)
        response: pb.ModelResponse = self._call("Model", request, timeout=wait)
        return result_from(response, family, formula, data)

    def budget(self, project: str = "") -> pd.DataFrame:
        """What remains of the privacy budget per node and dataset for ``project`` (read-only).

        Budgets are set by each partner's privacy officer at their own node; nobody can change them
        from here.
        """
        response = self._call("Budget", pb.BudgetRequest(project=project))
        rows = [
            {
                "node": line.node,
                "dataset": line.dataset,
                "project": line.project,
                "total_epsilon": line.total_epsilon,
                "spent_epsilon": line.spent_epsilon,
                "remaining_epsilon": line.remaining_epsilon,
                "delta": line.delta,
                "releases": line.releases,
            }
            for line in response.lines
        ]
        columns = [
            "node",
            "dataset",
            "project",
            "total_epsilon",
            "spent_epsilon",
            "remaining_epsilon",
            "delta",
            "releases",
        ]
        df = pd.DataFrame(rows, columns=columns)
        df.attrs = {"missing": {n.node: n.reason for n in response.nodes if n.status != "answered"}}
        return df

    def jobs(self, limit: int = 50, project: str = "", page_token: str = "") -> pd.DataFrame:
        """The coordinator's record of recent jobs you may read: who, when, for which project and
        purpose, which nodes took part and what each charged (``epsilon`` is the total over the nodes).

        Up to ``limit`` jobs, newest first, fetched page by page. ``df.attrs["next_page_token"]``
        continues where this frame ends (pass it as ``page_token``); it is empty at the oldest job.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise FederationError("bad_input", f"limit must be a whole number >= 1, not {limit!r}")
        records: list[pb.JobRecord] = []
        token = page_token
        for _ in range(limit):  # every page holds at least one job, so this bounds the loop
            page = min(limit - len(records), JOBS_PAGE)
            response = self._call("Jobs", pb.JobsRequest(limit=page, project=project, page_token=token))
            records.extend(response.jobs)
            token = response.next_page_token
            if not token or len(records) >= limit or not response.jobs:
                break
        rows = [
            {
                "job_id": j.job_id,
                "when": pd.to_datetime(j.created_unix_ms, unit="ms", utc=True),
                "by": j.requested_by,
                "project": j.project,
                "purpose": j.purpose,
                "legal_basis": j.legal_basis,
                "status": j.status,
                "nodes": ", ".join(_node_cost(n) for n in j.nodes),
                "epsilon": j.epsilon,
                "sql": j.sql,
                "error": j.error,
                "result_digest": j.result_digest[:16],
            }
            for j in records[:limit]
        ]
        columns = ["job_id", "when", "by", "project", "purpose", "legal_basis", "status", "nodes", "epsilon"]
        df = pd.DataFrame(rows, columns=[*columns, "sql", "error", "result_digest"])
        df.attrs = {"next_page_token": token}
        return df

    def audit_heads(self, node: str = "", every: bool = False) -> pd.DataFrame:
        """The audit chain heads nodes published with their answers, latest per node (or ``every`` one).

        Give one to ``federation audit verify --head`` (or export them for ``--heads-from``): a node's log
        that no longer holds a head it published has lost entries. ``attrs["forked"]`` names nodes
        that published two different entries under one number.
        """
        response = self._call("AuditHeads", pb.AuditHeadsRequest(node=node, all=every))
        rows = [
            {
                "node": h.node,
                "seq": h.seq,
                "hash": h.hash,
                "job_id": h.job_id,
                "seen": pd.to_datetime(h.seen_unix_ms, unit="ms", utc=True),
            }
            for h in response.heads
        ]
        df = pd.DataFrame(rows, columns=["node", "seq", "hash", "job_id", "seen"])
        df.attrs = {"forked": list(response.forked)}
        return df

    def projects(self) -> pd.DataFrame:
        """The projects jobs may run for: purpose, legal basis, members, expiry and approval quorum."""
        response = self._call("Projects", pb.ProjectsRequest())
        rows = [
            {
                "project": p.name,
                "purpose": p.purpose,
                "legal_basis": p.legal_basis,
                "expires": p.expires,
                "expired": p.expired,
                "member": p.member,
                "members": ", ".join(p.members),
                "quorum": f"{p.quorum} of {', '.join(p.approvers) or 'the nodes taking part'}"
                if p.quorum
                else "",
            }
            for p in response.projects
        ]
        columns = ["project", "purpose", "legal_basis", "expires", "expired", "member", "members", "quorum"]
        return pd.DataFrame(rows, columns=columns)


def apply_bounds(spec: pb.QuerySpec, bounds: dict[str, tuple[float, float]]) -> None:
    """Set clamping ``bounds`` {column: (lo, hi)} on every SUM/AVG of that column that has none in its SQL."""
    for column, pair in bounds.items():
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise FederationError("bounds", f"bounds for '{column}' must be a pair (lower, upper)")
        lo, hi = pair
        if any(
            isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in (lo, hi)
        ):
            raise FederationError("bounds", f"bounds for '{column}' must be finite numbers")
        if lo > hi:
            raise FederationError(
                "bounds", f"bounds for '{column}': the lower bound is above the upper bound"
            )
        targets = [
            a for a in spec.aggregates if a.function in (pb.SUM, pb.AVG) and a.column == column.lower()
        ]
        if not targets:
            raise FederationError("bounds", f"bounds name '{column}', which no SUM or AVG of the query uses")
        for agg in targets:
            if not agg.HasField("bounds"):
                agg.bounds.lower, agg.bounds.upper = float(lo), float(hi)


def apply_auto_bounds(spec: pb.QuerySpec, quantile: float, share: float | None) -> None:
    """Ask every node to choose the upper clamp of each SUM/AVG without bounds as a DP quantile
    (privacy/auto_bounds.py), spending ``share`` of epsilon on it (None: the node's default)."""
    try:
        q = check_quantile(quantile)
        spec.privacy.bound_share = bound_share_of(share) if share is not None else 0.0
    except FederationError as exc:
        raise FederationError(exc.rule, exc.message) from None
    targets = [a for a in spec.aggregates if a.function in (pb.SUM, pb.AVG) and not a.HasField("bounds")]
    if not targets:
        raise FederationError(
            "bound_quantile", "bounds='auto' needs a SUM or AVG without bounds in the query"
        )
    for agg in targets:
        agg.bound_quantile = q


def _node_cost(outcome: pb.NodeOutcome) -> str:
    cost = f" eps {outcome.cost.epsilon:.4g}" if outcome.cost.epsilon else ""
    return f"{outcome.node}:{outcome.status}{cost}"


def _overlap_deadline(step_timeout: float | None, parties: int) -> float:
    """An overlap runs about ``parties + 4`` steps, each bounded by the per-step timeout."""
    return (step_timeout or 30.0) * (parties + 4) + 30.0


def to_frame(spec: pb.QuerySpec, response: pb.QueryResponse) -> pd.DataFrame:
    """Turn a combined response into a DataFrame; suppressed cells become missing values."""
    group_cols = list(spec.group_by)
    agg_cols = [a.alias for a in spec.aggregates]
    records = []
    suppressed = []
    noise: dict[str, list[dict[str, Any]]] = {alias: [] for alias in agg_cols}
    for row in response.rows:
        key = [from_value(v) for v in row.key]
        record: dict[str, Any] = dict(zip(group_cols, key, strict=True))
        for alias, cell in zip(agg_cols, row.cells, strict=True):
            record[alias] = None if cell.suppressed else cell.value
            if not cell.suppressed and cell.noise_sd > 0:
                noise[alias].append(
                    {
                        "group": dict(zip(group_cols, key, strict=True)),
                        "sd": cell.noise_sd,
                        "ci95": (cell.ci_low, cell.ci_high),
                        "clipped": cell.clipped,  # value or interval moved into the feasible range
                    }
                )
        if row.suppressed:
            suppressed.append(
                {"group": dict(zip(group_cols, key, strict=True)), "by": list(row.suppressed_by)}
            )
        records.append(record)
    df = ResultFrame(records, columns=group_cols + agg_cols)
    for agg, alias in zip(spec.aggregates, agg_cols, strict=True):
        values = pd.to_numeric(df[alias], errors="coerce")
        if agg.function in (pb.COUNT, pb.COUNT_DISTINCT) and values.dropna().mod(1).eq(0).all():
            df[alias] = values.astype("Int64")
        else:
            df[alias] = values.astype("Float64")
    df.attrs = {
        "job_id": response.job_id,
        "nodes": [MessageToDict(n, preserving_proto_field_name=True) for n in response.nodes],
        "answered": [n.node for n in response.nodes if n.status == "answered"],
        "missing": {n.node: n.reason for n in response.nodes if n.status != "answered"},
        "suppressed": suppressed,
        "noise": {k: v for k, v in noise.items() if v},
        "feasible": _feasible(agg_cols, response),
        "bounding": _bounding(response),
    }
    if response.chosen_bounds:
        # Per aggregate, the clamp each node chose by a DP quantile and what choosing it cost.
        chosen: dict[str, dict[str, Any]] = {}
        for c in response.chosen_bounds:
            chosen.setdefault(c.aggregate, {})[c.node] = {"bounds": (c.lower, c.upper), "epsilon": c.epsilon}
        df.attrs["chosen_bounds"] = chosen
    # Which COUNT(DISTINCT) was computed: "union" (each entity once across nodes) or "per_node_sum".
    kinds = dict(response.distinct)
    if kinds:
        df.attrs["distinct"] = next(iter(kinds.values())) if len(set(kinds.values())) == 1 else "mixed"
        df.attrs["distinct_by_column"] = kinds
    return df


def _feasible(aliases: list[str], response: pb.QueryResponse) -> dict[str, tuple[float, float]]:
    """The range any exact answer of each aggregate lies in (docs/privacy.md, feasible range)."""
    for row in response.rows:
        return {a: (c.feasible_low, c.feasible_high) for a, c in zip(aliases, row.cells, strict=True)}
    return {}


def _bounding(response: pb.QueryResponse) -> dict[str, Any]:
    """The noisy bounding figures: units cut by truncation, values moved by clamping per aggregate."""
    out: dict[str, Any] = {}
    for d in response.diagnostics:
        figure = {"value": d.value, "sd": d.noise_sd, "ci95": (d.ci_low, d.ci_high)}
        if d.name == "values_clamped":
            out.setdefault("values_clamped", {})[d.aggregate] = figure
        else:
            out[d.name] = figure
    return out


def with_intervals(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of a query result with a ``<column> 95% CI`` text column beside each noisy column."""
    out = df.copy()
    for column, cells in df.attrs.get("noise", {}).items():
        group_cols = list(cells[0]["group"]) if cells else []
        bounds = {tuple(cell["group"].get(g) for g in group_cols): cell["ci95"] for cell in cells}
        texts = []
        for _, row in df.iterrows():
            ci = bounds.get(tuple(row[g] for g in group_cols))
            texts.append(f"[{ci[0]:,.1f}, {ci[1]:,.1f}]" if ci else "")
        out.insert(out.columns.get_loc(column) + 1, f"{column} 95% CI", texts)
    out.attrs = df.attrs
    return out
