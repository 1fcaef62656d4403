"""Regenerate the protobuf and gRPC stubs from ``protocols/federation.proto``.

Run ``python -m protocols.codegen`` after editing the ``.proto``; the test suite fails while the
committed stubs are stale.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "protocols/federation.proto"
OUTPUTS = ("federation_pb2.py", "federation_pb2.pyi", "federation_pb2_grpc.py")


def generate(out_dir: Path) -> dict[str, str]:
    """Run protoc into ``out_dir`` and return the generated files' text by name."""
    from grpc_tools import protoc  # dev dependency only

    args = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    return {name: (out_dir / "protocols" / name).read_text() for name in OUTPUTS}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in generate(Path(tmp)).items():
            (ROOT / "protocols" / name).write_text(text)
    print(f"regenerated stubs from {PROTO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
