"""Hatchling build hook: generate the gRPC stubs from proto/ before building.

Runs for wheel builds and editable installs (`pip install -e .`), writing
`jetstream/v1/*_pb2*.py{,i}` into the source tree, where the wheel's `artifacts` setting picks
them up (they are gitignored). The generation itself lives in `proto/generate.py`, shared with
the staleness test in tests/proto/.
"""

from __future__ import annotations

import importlib.util
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


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Generate jetstream/v1 from proto/jetstream/v1 (wheel and editable builds only)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return  # the sdist ships proto/ and this hook; stubs are made when a wheel is built
        root = Path(self.root)
        written = _load_generator(root).generate(root)
        self.app.display_info(f"generated {len(written)} gRPC modules in jetstream/v1/")
