"""The compiled data path against the pure-Python reference: same vectors, same bytes.

Every test here builds both twins explicitly (the Python ones with `FAST` patched away), so
it compares them whichever path the suite runs with; `JETSTREAM_DATAPATH=python` (CI's
second run) only skips the check that the extension was built.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jetstream.config import datapath_choice
from jetstream.datachannel import acks, crypto, native, wire
from jetstream.datachannel.rangeset import PyRangeSet, RangeSet
from jetstream.errors import ConfigError, RemoteProtocolError
from jetstream.transport import udpio
from tests.transport.test_udpio import pair

try:
    from jetstream.datachannel import _fast
except ImportError:  # pragma: no cover - only where the build had no compiler
    _fast = None
else:
    _fast.set_malformed(wire.malformed)  # what wire does when it uses the extension

needs_fast = pytest.mark.skipif(_fast is None, reason="the C extension is not built")
HEADER = b"\x40" + b"C" * 8 + b"\x00\x00\x00\x07"


def test_the_extension_is_built_and_chosen_unless_python_is_asked_for() -> None:
    if datapath_choice() == "python":
        assert native.FAST is None and native.DATAPATH == "python"
        return
    assert _fast is not None, "pip install -e . should have compiled jetstream/datachannel/_fast.c"
    assert native.FAST is _fast and native.DATAPATH == "compiled"
    assert _fast.OPENSSL_VERSION.startswith("OpenSSL")


def test_datapath_switch_accepts_auto_and_python_only() -> None:
    assert datapath_choice({}) == "auto"
    assert datapath_choice({"JETSTREAM_DATAPATH": " Python "}) == "python"
    with pytest.raises(ConfigError, match="JETSTREAM_DATAPATH"):
        datapath_choice({"JETSTREAM_DATAPATH": "rust"})


def twins(aead: str, secret: bytes, monkeypatch: pytest.MonkeyPatch):
    compiled = crypto.PacketProtection(aead, secret)
    with monkeypatch.context() as m:
        m.setattr(crypto, "FAST", None)
        python = crypto.PacketProtection(aead, secret)
    return compiled, python


@needs_fast
def test_protocol_vector_sealed_ping(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/protocol.md section 18: PING sealed with initial_c2s, packet number 1."""
    c2s, _ = crypto.initial_secrets(bytes(range(0x20, 0x40)), bytes(range(16)))
    compiled, python = twins("AES-128-GCM", c2s, monkeypatch)
    header = bytes.fromhex("40000000000000000000000001")
    expected = "bcb87f49d045a129f7afe52045d6dca9c8"
    for protection in (compiled, python):
        assert protection.seal(1, header, wire.PING_FRAME).hex() == expected
        assert protection.seal_packet(1, header, wire.PING_FRAME).hex() == header.hex() + expected
        assert protection.open_short(1, header + bytes.fromhex(expected)) == wire.PING_FRAME


@needs_fast
@pytest.mark.parametrize("aead", sorted(crypto.AEAD_KEY_LENGTHS))
def test_seal_and_open_agree_and_reject_every_flipped_bit(
    aead: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled, python = twins(aead, random.Random(1).randbytes(32), monkeypatch)
    payload = random.Random(2).randbytes(1400)
    pn = (1 << 40) + 12345
    datagram = compiled.seal_packet(pn, HEADER, payload)
    assert datagram == python.seal_packet(pn, HEADER, payload)
    assert compiled.seal(pn, HEADER, payload) == python.seal(pn, HEADER, payload)
    for opener in (compiled, python):
        assert opener.open_short(pn, datagram) == payload
        assert opener.open_short(pn, memoryview(datagram)) == payload
        assert opener.open(pn, HEADER, datagram[13:]) == payload
        assert opener.open_short(pn + 1, datagram) is None
        assert opener.open_short(pn, datagram[:28]) is None  # shorter than header and tag
    for bit in range(0, len(datagram) * 8, 7):
        flipped = bytearray(datagram)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert compiled.open_short(pn, bytes(flipped)) is None
    assert repr(compiled) == "PacketProtection(<secret>)"


@needs_fast
@given(count=st.integers(0, 40), room=st.integers(1, 1500), offset=st.integers(0, 1 << 50),
       first_pn=st.integers(0, (1 << 62) - 100), flags=st.sampled_from([0x40, 0x44]))
@settings(max_examples=30, deadline=None)
def test_seal_data_run_gives_the_bytes_of_the_reference(count, room, offset, first_pn, flags):
    secret = bytes(range(32))
    compiled = crypto.PacketProtection("AES-128-GCM", secret)
    python = crypto.PacketProtection("AES-128-GCM", secret)
    python_run = python._seal_data_run  # the reference, bound whatever FAST is
    data = memoryview(random.Random(count).randbytes(room * count + room // 2))
    args = (flags, b"D" * 8, first_pn, 77, offset, data, room, count)
    run = compiled.seal_data_run(*args)
    assert run == python_run(*args)
    for i, datagram in enumerate(run):
        plaintext = python._open_short(first_pn + i, datagram)
        assert plaintext is not None
        stream_id, got_offset, piece, fin, end = wire.pull_data_frame(memoryview(plaintext), 0)
        assert (stream_id, got_offset, fin, end) == (77, offset + i * room, False, len(plaintext))
        assert bytes(piece) == bytes(data[i * room:(i + 1) * room])
    with pytest.raises(ValueError):
        compiled.seal_data_run(flags, b"D" * 8, first_pn, 77, offset, data, room, count + 1)


# --- receive runs ------------------------------------------------------------------------

PEER = ("10.0.0.1", 4000)
CID = b"R" * 8
kinds = st.lists(st.sampled_from(["data", "data", "data", "fin", "ping", "tiny", "replay",
                                  "forged", "other_cid", "other_peer", "key_phase", "late",
                                  "memoryview", "truncated", "data_ping", "gap"]),
                 min_size=1, max_size=40)


def _run_datagrams(sealer: crypto.PacketProtection, plan: list[str]
                   ) -> tuple[list[tuple[object, object]], dict[int, bytes]]:
    """Datagrams of every kind a receive run must take or stop at, in the order of `plan`,
    and the data of stream 5 by offset."""
    rng = random.Random(len(plan))
    out: list[tuple[object, object]] = []
    sent: dict[int, bytes] = {}
    pn = 10
    offset = 0
    for kind in plan:
        pn += 1
        number = pn - 5 if kind == "late" else pn
        flags = 0x44 if kind == "key_phase" else 0x40
        header = bytes([flags]) + (b"X" * 8 if kind == "other_cid" else CID) + (
            number & 0xFFFFFFFF).to_bytes(4, "big")
        data = rng.randbytes(rng.randrange(1, 60))
        if kind == "ping":
            payload = wire.PING_FRAME
        elif kind == "tiny":
            payload = wire.PING_FRAME * 3  # shorter than a DATA frame's header
        else:
            at = offset + 1 if kind == "gap" else offset
            sent[at] = data
            offset = at + len(data)
            payload = struct.pack(">BIQH", 0x09 if kind == "fin" else 0x08, 5, at,
                                  len(data)) + data
            if kind == "data_ping":
                payload += wire.PING_FRAME
        datagram = sealer.seal_packet(number, header, payload)
        if kind == "forged":
            datagram = datagram[:-1] + bytes([datagram[-1] ^ 1])
        elif kind == "truncated":
            datagram = datagram[:20]
        elif kind == "memoryview":
            datagram = memoryview(b"?" + datagram)[1:]
        if kind == "replay" and out:
            out.append(out[rng.randrange(len(out))])
            continue
        out.append((datagram, ("10.0.0.9", 4000) if kind == "other_peer" else PEER))
    return out, sent


@needs_fast
@given(plan=kinds, floor=st.integers(0, 14))
@example(plan=["data", "data", "late", "data", "replay", "data"], floor=10)
@example(plan=["data", "fin", "ping", "tiny", "data_ping", "memoryview", "key_phase", "data"],
         floor=0)
@example(plan=["data", "data", "gap", "data", "forged", "data", "data"], floor=0)
@settings(max_examples=150, deadline=None)
def test_open_run_takes_and_stops_where_the_reference_does(plan: list[str], floor: int) -> None:
    secret = bytes(range(32))
    compiled = crypto.PacketProtection("AES-128-GCM", secret)
    python = crypto.PacketProtection("AES-128-GCM", secret)
    datagrams, sent = _run_datagrams(compiled, plan)
    sides = [(compiled.open_run, _fast.RangeSet([(0, 2)])),
             (python._open_run, PyRangeSet([(0, 2)]))]
    index, largest = 0, 1
    while index < len(datagrams):
        results = [run(datagrams, index, 0x40, CID, received, floor, largest, PEER)
                   for run, received in sides]
        assert results[0] == results[1]
        assert list(sides[0][1]) == list(sides[1][1])
        stop, largest, nbytes, entries = results[0]
        assert nbytes == sum(len(d) for d, _ in datagrams[index:stop])
        for _pn, stream_id, offset, data in entries:
            if stream_id < 0:  # anything but one DATA frame without FIN is left to the caller
                assert data[0] != 0x08 or struct.unpack_from(">H", data, 13)[0] != len(data) - 15
                continue
            assert stream_id == 5
            at = 0
            while at < len(data):  # DATA packets that continue each other are joined
                piece = sent[offset + at]
                assert bytes(data[at:at + len(piece)]) == piece
                at += len(piece)
            assert at == len(data)
        index = stop + 1  # the one it stopped at goes to the slow path


def test_a_run_of_contiguous_data_packets_is_one_entry() -> None:
    protection = crypto.PacketProtection("AES-128-GCM", bytes(range(32)))
    datagrams, sent = _run_datagrams(protection, ["data"] * 6 + ["gap"] + ["data"] * 3)
    stop, _largest, _nbytes, entries = protection.open_run(
        datagrams, 0, 0x40, CID, RangeSet(), 0, -1, PEER)
    assert stop == 10
    assert [(offset, bytes(data)) for _pn, _stream, offset, data in entries] == [
        (0, b"".join(sent[k] for k in sorted(sent)[:6])),
        (sorted(sent)[6], b"".join(sent[k] for k in sorted(sent)[6:]))]
    assert [pn for pn, *_ in entries] == [16, 20]  # the number of each group's last packet


@needs_fast
def test_open_run_refuses_bad_arguments() -> None:
    open_run = _fast.Aead(bytes(16), bytes(12)).open_run
    with pytest.raises(ValueError, match="open_run"):
        open_run([], 0, 0x40, b"short", _fast.RangeSet(), 0, -1, PEER)
    with pytest.raises(ValueError, match="open_run"):
        open_run([], 0, 0x40, CID, PyRangeSet(), 0, -1, PEER)
    with pytest.raises(ValueError, match="open_run"):
        open_run([], 1, 0x40, CID, _fast.RangeSet(), 0, -1, PEER)
    with pytest.raises(TypeError):
        open_run([], 0, 0x40, CID, _fast.RangeSet(), 0)
    assert open_run([], 0, 0x40, CID, _fast.RangeSet(), 0, -1, PEER) == (0, -1, 0, [])
    assert open_run([(b"x", PEER), 7], 0, 0x40, CID, _fast.RangeSet(), 0, -1, PEER)[0] == 0


# --- ranges and ACK frames -----------------------------------------------------------------

ops = st.lists(st.tuples(st.sampled_from(["add", "add_one", "pop"]),
                         st.integers(0, 300), st.integers(0, 40)), max_size=80)


@needs_fast
@given(ops)
@settings(max_examples=200, deadline=None)
def test_compiled_rangeset_follows_the_reference(operations) -> None:
    compiled, python = _fast.RangeSet(), PyRangeSet()
    for op, a, b in operations:
        if op == "add":
            assert compiled.add(a, a + b) == python.add(a, a + b)
        elif op == "add_one":
            assert compiled.add_one(a) == python.add_one(a)
        elif python:
            assert compiled.pop_first() == python.pop_first()
        assert list(compiled) == list(python)
        assert len(compiled) == len(python) and bool(compiled) == bool(python)
        assert all((v in compiled) == (v in python) for v in range(-1, 345, 7))
        assert compiled.covers(a, a + b) == python.covers(a, a + b)
        assert compiled.descending(5) == python.descending(5)
        if python:
            assert compiled.last() == python.last()
    assert _fast.RangeSet(list(python)) == compiled
    assert repr(compiled) == repr(python)
    assert "x" not in compiled and (1 << 70) not in compiled


@needs_fast
def test_compiled_rangeset_errors() -> None:
    ranges = _fast.RangeSet()
    with pytest.raises(IndexError):
        ranges.pop_first()
    with pytest.raises(IndexError):
        ranges.last()
    with pytest.raises(OverflowError):
        ranges.add(0, 1 << 64)
    with pytest.raises(ValueError):
        _fast.RangeSet([(1, 2, 3)])
    with pytest.raises(TypeError):
        hash(ranges)


@needs_fast
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=300), st.integers(1, 40),
       st.floats(0, 10))
@settings(max_examples=100, deadline=None)
def test_ack_frames_encode_and_decode_as_the_reference(numbers, limit, delay) -> None:
    ranges = _fast.RangeSet()
    for pn in numbers:
        ranges.add_one(pn)
    expected = wire.encode_ack_frame(ranges.descending(limit), delay)
    assert ranges.encode_ack(limit, int(delay * 1e6)) == expected
    buf = memoryview(b"\x01" + expected + b"\x00")
    largest, delay_us, got, pos = _fast.pull_ack_frame(buf, 1)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(wire, "_native_pull_ack", None)
        reference, reference_pos = wire.pull_ack_frame(buf, 1)
    assert (reference.largest, reference.ranges, reference_pos) == (largest, got, pos)
    assert got == tuple(ranges.descending(limit)) and pos == 1 + len(expected)
    assert largest == ranges.last()[1] - 1 and delay_us == min(int(delay * 1e6), 0xFFFFFFFF)


@needs_fast
@pytest.mark.parametrize("frame", [
    "02" + "00" * 7 + "05" + "00000000" + "0000" + "00000000",  # no range
    "02" + "00" * 7 + "05" + "00000000" + "0001" + "00000006",  # first range beyond largest
    "02" + "00" * 7 + "05" + "00000000" + "0002" + "00000001" + "00000003" + "00000000",
    "02" + "00" * 7 + "05" + "00000000" + "0002" + "00000001",  # truncated range
    "02" + "00" * 7,  # truncated
])
def test_malformed_ack_frames_are_rejected_alike(frame: str) -> None:
    buf = memoryview(bytes.fromhex(frame))
    with pytest.raises(RemoteProtocolError, match="malformed ACK frame") as compiled:
        _fast.pull_ack_frame(buf, 0)
    assert compiled.value.close_code == wire.ErrorCode.FRAME_ENCODING_ERROR
    with pytest.MonkeyPatch.context() as m:
        m.setattr(wire, "_native_pull_ack", None)
        with pytest.raises(RemoteProtocolError, match="malformed ACK frame"):
            wire.pull_ack_frame(buf, 0)


@needs_fast
def test_the_ack_tracker_builds_the_same_frame_both_ways(monkeypatch) -> None:
    def tracker() -> acks.AckTracker:
        return acks.AckTracker(ack_every=2, max_ack_delay=0.005, max_ranges=3, max_tracked=10)

    compiled = tracker()
    monkeypatch.setattr(acks, "_NATIVE_ACK", False)
    monkeypatch.setattr(acks, "RangeSet", PyRangeSet)
    python = tracker()
    for pn in (0, 1, 2, 5, 6, 9, 12, 13, 20):
        for t in (compiled, python):
            t.on_packet(pn, True, 1.0)
    assert python.build(1.0042) == compiled.build(1.0042)  # built by the compiled RangeSet


# --- batched socket I/O --------------------------------------------------------------------


def _sockets() -> tuple[socket.socket, socket.socket]:
    tx, rx, _addr = pair()  # the plain sockets under test_udpio's BatchSocket pair
    return tx.sock, rx.sock


@needs_fast
@pytest.mark.parametrize("gso", [True, False])
def test_sendmmsg_and_recvmmsg_move_batches_whole_and_in_order(gso: bool) -> None:
    tx, rx = _sockets()
    try:
        rx.setsockopt(udpio.SOL_UDP, udpio.UDP_GRO, 1)
        sizes = [1200] * 150 + [700] + [32000] * 3 + [33, 1400, 1400] + [0]
        datagrams = [os.urandom(n) for n in sizes]
        sent, calls = _fast.send_batch(tx.fileno(), datagrams, rx.getsockname(), gso)
        assert sent == len(datagrams) and 1 <= calls < len(datagrams)
        receiver = _fast.BatchReceiver(rx.fileno(), 8)
        got: list[tuple[bytes, tuple]] = []
        deadline = time.monotonic() + 5
        while len(got) < len(datagrams) and time.monotonic() < deadline:
            got += receiver.receive(1000)
        assert [d for d, _ in got] == datagrams
        assert {a for _, a in got} == {("127.0.0.1", tx.getsockname()[1])}
        assert receiver.receive(10) == [] and 0 < receiver.calls < len(datagrams)
    finally:
        tx.close()
        rx.close()


@needs_fast
def test_send_batch_refuses_what_it_cannot_send() -> None:
    tx, rx = _sockets()
    try:
        with pytest.raises(ValueError, match="not a numeric IP address"):
            _fast.send_batch(tx.fileno(), [b"x"], ("localhost", 1), True)
        with pytest.raises(TypeError):
            _fast.send_batch(tx.fileno(), ["text"], rx.getsockname(), True)
        with pytest.raises(OSError):
            _fast.send_batch(-1, [b"x"], rx.getsockname(), True)
        with pytest.raises(OSError):
            _fast.BatchReceiver(-1).receive(1)
    finally:
        tx.close()
        rx.close()


@needs_fast
def test_batch_socket_sends_to_host_names_through_the_python_path() -> None:
    tx, rx = _sockets()
    try:
        batch = udpio.BatchSocket(tx)
        assert batch.send([b"a", b"b"], ("localhost", rx.getsockname()[1])) == 2
        deadline = time.monotonic() + 5
        got: list[bytes] = []
        while len(got) < 2 and time.monotonic() < deadline:
            got += [d for d, _ in udpio.BatchSocket(rx).receive()]
        assert got == [b"a", b"b"]
    finally:
        tx.close()
        rx.close()


@needs_fast
@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=40), st.integers(0, 100))
def test_gather_copies_as_the_reference(pieces: list[bytes], pos: int) -> None:
    import mmap

    from jetstream.storage.directio import _gather
    size = pos + sum(map(len, pieces)) + 7
    compiled, reference = mmap.mmap(-1, size), mmap.mmap(-1, size)
    views = [memoryview(p) if i % 2 else p for i, p in enumerate(pieces)]
    assert _fast.gather(compiled, pos, views) == _gather(reference, pos, pieces) == size - 7
    assert compiled[:] == reference[:]
    total = sum(map(len, pieces))
    with pytest.raises(ValueError, match="do not fit"):  # one byte past the end
        _fast.gather(compiled, size - total + 1, views)
