"""Federated logistic GLM over six nodes vs statsmodels' Logit on the pooled rows, in the same run.

    python -m bench.bench_model [--rows 1000000] [--features 10]

Six node processes (Parquet sources) and a coordinator over real gRPC fit a binomial GLM by
Fisher scoring, every round's X^T W X and score secure-aggregated (SecAgg+, exact mode). The
baseline is statsmodels' Logit (Newton) on all six partners' rows pooled in one process. Prints
wall time to convergence for each, the ratio federated / pooled, the coefficients' largest gap,
and the per-round split into node compute (statistics and key advert, round 0), SecAgg (rounds
2-4) and the coordinator's solve.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import tomli_w

from bench.signals import local_federation, wait_until_idle, write_signals
from federation.client import Client
from federation.processes import free_port
from federation.scenario import NODES

BOUND = 4.0


def features(node_index: int, rows: int, k: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed * 1000 + node_index)
    x = np.clip(rng.normal(0.0, 1.0, (rows, k)), -BOUND, BOUND)
    beta = np.linspace(-0.5, 0.5, k)
    eta = -0.3 + x @ beta + 0.05 * node_index
    y = (rng.uniform(size=rows) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int8)
    frame = pd.DataFrame(x, columns=[f"x{j}" for j in range(k)])
    frame.insert(0, "unit", np.arange(rows, dtype=np.int64) + node_index * 10**9)
    frame["y"] = y
    return frame


def add_dataset(root: Path, paths: dict[str, Path], rows: int, k: int) -> list[pd.DataFrame]:
    frames = []
    for i, node in enumerate(NODES):
        frame = features(i, rows, k)
        frame.to_parquet(root / "data" / node / "features.parquet", index=False)
        frames.append(frame)
        config = tomllib.loads(paths[node].read_text())
        columns = [{"name": "unit", "local": "unit", "kind": "identifier", "id_type": "text"}]
        columns += [
            {"name": f"x{j}", "local": f"x{j}", "kind": "numeric", "bounds": [-BOUND, BOUND]}
            for j in range(k)
        ]
        columns.append({"name": "y", "local": "y", "kind": "numeric", "bounds": [0.0, 1.0]})
        config["datasets"].append(
            {
                "name": "features",
                "description": "benchmark features",
                "controller": node,
                "exposed": True,
                "privacy_unit": "unit",
                "max_rows_per_unit": 1,
                "source": {"kind": "parquet", "path": f"../data/{node}/features.parquet"},
                "columns": columns,
            }
        )
        paths[node].write_text(tomli_w.dumps(config))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per node")
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument(
        "--dp-rho", type=float, default=0.0, help="also fit under DP at this total rho; report the gap in SEs"
    )
    parser.add_argument("--dp-iterations", type=int, default=6)
    args = parser.parse_args()
    import statsmodels.api as sm

    root = Path(tempfile.mkdtemp(prefix="bench-model-"))
    address = f"127.0.0.1:{free_port()}"
    t0 = time.perf_counter()
    _, paths = write_signals(root, 1000, address)
    frames = add_dataset(root, paths, args.rows, args.features)
    print(
        f"data: {args.rows:,} rows x {args.features} features on each of {len(NODES)} nodes, "
        f"written in {time.perf_counter() - t0:.1f}s"
    )
    names = [f"x{j}" for j in range(args.features)]
    formula = "y ~ " + " + ".join(names)

    procs = local_federation(root, paths, NODES, address)
    procs.start(timeout=300)
    print(f"nodes idle {wait_until_idle(procs, 600):.1f}s after connecting")
    try:
        with Client(address, timeout=1800) as fed:
            t = time.perf_counter()
            fit = fed.glm(formula, data="features", family="binomial", timeout=300)
            federated = time.perf_counter() - t
            noisy = None
            if args.dp_rho > 0:
                t = time.perf_counter()
                noisy = fed.glm(
                    formula,
                    data="features",
                    family="binomial",
                    rho=args.dp_rho,
                    max_iterations=args.dp_iterations,
                    timeout=300,
                )
                dp_seconds = time.perf_counter() - t
    finally:
        procs.stop_all()

    pooled = pd.concat(frames, ignore_index=True)
    del frames
    x = sm.add_constant(pooled[names].to_numpy(dtype=np.float64))
    y = pooled["y"].to_numpy(dtype=np.float64)
    del pooled
    t = time.perf_counter()
    reference = sm.Logit(y, x).fit(disp=0, tol=1e-10)
    baseline = time.perf_counter() - t

    gap = float(np.max(np.abs(fit.params.to_numpy() - reference.params)))
    rounds = fit.iterations
    print(
        f"federated GLM (6 nodes, SecAgg, exact): {federated:7.2f} s, {rounds} rounds, converged {fit.converged}"
    )
    print(
        f"statsmodels Logit on pooled {len(y):,} rows: {baseline:7.2f} s, {reference.mle_retvals['iterations']} iterations"
    )
    print(f"ratio federated / pooled: {federated / baseline:.2f}x (target <= 1)")
    print(f"largest coefficient gap: {gap:.2e}")
    if noisy is not None:
        in_se = ((noisy.params - fit.params).abs() / fit.bse).max()
        print(
            f"DP fit at total rho {args.dp_rho:g}, cap {args.dp_iterations} rounds: {noisy.iterations} run "
            f"(converged {noisy.converged}, rho {noisy.rho:.3f} charged per node), {dp_seconds:.2f} s; "
            f"largest |coef_dp - coef_exact| = {in_se:.3f} standard errors (target <= 0.5); "
            f"largest noise sd / SE {(noisy.noise_sd / fit.bse).max():.3f}"
        )
    split = fit.seconds
    print(
        f"per round: node compute {split['nodes'] / rounds:.2f} s, SecAgg {split['secagg'] / rounds:.2f} s, "
        f"solve {split['solve'] / rounds * 1e3:.2f} ms "
        f"(rest: {(federated - split['nodes'] - split['secagg'] - split['solve']) / rounds:.2f} s per round "
        "in the SDK call, job setup and the coordinator's relays)"
    )


if __name__ == "__main__":
    main()
