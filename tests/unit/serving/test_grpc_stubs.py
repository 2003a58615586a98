"""The committed gRPC modules are what `make proto` writes from the .proto files today."""

from __future__ import annotations

import shutil
from pathlib import Path

from grpc_tools import protoc

SRC = Path(__file__).resolve().parents[3] / "src"
PROTOS = ("inference", "headwater")
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def test_the_committed_stubs_match_the_proto_files(tmp_path):
    folder = tmp_path / "headwater" / "serving" / "grpc"
    folder.mkdir(parents=True)
    for name in PROTOS:
        shutil.copy(SRC / "headwater" / "serving" / "grpc" / f"{name}.proto", folder)
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc", f"-I{tmp_path}", f"-I{include}", f"--python_out={tmp_path}",
        f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}",
        *(str(folder / f"{name}.proto") for name in PROTOS),
    ]  # fmt: skip
    assert protoc.main(args) == 0
    for name in PROTOS:
        for suffix in GENERATED:
            committed = SRC / "headwater" / "serving" / "grpc" / f"{name}{suffix}"
            assert committed.read_text() == (folder / f"{name}{suffix}").read_text(), (
                f"{committed.name} is stale: run `make proto`"
            )
