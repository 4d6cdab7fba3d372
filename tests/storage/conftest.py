from __future__ import annotations

import pytest

from tests.system.users import require_root


@pytest.fixture(autouse=True)
def _root_tests_need_root(request: pytest.FixtureRequest) -> None:
    """Tests marked `root` skip without root and the test users (and fail under CI=true)."""
    if request.node.get_closest_marker("root") is not None:
        require_root(users=True)
