"""The committed operator API stubs are exactly what protoc generates from protos/."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_DIR = PROTO_ROOT / "faultplane" / "v1"
STUB_DIR = ROOT / "src" / "faultplane" / "v1"
PROTOS = sorted(PROTO_DIR.glob("*.proto"))
STUB_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _stub_names(proto: Path) -> set[str]:
    return {proto.stem + suffix for suffix in STUB_SUFFIXES}


def test_there_are_protos() -> None:
    assert PROTOS, f"no .proto files in {PROTO_DIR}"


def test_every_committed_stub_has_a_proto() -> None:
    expected = set().union(*(_stub_names(proto) for proto in PROTOS))
    committed = {path.name for path in STUB_DIR.iterdir() if path.name.endswith(STUB_SUFFIXES)}
    assert committed == expected


@pytest.mark.parametrize("proto", PROTOS, ids=[proto.name for proto in PROTOS])
def test_committed_stubs_match_regeneration(proto: Path, tmp_path: Path) -> None:
    relative = proto.relative_to(ROOT).as_posix()
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT.relative_to(ROOT).as_posix()}",
        f"--python_out={tmp_path}",
        f"--grpc_python_out={tmp_path}",
        f"--pyi_out={tmp_path}",
        relative,
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

    out_dir = tmp_path / proto.parent.relative_to(PROTO_ROOT)
    generated = {path.name for path in out_dir.iterdir() if path.is_file()}
    assert generated == _stub_names(proto)

    regenerate = (
        f"python -m grpc_tools.protoc -Iprotos --python_out=src --grpc_python_out=src "
        f"--pyi_out=src {relative}"
    )
    for name in sorted(generated):
        committed = STUB_DIR / name
        assert committed.is_file(), f"{committed} is missing; run: {regenerate}"
        fresh = (out_dir / name).read_bytes()
        if committed.read_bytes() != fresh:
            diff = "".join(
                list(
                    difflib.unified_diff(
                        committed.read_text().splitlines(keepends=True),
                        fresh.decode().splitlines(keepends=True),
                        f"committed/{name}",
                        f"regenerated/{name}",
                    )
                )[:40]
            )
            pytest.fail(f"{committed} is stale; run: {regenerate}\n{diff}")
