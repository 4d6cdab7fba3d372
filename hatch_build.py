"""Hatchling build hook: generate the gRPC stubs from proto/ and compile the data channel's
C extension before building.

Runs for wheel builds and editable installs (`pip install -e .`), writing
`jetstream/v1/*_pb2*.py{,i}` and `jetstream/datachannel/_fast*.so` into the source tree, where
the wheel's `artifacts` setting picks them up (they are gitignored). The generation itself
lives in `proto/generate.py`, shared with the staleness test in tests/proto/. The extension
needs gcc, the Python headers and OpenSSL's (libssl-dev); without them the build says so and
goes on, and the pure-Python data path is used (docs/performance.md).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _load_generator(root: Path) -> ModuleType:
    path = root / "proto" / "generate.py"
    spec = importlib.util.spec_from_file_location("jetstream_proto_generate", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the stub generator from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXTENSION_SOURCE = "jetstream/datachannel/_fast.c"


def build_extension(root: Path) -> tuple[Path | None, str]:
    """Compile the data channel's C extension next to its source: (path, "") or (None, why).

    A plain compiler call instead of setuptools: one C file, one library (libcrypto).
    """
    source = root / EXTENSION_SOURCE
    target = source.with_name("_fast" + str(sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        return None, f"no C compiler ({cc})"
    include = sysconfig.get_paths()["include"]
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    cmd = [cc, "-O2", "-g0", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
           "-Wno-unused-parameter", "-shared", "-fPIC", f"-I{include}", str(source),
           "-lcrypto", "-o", str(tmp)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        return None, done.stderr.strip()[-2000:]
    os.replace(tmp, target)  # atomic: a running server never loads a torn file
    return target, ""


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Generate jetstream/v1 from proto/jetstream/v1 (wheel and editable builds only)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return  # the sdist ships proto/ and this hook; stubs are made when a wheel is built
        root = Path(self.root)
        written = _load_generator(root).generate(root)
        self.app.display_info(f"generated {len(written)} gRPC modules in jetstream/v1/")
        built, why = build_extension(root)
        if built is None:
            self.app.display_warning(
                "jetstream: the C data path was not built, the pure-Python one will be used "
                f"(install gcc, python3-dev and libssl-dev, then reinstall): {why}")
            return
        self.app.display_info(f"built {built.relative_to(root)}")
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        build_data["artifacts"].append(str(built.relative_to(root)))
