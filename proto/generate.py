"""Generate the Python modules for the jetstream gRPC contract.

`proto/jetstream/v1/*.proto` becomes `jetstream/v1/<name>_pb2.py` (messages),
`<name>_pb2_grpc.py` (stubs and servicers) and `.pyi` stubs for both (mypy-protobuf, which
also types the grpc.aio stubs), plus `jetstream/v1/__init__.py`. The proto package path mirrors
the Python package, so the generated modules import each other as `jetstream.v1.<name>_pb2`.

This is the one place that knows how to run the generator: the hatch build hook
(`hatch_build.py`, for wheels and editable installs) and the staleness test
(`tests/proto/test_proto_lint.py`) both call `generate()`. By hand:

    .venv/bin/python proto/generate.py            # regenerate into the repository
    .venv/bin/python proto/generate.py OUT_DIR    # write OUT_DIR/jetstream/v1/... instead

Needs `grpcio-tools` and `mypy-protobuf` (build requirements, and in the `test` extra).
This module uses only the standard library so it can be imported without them.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

#: Directory holding the .proto tree (the `-I` root): this file's directory.
PROTO_ROOT = Path(__file__).resolve().parent
#: The proto package directory, relative to PROTO_ROOT; also the generated Python package path.
PACKAGE = Path("jetstream") / "v1"
#: Suffixes of the files protoc and the plugins write; only these are replaced or pruned.
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")

INIT_TEXT = '''\
"""Generated gRPC contract of jetstream (package jetstream.v1). Do not edit.

Generated from proto/jetstream/v1/*.proto by proto/generate.py (run by the build hook in
hatch_build.py on `pip install` and wheel builds). Import the modules directly, e.g.
`from jetstream.v1 import transfers_pb2, transfers_pb2_grpc`.
"""
'''


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """The contract's .proto files, relative to `proto_root`, sorted."""
    return sorted(p.relative_to(proto_root) for p in (proto_root / PACKAGE).glob("*.proto"))


def _plugin(tmp: Path, name: str, entry: str) -> Path:
    """Write an executable protoc plugin that runs `entry` with this interpreter.

    Going through `sys.executable` avoids depending on the plugin scripts being on PATH
    (inside pip's isolated build environment they may not be).
    """
    script = tmp / f"protoc-gen-{name}"
    code = f"import sys; from mypy_protobuf.main import {entry}; sys.exit({entry}())"
    script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(code)}\n")
    script.chmod(0o755)
    return script


def protoc_command(out_dir: Path, plugin_dir: Path, proto_root: Path = PROTO_ROOT) -> list[str]:
    """The protoc command line that writes generated modules below `out_dir`."""
    grpc_tools = importlib.util.find_spec("grpc_tools")
    if grpc_tools is None or grpc_tools.origin is None:
        raise RuntimeError("grpcio-tools is not installed (pip install grpcio-tools mypy-protobuf)")
    well_known = Path(grpc_tools.origin).parent / "_proto"  # google/protobuf/*.proto
    out = str(out_dir)
    return [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={_plugin(plugin_dir, 'mypy', 'main')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin(plugin_dir, 'mypy_grpc', 'grpc')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet,generate_concrete_servicer_stubs:{out}",
        *(str(p) for p in proto_files(proto_root)),
    ]


def _run_protoc(out_dir: Path, proto_root: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="jetstream-protoc-") as plugin_dir:
        cmd = protoc_command(out_dir, Path(plugin_dir), proto_root)
        result = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if result.returncode != 0 or result.stderr.strip():
        raise RuntimeError(
            "generating the gRPC stubs failed:\n"
            f"  command: {shlex.join(cmd)}\n"
            f"  exit status: {result.returncode}\n{result.stdout}{result.stderr}"
        )


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Generate the modules into `out_dir/jetstream/v1/` and return their paths.

    Files whose content is unchanged are not rewritten; generated files (by suffix) that no
    longer correspond to a .proto file are removed. Other files in the directory are left alone.
    """
    target = Path(out_dir) / PACKAGE
    with tempfile.TemporaryDirectory(prefix="jetstream-gen-") as tmp:
        staging = Path(tmp)
        _run_protoc(staging, proto_root)
        fresh = {p.name: p.read_bytes() for p in (staging / PACKAGE).iterdir() if p.is_file()}
    fresh["__init__.py"] = INIT_TEXT.encode()

    target.mkdir(parents=True, exist_ok=True)
    for old in target.iterdir():
        if old.name.endswith(GENERATED_SUFFIXES) and old.name not in fresh:
            old.unlink()
    written = []
    for name, data in sorted(fresh.items()):
        path = target / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print("usage: generate.py [OUT_DIR]  (default: the repository root)", file=sys.stderr)
        return 2
    out_dir = Path(args[0]) if args else PROTO_ROOT.parent
    for path in generate(out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
