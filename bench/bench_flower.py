"""Flower FedAvg through the federation vs Flower's own deployment runtime, seconds per round.

    python -m bench.bench_flower [--rows 20000] [--features 10] [--rounds 10] [--nodes 6]

Same run, same data partitions, same numpy trainer (nodes/trainers/sgd.py), same FedAvg:

* federation: ``fed.fit_flower(FedAvg(...))`` against the federation's node processes and
  coordinator over real gRPC; every round is one model round, secure-aggregated (SecAgg+, exact
  mode), the strategy gets one aggregated reply;
* Flower: ``flower-superlink`` and one ``flower-supernode`` per partition on loopback (insecure),
  the same FedAvg in a ServerApp and the trainer in a ClientApp (bench/flower_app.py), started
  with ``flwr run``; each ClientApp reads its node's partition, built into the same design the
  nodes build (intercept, features scaled to [-1, 1] by their bounds).

Per-round seconds are taken between rounds inside each strategy's own loop (its evaluate_fn is
called after every round), so start-up is left out of both. Prints both, their ratio (target: the
federation >= 10x faster per round) and both runs' final training loss on the pooled rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp.strategy import FedAvg

from bench.bench_model import BOUND, add_dataset
from bench.signals import local_federation, wait_until_idle, write_signals
from federation.client import Client
from federation.processes import free_port
from federation.scenario import NODES

LEARNING_RATE, EPOCHS, BATCH = 0.5, 1, 64
APP_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "federation-bench"
version = "1.0.0"
description = "Flower's deployment runtime as the benchmark's baseline"
license = "Apache-2.0"
dependencies = ["flwr>=1.41"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "federation"

[tool.flwr.app.components]
serverapp = "flower_app:server"
clientapp = "flower_app:client"

[tool.flwr.app.config]
nodes = 6
width = 11
rounds = 10
lr = 0.5
epochs = 1
batch = 64
out = "result.json"
"""


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def flower_runtime(
    root: Path, designs: list[tuple[np.ndarray, np.ndarray]], rounds: int, timeout: float
) -> dict:
    """Run FedAvg in Flower's deployment runtime; return the ServerApp's per-round seconds and weights."""
    venv = Path(sys.executable).parent
    home, app = root / "flwr-home", root / "flwr-app"
    home.mkdir()
    app.mkdir()
    shutil.copy(Path(__file__).with_name("flower_app.py"), app / "flower_app.py")
    (app / "pyproject.toml").write_text(APP_PYPROJECT)
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    # Flower's processes start their helpers (flower-superexec, flwr-clientapp) by name.
    env = dict(os.environ, FLWR_HOME=str(home), PATH=f"{venv}{os.pathsep}{os.environ.get('PATH', '')}")
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, args: list[str]) -> None:
        log = open(root / f"flwr-{name}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root))

    out = root / "flwr-result.json"
    try:
        spawn(
            "superlink",
            [
                str(venv / "flower-superlink"),
                "--insecure",
                "--port",
                str(port),
                f"--database={root / 'flwr.db'}",
            ],
        )
        _wait_port(port, 180)
        for i, (x, y) in enumerate(designs):
            np.savez(root / f"partition{i}.npz", x=x, y=y)
            spawn(
                f"supernode{i}",
                [
                    str(venv / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{port}",
                    "--port",
                    str(free_port()),
                    "--node-config",
                    f'data-path="{root / f"partition{i}.npz"}"',
                ],
            )
        overrides = (
            f"nodes={len(designs)} width={designs[0][0].shape[1]} rounds={rounds} lr={LEARNING_RATE} "
            f'epochs={EPOCHS} batch={BATCH} out="{out}"'
        )
        with open(root / "flwr-run.log", "wb") as log:
            subprocess.run(
                [str(venv / "flwr"), "run", str(app), "bench", "--stream", "--run-config", overrides],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=root,
                timeout=timeout,
                check=False,
            )
        result = json.loads(out.read_text()) if out.exists() else {}
        if not result.get("round_seconds"):
            raise RuntimeError(
                f"Flower's runtime ended without finishing a round (timeout {timeout:.0f} s); "
                f"see {root}/flwr-*.log"
            )
        return dict(result)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def design(frame: object, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The nodes' design for features x0..x{k-1} declared in [-BOUND, BOUND]: intercept, x / BOUND."""
    x = np.column_stack([np.ones(len(frame))] + [frame[f"x{j}"].to_numpy() / BOUND for j in range(k)])  # type: ignore[index]
    return x, frame["y"].to_numpy().astype(np.int64)  # type: ignore[index]


def mean_loss(w: np.ndarray, designs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    total = sum(float(np.sum(np.logaddexp(0.0, x @ w) - y * (x @ w))) for x, y in designs)
    return total / sum(len(y) for _, y in designs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows per node")
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=len(NODES), help="nodes taking part (at most 6)")
    parser.add_argument("--flower-timeout", type=float, default=1800.0, help="seconds for Flower's whole run")
    args = parser.parse_args()
    nodes = NODES[: max(2, min(args.nodes, len(NODES)))]

    root = Path(tempfile.mkdtemp(prefix="bench-flower-"))
    address = f"127.0.0.1:{free_port()}"
    _, paths = write_signals(root, 1000, address)
    frames = add_dataset(root, paths, args.rows, args.features)[: len(nodes)]
    designs = [design(f, args.features) for f in frames]
    print(f"data: {args.rows:,} rows x {args.features} features on each of {len(nodes)} nodes")

    procs = local_federation(root, paths, nodes, address)
    procs.start(timeout=300)
    print(f"nodes idle {wait_until_idle(procs, 600):.1f}s after connecting")
    marks: list[float] = []

    def mark(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        marks.append(time.perf_counter())  # before round 1 and after every round
        return None

    try:
        with Client(address, timeout=600) as fed:
            grid = fed.flower_grid(
                "logistic",
                "features",
                "y",
                [f"x{j}" for j in range(args.features)],
                rounds=args.rounds,
                learning_rate=LEARNING_RATE,
                local_epochs=EPOCHS,
                batch_size=BATCH,
            )
            strategy = FedAvg(
                fraction_evaluate=0.0, min_available_nodes=len(nodes), min_train_nodes=len(nodes)
            )
            result = strategy.start(
                grid=grid, initial_arrays=grid.initial_arrays(), num_rounds=args.rounds, evaluate_fn=mark
            )
    finally:
        procs.stop_all()
    ours = np.diff(marks)
    w_ours = result.arrays.to_numpy_ndarrays()[0]

    flower = flower_runtime(root, designs, args.rounds, args.flower_timeout)
    theirs = np.asarray(flower["round_seconds"])
    w_theirs = np.asarray(flower["weights"])
    if len(theirs) < args.rounds:
        print(
            f"Flower's runtime finished {len(theirs)} of {args.rounds} rounds within {args.flower_timeout:.0f} s"
        )

    print(f"federation (SecAgg+, exact): {np.mean(ours):.3f} s per round (median {np.median(ours):.3f})")
    print(f"Flower deployment runtime:   {np.mean(theirs):.3f} s per round (median {np.median(theirs):.3f})")
    print(f"ratio Flower / federation per round: {np.mean(theirs) / np.mean(ours):.1f}x (target >= 10)")
    print(
        f"final mean loss: federation {mean_loss(w_ours, designs):.6f}, Flower {mean_loss(w_theirs, designs):.6f}"
    )


if __name__ == "__main__":
    main()
