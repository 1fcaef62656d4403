"""A local Spark Connect server, for the tests and benchmarks of nodes whose source is ``sc://``.

Production nodes dial their cluster's Spark Connect endpoint; here the server is the one shipped in
pyspark's jars (``org.apache.spark.sql.connect.service.SparkConnectServer``), started with
``spark-submit`` on loopback in ``local[1]`` mode and stopped with the test or benchmark.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
# Quick start for a short-lived JVM on a busy machine: C1 only, serial collector, small heap.
JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def spark_connect_server(log: Path, timeout: float = 240.0) -> Iterator[str]:
    """Start a Spark Connect server on a free loopback port; yield its ``sc://`` url."""
    import pyspark

    home = Path(pyspark.__file__).parent
    port = _free_port()
    command = [
        str(home / "bin" / "spark-submit"),
        "--class",
        SERVER_CLASS,
        "--master",
        "local[1]",
        "--driver-memory",
        "512m",
        "--driver-java-options",
        JAVA_OPTIONS,
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        "spark.connect.grpc.binding.address=127.0.0.1",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.sql.shuffle.partitions=1",
        "--conf",
        "spark.sql.session.timeZone=UTC",
    ]
    env = {**os.environ, "SPARK_HOME": str(home)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while not _listening(port):
            if proc.poll() is not None:
                raise RuntimeError(f"the Spark Connect server exited with {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the Spark Connect server did not listen within {timeout:.0f} s; see {log}"
                )
            time.sleep(0.5)
        yield f"sc://127.0.0.1:{port}"
    finally:
        # spark-submit runs the JVM as its child: stop the whole session.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
