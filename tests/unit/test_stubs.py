"""The committed protobuf/gRPC stubs match ``protocols/federation.proto`` (protocols/codegen.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols import codegen

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return codegen.generate(tmp_path_factory.mktemp("stubs"))


def test_generator_produces_every_stub(generated: dict[str, str]) -> None:
    assert set(generated) == set(codegen.OUTPUTS)
    assert "class AnalystServicer" in generated["federation_pb2_grpc.py"]
    assert "class QuerySpec(_message.Message)" in generated["federation_pb2.pyi"]


@pytest.mark.parametrize("name", codegen.OUTPUTS)
def test_committed_stub_is_up_to_date(generated: dict[str, str], name: str) -> None:
    committed = (REPO / "protocols" / name).read_text()
    assert committed == generated[name], (
        f"protocols/{name} is stale: run `python -m protocols.codegen` after editing {codegen.PROTO}"
    )


def test_stubs_are_generated_from_the_proto_in_the_repository() -> None:
    assert codegen.ROOT == REPO
    assert (REPO / codegen.PROTO).is_file()


def test_an_edited_proto_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same check on a copy of the tree whose .proto gained a field: the stubs must differ.
    proto = tmp_path / codegen.PROTO
    proto.parent.mkdir(parents=True)
    text = (REPO / codegen.PROTO).read_text()
    proto.write_text(text.replace("message Heartbeat {", "message Heartbeat {\n  string note = 99;", 1))
    monkeypatch.setattr(codegen, "ROOT", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    stale = codegen.generate(out)
    assert stale["federation_pb2.py"] != (REPO / "protocols" / "federation_pb2.py").read_text()
    assert "note" in stale["federation_pb2.pyi"]
