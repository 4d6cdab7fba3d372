"""The state database: migrations, persistence of the server uid, private permissions."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from jetstream.errors import ConfigError
from jetstream.state.database import MIGRATIONS, Database
from jetstream.state.identity import load_identity


def test_fresh_state_dir_is_private_and_migrated(tmp_path):
    state = tmp_path / "a" / "state"
    db = Database(state)
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(db.path).st_mode) == 0o600
    assert db.schema_version == len(MIGRATIONS)
    assert db.query("PRAGMA journal_mode")[0][0] == "wal"
    db.close()


def test_identity_survives_reopen(tmp_path):
    db = Database(tmp_path)
    first = load_identity(db)
    db.close()
    db = Database(tmp_path)
    second = load_identity(db)
    assert first.server_uid == second.server_uid
    assert first.datachannel_public_key == second.datachannel_public_key
    assert first.server_id != second.server_id, "server_id is per launch"
    assert "PrivateKey" not in repr(second)
    db.close()


def test_newer_schema_is_refused(tmp_path):
    Database(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "jetstream.db")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="newer than this jetstream understands"):
        Database(tmp_path)


def test_failed_transaction_rolls_back(tmp_path):
    db = Database(tmp_path)
    with pytest.raises(RuntimeError):
        with db.transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('k', x'01')")
            raise RuntimeError("boom")
    assert db.get_meta("k") is None
    db.close()


def test_state_dir_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="--persistent-state-dir"):
        Database(target)
