"""Flower's own deployment runtime as the benchmark's baseline: a ServerApp running FedAvg and a
ClientApp running the same numpy trainer (nodes/trainers/sgd.py) on the node's partition.

bench/bench_flower.py copies this file into a Flower App Bundle and runs it with ``flwr run``
against ``flower-superlink`` and one ``flower-supernode`` per partition, all on loopback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from nodes.trainers.sgd import SgdParams, build_model, local_sgd

server = ServerApp()
client = ClientApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    nodes, width, out = int(cfg["nodes"]), int(cfg["width"]), Path(str(cfg["out"]))
    marks: list[float] = []

    def mark(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        # Called before round 1 and after every round; written each time, so a run stopped by the
        # benchmark's timeout still tells how long its finished rounds took.
        marks.append(time.perf_counter())
        weights = arrays.to_numpy_ndarrays()[0].tolist()
        out.write_text(json.dumps({"round_seconds": np.diff(marks).tolist(), "weights": weights}))
        return None

    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=nodes, min_available_nodes=nodes)
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([np.zeros(width)]),
        num_rounds=int(cfg["rounds"]),
        train_config=ConfigRecord(
            {"lr": float(cfg["lr"]), "local-epochs": int(cfg["epochs"]), "batch-size": int(cfg["batch"])}
        ),
        evaluate_fn=mark,
    )


@client.train()
def train(msg: Message, context: Context) -> Message:
    data = np.load(str(context.node_config["data-path"]))
    x, y = data["x"], data["y"].astype(np.int64)
    config = msg.content["config"]
    params = SgdParams(
        learning_rate=float(config["lr"]),
        local_epochs=int(config["local-epochs"]),
        batch_size=int(config["batch-size"]),
        seed=int(config["server-round"]),
    )
    w = msg.content["arrays"].to_numpy_ndarrays()[0]
    trained = local_sgd(build_model("logistic", x.shape[1], 2), w, x, y, params)
    content = RecordDict(
        {"arrays": ArrayRecord([trained]), "metrics": MetricRecord({"num-examples": len(y)})}
    )
    return Message(content, reply_to=msg)
