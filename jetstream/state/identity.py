"""Who this server is: a persistent uid, a per-launch id, and its long-term keys.

The uid and keys are created once, inside a database transaction, so a crash at any
moment leaves either nothing or the complete value, and every later start reads the same.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from jetstream.state.database import Database


@dataclass(frozen=True)
class ServerIdentity:
    server_uid: str
    """Stable across restarts; peers pin it."""
    server_id: str
    """New on every launch; tells a peer that the server restarted."""
    datachannel_key: X25519PrivateKey = field(repr=False)

    @property
    def datachannel_public_key(self) -> bytes:
        return self.datachannel_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )


def load_identity(db: Database) -> ServerIdentity:
    uid = db.get_or_create_meta("server_uid", str(uuid.uuid4()).encode()).decode()
    fresh_key = X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw_key = db.get_or_create_meta("datachannel_x25519_private_key", fresh_key)
    return ServerIdentity(
        server_uid=uid,
        server_id=str(uuid.uuid4()),
        datachannel_key=X25519PrivateKey.from_private_bytes(raw_key),
    )
