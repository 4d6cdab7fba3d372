"""Packet protection, the HKDF key schedule and key update (docs/protocol.md section 6).

Secrets live only inside these objects; their ``repr`` never shows key material, so a stray
log line or a traceback cannot leak it. Authentication failures are reported by returning
None instead of raising: a forged or corrupted datagram is an expected event on the hot path,
counted and dropped by the caller, never an error.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from jetstream.datachannel.native import FAST
from jetstream.datachannel.rangeset import RangeSet
from jetstream.datachannel.wire import (
    AEAD_TAG_LENGTH,
    MAX_STREAM_OFFSET,
    SHORT_HEADER_SIZE,
    decode_packet_number,
)

AEAD_KEY_LENGTHS = {"AES-128-GCM": 16, "AES-256-GCM": 32}
SECRET_LENGTH = 32
NONCE_LENGTH = 12
_DATA_RUN_HEADER = struct.Struct(">BIQH")
_SHORT_RUN_HEADER = struct.Struct(">B8sI")
_DATA_RUN_OVERHEAD = _DATA_RUN_HEADER.size
RunEntry: TypeAlias = tuple[int, int, int, bytes | memoryview]
"""(packet number, stream id, offset, data) of packets that are one DATA frame without FIN
each, continuing each other in one stream (the number of the last); (packet number, -1, 0,
plaintext) of any other packet, to be parsed frame by frame."""
INITIAL_SALT_V1 = bytes.fromhex("6a657473747265616d2d76312d696e697469616c2d73616c742d323032352121")
"""Fixed salt for the INITIAL keys of version 1 (ASCII "jetstream-v1-initial-salt-2025!!")."""
_LABEL_PREFIX = b"jetstream v1 "


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract with SHA-256 (RFC 5869 section 2.2)."""
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand with SHA-256 and info ``"jetstream v1 " + label``."""
    return HKDFExpand(SHA256(), length, _LABEL_PREFIX + label).derive(secret)


def initial_secrets(ticket_secret: bytes, ticket_id: bytes) -> tuple[bytes, bytes]:
    """(client-to-server, server-to-client) secrets protecting INITIAL and HANDSHAKE packets.

    Only holders of the session ticket can produce or read these packets, so the server stays
    silent towards anyone without a ticket.
    """
    prk = hkdf_extract(INITIAL_SALT_V1, ticket_secret)
    return (
        expand_label(prk, b"initial c2s" + ticket_id, SECRET_LENGTH),
        expand_label(prk, b"initial s2c" + ticket_id, SECRET_LENGTH),
    )


def traffic_secrets(
    ticket_secret: bytes, shared_secret: bytes, transcript_hash: bytes
) -> tuple[bytes, bytes]:
    """(client-to-server, server-to-client) secrets of the first 1-RTT key phase.

    The X25519 shared secret gives forward secrecy; salting with the ticket secret binds the
    keys to the ticket; the transcript binds them to both HELLOs and connection ids.
    """
    prk = hkdf_extract(ticket_secret, shared_secret)
    return (
        expand_label(prk, b"c2s" + transcript_hash, SECRET_LENGTH),
        expand_label(prk, b"s2c" + transcript_hash, SECRET_LENGTH),
    )


def next_secret(secret: bytes) -> bytes:
    """The secret of the next key phase of one direction."""
    return expand_label(secret, b"ku", SECRET_LENGTH)


class PacketProtection:
    """AEAD key and IV of one direction and key phase; nonce = IV xor packet number.

    The methods are the compiled ones (`native.FAST.Aead`) where available, else the
    pure-Python ones below, which define what they do; both give the same bytes.
    """

    __slots__ = ("_aead", "_iv", "seal", "open", "seal_packet", "open_short", "seal_data_run",
                 "open_run")
    seal: Callable[[int, bytes, bytes], bytes]
    open: Callable[[int, bytes | memoryview, bytes | memoryview], bytes | None]
    seal_packet: Callable[[int, bytes, bytes], bytes]
    open_short: Callable[[int, bytes | memoryview], bytes | None]
    seal_data_run: Callable[[int, bytes, int, int, int, memoryview, int, int], list[bytes]]
    open_run: Callable[[Sequence[tuple[bytes | memoryview, Any]], int, int, bytes, RangeSet,
                        int, int, Any], tuple[int, int, int, list[RunEntry]]]

    def __init__(self, aead: str, secret: bytes) -> None:
        key = expand_label(secret, b"key", AEAD_KEY_LENGTHS[aead])
        iv = expand_label(secret, b"iv", NONCE_LENGTH)
        self._aead = AESGCM(key)
        self._iv = int.from_bytes(iv, "big")
        if FAST is not None:
            native = FAST.Aead(key, iv)
            self.seal = native.seal
            self.open = native.open
            self.seal_packet = native.seal_packet
            self.open_short = native.open_short
            self.seal_data_run = native.seal_data_run
            self.open_run = native.open_run
        else:
            self.seal = self._seal
            self.open = self._open
            self.seal_packet = self._seal_packet
            self.open_short = self._open_short
            self.seal_data_run = self._seal_data_run
            self.open_run = self._open_run

    def nonce(self, packet_number: int) -> bytes:
        return (self._iv ^ packet_number).to_bytes(NONCE_LENGTH, "big")

    def _seal(self, packet_number: int, header: bytes, payload: bytes) -> bytes:
        """Ciphertext and tag of ``payload``, authenticating ``header``."""
        return self._aead.encrypt(self.nonce(packet_number), payload, header)

    def _open(
        self, packet_number: int, header: bytes | memoryview, ciphertext: bytes | memoryview
    ) -> bytes | None:
        """The plaintext, or None if the packet is not authentic."""
        try:
            return self._aead.decrypt(self.nonce(packet_number), ciphertext, header)
        except InvalidTag:
            return None

    def _seal_packet(self, packet_number: int, header: bytes, payload: bytes) -> bytes:
        """The whole datagram: header, ciphertext, tag."""
        return header + self._aead.encrypt(self.nonce(packet_number), payload, header)

    def _open_short(self, packet_number: int, datagram: bytes | memoryview) -> bytes | None:
        """The plaintext of a short-header datagram (its 13-byte header is the AAD)."""
        view = memoryview(datagram)
        return self._open(
            packet_number, view[:SHORT_HEADER_SIZE], view[SHORT_HEADER_SIZE:]
        )

    def _seal_data_run(
        self,
        flags: int,
        destination_cid: bytes,
        first_pn: int,
        stream_id: int,
        offset: int,
        data: memoryview,
        room: int,
        count: int,
    ) -> list[bytes]:
        """``count`` full packets of one DATA frame (no FIN) each, carrying consecutive
        ``room``-byte slices of ``data`` from its start, numbered from ``first_pn``."""
        if count < 0 or room * count > len(data):
            raise ValueError("seal_data_run: bad room or count")
        encrypt = self._aead.encrypt
        iv = self._iv
        out = []
        for i in range(count):
            pn = first_pn + i
            header = _SHORT_RUN_HEADER.pack(flags, destination_cid, pn & 0xFFFFFFFF)
            frame = _DATA_RUN_HEADER.pack(0x08, stream_id, offset + i * room, room)
            piece = data[i * room : (i + 1) * room]
            out.append(header + encrypt((iv ^ pn).to_bytes(12, "big"), frame + piece, header))
        return out

    def _open_run(
        self,
        datagrams: Sequence[tuple[bytes | memoryview, Any]],
        index: int,
        flags: int,
        cid: bytes,
        received: RangeSet,
        floor: int,
        largest: int,
        peer: Any,
    ) -> tuple[int, int, int, list[RunEntry]]:
        """Open ``datagrams[index:]`` (``(data, addr)`` pairs) while each comes from ``peer``
        with a short header of first byte ``flags`` and connection id ``cid``, is no replay
        (below ``floor`` or in ``received``) and is authentic: one call per receive batch
        instead of several per packet. Adds their packet numbers to ``received``; returns
        (index of the first datagram not opened, largest packet number, their total size,
        their entries). Consecutive DATA packets that continue each other in one stream
        make one entry (the packet number of the last), so what follows is per run, not
        per packet."""
        entries: list[RunEntry] = []
        nbytes = opened = 0
        for data, addr in datagrams[index:]:
            if addr != peer or len(data) < SHORT_HEADER_SIZE + AEAD_TAG_LENGTH:
                break
            first, dcid, truncated = _SHORT_RUN_HEADER.unpack_from(data)
            if first != flags or dcid != cid:
                break
            pn = decode_packet_number(truncated, largest)
            if pn <= largest and (pn < floor or pn in received):
                break
            plaintext = self._open_short(pn, data)
            if plaintext is None:
                break
            received.add_one(pn)
            largest = max(largest, pn)
            nbytes += len(data)
            opened += 1
            entries.append(_run_entry(pn, plaintext))
        return index + opened, largest, nbytes, _joined(entries)

    def __repr__(self) -> str:
        return "PacketProtection(<secret>)"


def _run_entry(pn: int, plaintext: bytes) -> RunEntry:
    if len(plaintext) >= _DATA_RUN_OVERHEAD:
        frame_type, stream_id, offset, length = _DATA_RUN_HEADER.unpack_from(plaintext)
        if (frame_type == 0x08 and length == len(plaintext) - _DATA_RUN_OVERHEAD
                and offset + length <= MAX_STREAM_OFFSET):
            return pn, stream_id, offset, plaintext[_DATA_RUN_OVERHEAD:]
    return pn, -1, 0, plaintext


def _joined(entries: list[RunEntry]) -> list[RunEntry]:
    """Consecutive DATA entries that continue each other in one stream, as one entry."""
    out: list[RunEntry] = []
    group: list[RunEntry] = []
    for entry in entries:
        if group and not (entry[1] >= 0 and entry[1] == group[-1][1]
                          and entry[2] == group[-1][2] + len(group[-1][3])):
            out.append(_join(group))
            group = []
        if entry[1] < 0:
            out.append(entry)
        else:
            group.append(entry)
    if group:
        out.append(_join(group))
    return out


def _join(group: list[RunEntry]) -> RunEntry:
    if len(group) == 1:
        return group[0]
    return group[-1][0], group[0][1], group[0][2], b"".join(entry[3] for entry in group)


class SendKeys:
    """The protection we apply to outgoing 1-RTT packets, and its key updates."""

    __slots__ = ("_aead", "_secret", "protection", "phase", "phase_start_pn")

    def __init__(self, aead: str, secret: bytes) -> None:
        self._aead = aead
        self._secret = secret
        self.protection = PacketProtection(aead, secret)
        self.phase = 0
        self.phase_start_pn = 0
        """First packet number sent under the current phase (set by the caller)."""

    def update(self, next_packet_number: int) -> None:
        """Move to the next key phase; the caller ensures the peer saw the current one."""
        self._secret = next_secret(self._secret)
        self.protection = PacketProtection(self._aead, self._secret)
        self.phase ^= 1
        self.phase_start_pn = next_packet_number

    def __repr__(self) -> str:
        return f"SendKeys(phase={self.phase}, <secret>)"


class ReceiveKeys:
    """Protection of incoming 1-RTT packets across the peer's key updates.

    A packet whose key-phase bit differs from the current one is either late from the previous
    phase (its number is below the first one seen in the current phase) or the first of the
    next phase. The next keys are only adopted after a packet authenticates with them, so a
    forged phase bit cannot make us switch.
    """

    __slots__ = ("_aead", "_secret", "current", "_previous", "_next", "phase", "_phase_start")

    def __init__(self, aead: str, secret: bytes) -> None:
        self._aead = aead
        self._secret = secret
        self.current = PacketProtection(aead, secret)
        self._previous: PacketProtection | None = None
        self._next: PacketProtection | None = None
        self.phase = 0
        self._phase_start = 0

    def open(
        self, packet_number: int, phase: int, header: bytes | memoryview, body: bytes | memoryview
    ) -> bytes | None:
        if phase == self.phase:
            return self.current.open(packet_number, header, body)
        if packet_number < self._phase_start:
            previous = self._previous
            return previous.open(packet_number, header, body) if previous else None
        if self._next is None:
            self._next = PacketProtection(self._aead, next_secret(self._secret))
        plaintext = self._next.open(packet_number, header, body)
        if plaintext is not None:
            self._secret = next_secret(self._secret)
            self._previous, self.current, self._next = self.current, self._next, None
            self.phase ^= 1
            self._phase_start = packet_number
        return plaintext

    def __repr__(self) -> str:
        return f"ReceiveKeys(phase={self.phase}, <secret>)"
