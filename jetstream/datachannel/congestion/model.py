"""The default rate controller: a path model (bottleneck rate, min RTT), BBR-style.

What it believes (docs/protocol.md section 9):

* The path is a pipe of rate ``btlbw`` (windowed max of delivery-rate samples over 10 rounds)
  and delay ``min_rtt`` (windowed min over 10 s). Pacing at ``btlbw`` fills it without a
  queue; ``cwnd = 2 * btlbw * min_rtt`` only guards against ACK aggregation. The pacing
  gain cycles (1.25, 0.75, then 1 for six rounds) to find spare capacity and give it back.
* A random loss is not congestion. Its rate is measured on the packets sent while draining
  (pacing below ``btlbw`` and seeing no queue, so they cannot have overflowed one) and
  compensated: the link is taken to carry ``btlbw / (1 - random_loss)``, otherwise a path
  with 5 % loss would only be used at 95 %. Loss above that rate while probing ends the
  probe at once, which caps the loss we cause ourselves.
* A standing queue is congestion. A round whose lowest RTT exceeds ``min_rtt`` by the
  policy's target means the flows sharing the bottleneck send more than it carries. From
  then on a *share rate* replaces ``btlbw`` and the gain cycle in PROBE_BW: on each such
  round it drops below what the flow was actually delivered, by enough to drain the queue
  to half the target within a round trip; otherwise it grows by steps of 4, 8, 16...
  packets per round trip, the same steps for every flow, bounded by what the path gave the
  flow lately. The decrease is proportional to the rate and the increase is not, which
  makes competing flows converge to equal shares (Chiu & Jain); a max filter alone keeps
  whatever split the flows started with. FAIR targets a queue of ``min_rtt / 8``;
  LOW_PRIORITY targets a quarter of that, halves its share on each excess and grows
  slowly, so it yields to any fair flow, like LEDBAT, and takes the path when alone.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from jetstream.datachannel.congestion.base import (
    AckSample,
    CongestionController,
    RatePolicy,
    register_congestion_control,
)

STARTUP_GAIN = 2.885  # 2/ln(2): doubles the delivery rate every round
STARTUP_CWND_GAIN = 2.0  # bounds the startup overshoot to about one BDP of queue
DRAIN_GAIN = 1 / STARTUP_GAIN
CWND_GAIN = 2.0
PROBE_GAINS = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
BW_WINDOW_ROUNDS = 10
MIN_RTT_WINDOW = 10.0
MIN_RTT_TOLERANCE = 0.0005
"""A sample this close to min_rtt confirms it, so PROBE_RTT (halving the window for 200 ms)
only happens when no sample came near the minimum for 10 s: a queue that never drains."""
PROBE_RTT_DURATION = 0.2
FULL_BW_GROWTH = 1.25
FULL_BW_ROUNDS = 3
STARTUP_QUEUE_EXIT = 0.5
"""STARTUP ends once a whole round saw this much queueing delay, relative to min_rtt."""
MIN_CWND_PACKETS = 4
QUEUE_FRACTION = 0.125
QUEUE_MIN = 0.005
"""Queueing delay below this is never congestion: a busy host's scheduling jitter (event
loop, GIL, softirq on 2 cores) alone reaches a few ms, and on loopback min_rtt is ~0.2 ms."""
CWND_RTT_FLOOR = 0.01
"""The window covers at least this long a round trip: ACKs that arrive late or in bursts
(ack delay, a busy receiver) must not shrink a sub-millisecond path's window to a few
packets, or the measured rate and the window chase each other down."""
"""FAIR's queue target: max(QUEUE_MIN, QUEUE_FRACTION * min_rtt) of standing queue."""
LOW_PRIORITY_QUEUE_SHARE = 0.25
"""LOW_PRIORITY's queue target, relative to FAIR's."""
SHARE_STEP_PACKETS = 4
"""First additive step of the share rate, in packets per round trip."""
SHARE_MAX_STEP = 1 / 16
SHARE_MAX = 1.25
"""Steps and the share itself are bounded by what the path gave us lately (its long-term
rate): that is the same for every flow that was there, and keeps small links safe."""


class ShareRules(NamedTuple):
    decrease: float
    """Least multiplicative decrease on a standing queue."""
    doublings: int
    """How often the additive step doubles while no queue stands (fast regrowth)."""
    quiet_rounds: int
    """Rounds without a standing queue before pacing may return to the model..."""
    until_long_bw: bool
    """...and only once the share reached what the path gave us lately."""


SHARE_RULES = {
    RatePolicy.FAIR: ShareRules(decrease=0.05, doublings=6, quiet_rounds=6, until_long_bw=True),
    # Gentle growth, and back to the model only after a long quiet spell: any flow that
    # keeps a queue, even a small one, keeps a LOW_PRIORITY flow down.
    RatePolicy.LOW_PRIORITY: ShareRules(
        decrease=0.5, doublings=0, quiet_rounds=16, until_long_bw=False
    ),
}
LONG_BW_DECAY = 0.99
"""Per round: the memory of what the path gave us halves in about 70 rounds."""
OWN_QUEUE_PHASES = 3
"""Following the model, the queue seen in the probe, drain and next phase is our own probe's:
it is not judged (a LOW_PRIORITY flow alone would otherwise yield to itself)."""
SHARE_HOLD_ROUNDS = 2
"""Rounds a decrease needs before the queue shows its effect."""
PROBE_GROWTH = 1.2
"""A probe that raised the delivery rate this much means the path has room: STARTUP again,
so that capacity freed by another flow is taken in a few rounds, not a few dozen."""
PROBE_LOSS_MARGIN = 0.02
"""A probe ends early when its loss exceeds the path's random loss by this much."""
MAX_LOSS_COMPENSATION = 0.25
"""Random loss above this is not compensated: the flow then gets less than the link."""
LOSS_SAMPLE_DECAY = 0.97
"""Per round: the random-loss estimate looks back over a few drain phases."""


class ModelController(CongestionController):
    """BBR-like model-based rate control honouring `RateLimits` (FAIR and LOW_PRIORITY)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cwnd = self.initial_window * self.max_datagram_size
        rate = STARTUP_GAIN * self.cwnd / self.initial_rtt
        if self.initial_rate:  # a remembered rate: startup goes on from there
            self.cwnd = max(self.cwnd, int(CWND_GAIN * self.initial_rate * self.initial_rtt))
            rate = max(rate, self.initial_rate)
        self.pacing_rate = self.limits.clamp(rate)
        self.mode = "startup"
        self.btlbw = 0.0
        self._bw_rounds: list[tuple[int, float]] = []
        self.min_rtt = math.inf
        self._min_rtt_stamp = 0.0
        self._latest_rtt = 0.0
        self._round = 0
        self._next_round_delivered = 0
        self._round_min_rtt = math.inf
        self._pacing_gain = STARTUP_GAIN
        self._cwnd_gain = STARTUP_CWND_GAIN
        self._full_bw = 0.0
        self._full_bw_rounds = 0
        self._filled_pipe = False
        self._cycle_index = 0
        self._cycle_stamp = 0.0
        self._phase_acked = 0
        self._phase_lost = 0
        self._probe_rtt_done: float | None = None
        self._probe_start_bw = math.inf
        self._tagged_lost = 0.0
        self._tagged_total = 0.0
        """Decayed byte counts of packets sent while draining: their loss is random."""
        self.share_rate = math.inf
        """Pacing base from queue feedback (bytes/s); infinite until a standing queue."""
        self._share_step = 0
        self._long_bw = 0.0
        """Slowly decaying max of ``btlbw``: what the path gave us before others came."""
        self._share_hold = 0
        """Rounds to wait before judging the queue again: a decrease shows one round late."""
        self._delivery_rate = 0.0

    @property
    def state(self) -> str:
        return self.mode

    # --- hooks ---------------------------------------------------------------------------

    def on_ack(self, *, now: float, sample: AckSample) -> None:
        rtt = sample.rtt
        if rtt is not None:
            self._on_rtt(now, rtt)
        if (sample.tagged_acked_bytes or sample.tagged_lost_bytes) and not self._queued(
            self._latest_rtt
        ):
            self._tagged_lost += sample.tagged_lost_bytes
            self._tagged_total += sample.tagged_acked_bytes + sample.tagged_lost_bytes
        self._phase_acked += sample.acked_bytes
        self._phase_lost += sample.lost_bytes
        rate = sample.delivery_rate
        if rate > 0 and (not sample.app_limited or rate >= self.btlbw):
            self._delivery_rate = rate
            self._update_bw(rate)
        if sample.acked_bytes and sample.packet_delivered >= self._next_round_delivered:
            self._next_round_delivered = sample.delivered
            self._round += 1
            self._on_round_end()
        self._advance_mode(now, sample.bytes_in_flight)
        self._set_controls(sample.acked_bytes)

    def on_packets_lost(
        self, *, now: float, lost_bytes: int, tagged_lost_bytes: int, bytes_in_flight: int
    ) -> None:
        if not self._queued(self._latest_rtt):
            self._tagged_lost += tagged_lost_bytes
            self._tagged_total += tagged_lost_bytes
        self._phase_lost += lost_bytes

    def on_persistent_congestion(self, *, now: float) -> None:
        self.cwnd = MIN_CWND_PACKETS * self.max_datagram_size

    # --- model ---------------------------------------------------------------------------

    @property
    def random_loss(self) -> float:
        """Estimated loss rate that sending more or less does not change."""
        if self._tagged_total < 64 * self.max_datagram_size:
            return 0.0
        return self._tagged_lost / self._tagged_total

    def _bw(self) -> float:
        """The bottleneck rate in bytes sent per second, random loss included."""
        return self.btlbw / (1 - min(self.random_loss, MAX_LOSS_COMPENSATION))

    def _queue_target(self) -> float:
        target = max(QUEUE_MIN, QUEUE_FRACTION * self.min_rtt)
        if self.limits.policy is RatePolicy.LOW_PRIORITY:
            target *= LOW_PRIORITY_QUEUE_SHARE
        return target

    def _queued(self, rtt: float) -> bool:
        """``rtt`` carries more queueing delay than the policy tolerates."""
        return rtt > self.min_rtt + self._queue_target()

    def _on_rtt(self, now: float, rtt: float) -> None:
        self._latest_rtt = rtt
        if rtt < self._round_min_rtt:
            self._round_min_rtt = rtt
        if rtt <= self.min_rtt + MIN_RTT_TOLERANCE:
            self._min_rtt_stamp = now  # the queue still drains to empty: min_rtt holds
        expired = now - self._min_rtt_stamp > MIN_RTT_WINDOW
        if rtt <= self.min_rtt or expired:
            self.min_rtt = rtt
            self._min_rtt_stamp = now
            if expired and self.mode not in ("startup", "probe_rtt"):
                self.mode = "probe_rtt"
                self._probe_rtt_done = None

    def _update_bw(self, rate: float) -> None:
        rounds = self._bw_rounds
        if rounds and rounds[-1][0] == self._round:
            if rate <= rounds[-1][1]:
                return
            rounds[-1] = (self._round, rate)
        else:
            rounds.append((self._round, rate))
            while rounds[0][0] <= self._round - BW_WINDOW_ROUNDS:
                del rounds[0]
        self.btlbw = max(value for _, value in rounds)

    def _on_round_end(self) -> None:
        self._tagged_lost *= LOSS_SAMPLE_DECAY
        self._tagged_total *= LOSS_SAMPLE_DECAY
        self._long_bw = max(self._long_bw * LONG_BW_DECAY, self.btlbw)
        queue_delay = self._round_min_rtt - self.min_rtt
        standing_queue = queue_delay > self._queue_target()
        self._round_min_rtt = math.inf
        if self.mode == "startup":
            if self.btlbw >= self._full_bw * FULL_BW_GROWTH:
                self._full_bw = self.btlbw
                self._full_bw_rounds = 0
            else:
                self._full_bw_rounds += 1
            # A round whose every RTT sample carried half a path's worth of queue means the
            # pipe is full already: waiting for the delivery rate to stall as well (more
            # rounds at twice the path's rate) would only overflow the bottleneck's buffer.
            # A LOW_PRIORITY flow stops at its first standing queue: it must not push its
            # way into a busy path the way a FAIR flow's startup does.
            low_priority = self.limits.policy is RatePolicy.LOW_PRIORITY
            overfull = queue_delay > STARTUP_QUEUE_EXIT * self.min_rtt
            if (self._full_bw_rounds >= FULL_BW_ROUNDS or overfull
                    or (low_priority and standing_queue)):
                self._filled_pipe = True
                self.mode = "drain"
        elif self.mode == "probe_bw":
            if self.share_rate == math.inf and self.btlbw >= PROBE_GROWTH * self._probe_start_bw:
                self._restart_startup()  # a probe found much more room: search fast again
            elif self._share_hold:
                self._share_hold -= 1
            elif self.share_rate != math.inf or self._cycle_index >= OWN_QUEUE_PHASES:
                self._adjust_share(queue_delay if standing_queue else 0.0)

    def _adjust_share(self, queue_delay: float) -> None:
        """On a standing queue (``queue_delay`` > 0), fall below the delivered rate enough to
        drain the queue within a round trip; otherwise grow by equal additive steps."""
        if queue_delay:
            delivered = self._delivery_rate / (1 - min(self.random_loss, MAX_LOSS_COMPENSATION))
            base = min(self.share_rate, delivered or self._bw())
            drain = (queue_delay - self._queue_target() / 2) / self.min_rtt
            decrease = min(max(SHARE_RULES[self.limits.policy].decrease, drain), 0.5)
            floor = MIN_CWND_PACKETS * self.max_datagram_size / self.min_rtt  # keeps ACKs coming
            self.share_rate = max(base * (1 - decrease), self.limits.min_rate, floor)
            self._share_step = 0
            self._share_hold = SHARE_HOLD_ROUNDS
            del self._bw_rounds[:-1]  # forget rates from before the competition
            self.btlbw = self._bw_rounds[-1][1] if self._bw_rounds else self.btlbw
        elif self.share_rate != math.inf:
            rules = SHARE_RULES[self.limits.policy]
            long_bw = self._long_bw / (1 - min(self.random_loss, MAX_LOSS_COMPENSATION))
            packets = SHARE_STEP_PACKETS << min(self._share_step, rules.doublings)
            step = min(packets * self.max_datagram_size / self.min_rtt, SHARE_MAX_STEP * long_bw)
            self.share_rate = min(self.share_rate + step, SHARE_MAX * long_bw)
            self._share_step += 1
            if self._share_step >= rules.quiet_rounds and (
                not rules.until_long_bw or self.share_rate >= long_bw
            ):
                self.share_rate = math.inf  # the others are gone: back to the model

    def _bdp(self) -> float:
        return self._bw() * self.min_rtt

    def _advance_mode(self, now: float, bytes_in_flight: int) -> None:
        mode = self.mode
        if mode == "drain" and bytes_in_flight <= self._bdp():
            self._enter_probe_bw(now)
        elif mode == "probe_bw":
            gain = PROBE_GAINS[self._cycle_index]
            elapsed = now - self._cycle_stamp > self.min_rtt
            if gain > 1:
                done = elapsed or self._probe_loss_excessive()
            elif gain < 1:  # drain what the probe (and any estimation error) queued
                done = bytes_in_flight <= self._bdp() or now - self._cycle_stamp > 2 * self.min_rtt
            else:
                done = elapsed
            if done:
                self._cycle_index = (self._cycle_index + 1) % len(PROBE_GAINS)
                self._start_phase(now)
        elif mode == "probe_rtt":
            if self._probe_rtt_done is None:
                if bytes_in_flight <= self._probe_rtt_cwnd():
                    self._probe_rtt_done = now + max(PROBE_RTT_DURATION, self.min_rtt)
            elif now >= self._probe_rtt_done:
                self._min_rtt_stamp = now
                self._probe_rtt_done = None
                self._enter_probe_bw(now)

    def _probe_loss_excessive(self) -> bool:
        total = self._phase_acked + self._phase_lost
        if total < 10 * self.max_datagram_size:
            return False
        return self._phase_lost / total > self.random_loss + PROBE_LOSS_MARGIN

    def _enter_probe_bw(self, now: float) -> None:
        self.mode = "probe_bw"
        self._share_hold = 2  # the queue of STARTUP or PROBE_RTT is still draining
        self._cwnd_gain = CWND_GAIN
        # Start anywhere but in the drain phase, so that flows do not probe in lockstep.
        index = int(self.rng.random() * (len(PROBE_GAINS) - 1))
        self._cycle_index = index + 1 if index >= 1 else index
        self._start_phase(now)

    def _start_phase(self, now: float) -> None:
        self._cycle_stamp = now
        self._phase_acked = self._phase_lost = 0
        if PROBE_GAINS[self._cycle_index] > 1:
            self._probe_start_bw = self.btlbw

    def _restart_startup(self) -> None:
        self._probe_start_bw = math.inf  # the next probe phase sets the new baseline
        self.mode = "startup"
        self._filled_pipe = False
        self._cwnd_gain = STARTUP_CWND_GAIN
        self._full_bw = self.btlbw
        self._full_bw_rounds = 0

    def _probe_rtt_cwnd(self) -> int:
        return max(MIN_CWND_PACKETS * self.max_datagram_size, int(0.5 * self._bdp()))

    # --- outputs -------------------------------------------------------------------------

    def _set_controls(self, acked_bytes: int) -> None:
        mode = self.mode
        if mode == "startup":
            gain = STARTUP_GAIN
        elif mode == "drain":
            gain = DRAIN_GAIN
        elif mode == "probe_bw":
            gain = PROBE_GAINS[self._cycle_index]
        else:
            gain = 1.0
        if self.share_rate == math.inf or mode != "probe_bw":
            bw = self._bw()
            self.send_tag = 1 if gain < 1 else 0
        else:
            # The additive steps are the probe, and the round after a decrease (sending
            # below the delivered rate) is where random loss can be measured.
            bw = self.share_rate
            gain = 1.0
            self.send_tag = 1 if self._share_hold else 0
        self._pacing_gain = gain
        if bw <= 0 or self.min_rtt == math.inf:
            return
        self.pacing_rate = self.limits.clamp(gain * bw)
        rtt = max(self.min_rtt, CWND_RTT_FLOOR)
        target = int(self._cwnd_gain * bw * rtt) + 3 * self.max_datagram_size
        if mode == "probe_rtt":
            self.cwnd = min(target, self._probe_rtt_cwnd())
        elif self._filled_pipe:
            self.cwnd = min(self.cwnd + acked_bytes, target)
        elif self.cwnd < target:
            self.cwnd += acked_bytes
        self.cwnd = max(self.cwnd, MIN_CWND_PACKETS * self.max_datagram_size)


register_congestion_control("model", ModelController)
