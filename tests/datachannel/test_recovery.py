"""RTT estimation, loss detection, probe timeouts and pacing, driven with literal times."""

from __future__ import annotations

import pytest

from jetstream.datachannel.pacing import Pacer
from jetstream.datachannel.recovery import (
    K_GRANULARITY,
    K_TIME_THRESHOLD,
    Recovery,
    RttEstimator,
    SentPacket,
)
from jetstream.datachannel.wire import AckFrame


def test_rtt_estimator_follows_rfc_9002() -> None:
    rtt = RttEstimator(initial_rtt=0.333)
    assert rtt.pto_interval(0.025) == pytest.approx(0.333 + 4 * 0.1665 + 0.025)
    rtt.update(0.100, ack_delay=0.010)  # first sample: ack delay ignored
    assert (rtt.smoothed, rtt.variance, rtt.min, rtt.latest) == (0.100, 0.050, 0.100, 0.100)
    rtt.update(0.120, ack_delay=0.010)  # adjusted to 0.110
    assert rtt.smoothed == pytest.approx(0.875 * 0.100 + 0.125 * 0.110)
    assert rtt.variance == pytest.approx(0.75 * 0.050 + 0.25 * 0.010)
    rtt.update(0.105, ack_delay=0.010)  # 0.095 would be below min: not adjusted
    assert rtt.min == 0.100
    rtt.update(0.090, ack_delay=0.0)
    assert rtt.min == 0.090


def send(recovery: Recovery, first: int, count: int, start: float, gap: float = 0.001) -> None:
    for i in range(count):
        packet = SentPacket(first + i, start + i * gap, 1200, [], 1, 0)
        recovery.on_packet_sent(packet)


def ack(*ranges: tuple[int, int]) -> AckFrame:
    return AckFrame(largest=ranges[0][1] - 1, delay=0.0, ranges=ranges)


def new_recovery() -> Recovery:
    rtt = RttEstimator(initial_rtt=0.1)
    rtt.update(0.1, 0.0)
    return Recovery(rtt, peer_max_ack_delay=0.0)


def test_packet_threshold_declares_holes_lost() -> None:
    recovery = new_recovery()
    send(recovery, 0, 10, start=0.0)
    outcome = recovery.on_ack(ack((5, 10), (0, 3)), now=0.1)
    assert sorted(p.packet_number for p in outcome.acked) == [0, 1, 2, 5, 6, 7, 8, 9]
    assert [p.packet_number for p in outcome.lost] == [3, 4]
    assert outcome.sample.lost_bytes == 2400 and outcome.sample.acked_bytes == 9600
    assert recovery.bytes_in_flight == 0 and not recovery.holes


def test_time_threshold_and_late_ack_of_a_hole() -> None:
    recovery = new_recovery()
    send(recovery, 0, 4, start=0.0)
    outcome = recovery.on_ack(ack((3, 4), (0, 2)), now=0.105)
    assert outcome.lost == [] and recovery.holes == [2]
    loss_delay = max(K_TIME_THRESHOLD * max(recovery.rtt.smoothed, 0.102), K_GRANULARITY)
    assert recovery.rtt.latest == pytest.approx(0.102)
    assert recovery.timer() == pytest.approx(0.002 + loss_delay)
    # The hole is acknowledged before its deadline: not lost after all.
    outcome = recovery.on_ack(ack((0, 4)), now=0.11)
    assert [p.packet_number for p in outcome.acked] == [2] and recovery.holes == []
    send(recovery, 4, 3, start=0.2)
    recovery.on_ack(ack((6, 7), (0, 5)), now=0.3)
    assert recovery.holes == [5]
    deadline = recovery.timer()
    assert deadline is not None
    assert recovery.detect_lost(deadline - 1e-6) == []
    assert [p.packet_number for p in recovery.detect_lost(deadline)] == [5]


def test_old_ranges_are_not_walked_again() -> None:
    recovery = new_recovery()
    send(recovery, 0, 1000, start=0.0, gap=0.0)
    recovery.on_ack(ack((0, 1000)), now=0.1)
    send(recovery, 1000, 2, start=0.2)
    outcome = recovery.on_ack(ack((0, 1002)), now=0.3)
    assert [p.packet_number for p in outcome.acked] == [1000, 1001]


def test_probe_timeout_backs_off_and_gives_up_the_oldest_packets() -> None:
    recovery = new_recovery()
    send(recovery, 0, 3, start=1.0)
    interval = recovery.rtt.pto_interval(0.0)
    assert recovery.timer() == pytest.approx(1.002 + interval)
    probes = recovery.on_pto()
    assert [p.packet_number for p in probes] == [0, 1]
    assert recovery.timer() == pytest.approx(1.002 + 2 * interval)
    recovery.on_pto()
    recovery.on_pto()
    assert recovery.persistent_congestion
    assert recovery.timer() is None  # nothing left in flight


def test_pacer_releases_quantum_sized_bursts() -> None:
    pacer = Pacer(quantum=0.001, max_datagram_size=1000)
    pacer.set_rate(10_000_000)  # 10 kB per quantum
    sent = 0
    while pacer.can_send(0.0):
        pacer.on_sent(1000)
        sent += 1
    assert sent == 3  # the initial bucket holds two datagrams of slack
    wake = pacer.next_send_time()
    assert wake == pytest.approx(0.0 + (10_000 + 1000) / 10_000_000)
    sent = 0
    while pacer.can_send(wake):
        pacer.on_sent(1000)
        sent += 1
    assert sent == 11
    late = pacer.next_send_time() + 0.0005  # a timer 0.5 ms late: what it missed goes too
    sent = 0
    while pacer.can_send(late):
        pacer.on_sent(1000)
        sent += 1
    assert sent == 16
    stalled = pacer.next_send_time() + 0.010  # 10 ms late: the catch-up stops at 2 quanta
    sent = 0
    while pacer.can_send(stalled):
        pacer.on_sent(1000)
        sent += 1
    assert sent == 31


@pytest.mark.parametrize("in_flight_before", [False, True])
def test_a_burst_is_recorded_as_its_packets_one_by_one(in_flight_before: bool) -> None:
    chunks = [(1, i * 1400, memoryview(bytes(1400)), False) for i in range(5)]
    one_by_one, burst = new_recovery(), new_recovery()
    for recovery in (one_by_one, burst):
        if in_flight_before:
            send(recovery, 0, 3, start=0.0)
            recovery.on_ack(ack((0, 2)), now=0.1)  # delivered and its times are set
            recovery.app_limited_until = 10**6
    for i, chunk in enumerate(chunks):
        one_by_one.on_packet_sent(SentPacket(3 + i, 0.2, 1472, [chunk], 0, 7))
    burst.on_burst_sent(3, 0.2, 1472, chunks, 7)
    fields = SentPacket.__slots__
    assert [[getattr(p, f) for f in fields] for p in burst.sent.values()] == [
        [getattr(p, f) for f in fields] for p in one_by_one.sent.values()]
    assert (burst.bytes_in_flight, burst.last_ack_eliciting_time) == (
        one_by_one.bytes_in_flight, one_by_one.last_ack_eliciting_time)
    assert burst._first_sent_time == one_by_one._first_sent_time  # noqa: SLF001
