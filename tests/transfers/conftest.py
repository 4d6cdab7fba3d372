"""What every transfer test starts from: a source and a destination directory of ALICE's."""

from __future__ import annotations

import pytest

from tests.system.users import ALICE, require_root
from tests.transfers.helpers import owned_dir, remove


@pytest.fixture
def dirs():
    """(src, dst): fresh, owned by ALICE, traversable by everyone; removed afterwards."""
    require_root(users=True)
    src, dst = owned_dir(ALICE, "js-src-"), owned_dir(ALICE, "js-dst-")
    yield src, dst
    remove(src, dst)
