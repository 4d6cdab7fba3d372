"""The data channel's targets (issue #4) measured on the simulated network.

    .venv/bin/python -m bench.sim_datachannel                 # everything, 1 GiB transfers
    .venv/bin/python -m bench.sim_datachannel --size 256M --only a,c

Two real cores talk over `jetstream.netsim` in virtual time, with AES-GCM, loss recovery
and rate control all in the loop; only the clock and the sockets are simulated. The link
model (netsim.py) serialises at the bottleneck rate counting 28 bytes of IPv4+UDP per
datagram and drops at random after the bottleneck, so the goodput bound is

    bound = rate * (stream bytes per full datagram / wire bytes per datagram) * (1 - loss)

The table gives each target, the figure measured, whether it is met, and the CPU seconds
the simulation took. Queueing delay is the time datagrams waited in the bottleneck queue.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from jetstream.datachannel import DataChannelConfig, RatePolicy
from jetstream.datachannel.wire import DATA_FRAME_OVERHEAD
from jetstream.netsim import (
    IPV4_UDP_OVERHEAD,
    Flow,
    LinkConfig,
    Network,
    PatternContent,
    add_flow,
    run_flows,
)

MTU_DATAGRAM = DataChannelConfig().max_datagram_size
PAYLOAD = DataChannelConfig().max_payload - DATA_FRAME_OVERHEAD
EFFICIENCY = PAYLOAD / (MTU_DATAGRAM + IPV4_UDP_OVERHEAD)


@dataclass
class Row:
    scenario: str
    target: str
    measured: str
    met: bool | None
    cpu: float
    virtual: float


def bound(rate_bps: float, loss: float) -> float:
    """Stream bits per second the link can carry at most."""
    return rate_bps * EFFICIENCY * (1 - loss)


def rate(flow: Flow, start: float, end: float) -> float:
    timeline, bucket = flow.receiver.timeline, flow.receiver.bucket
    return sum(timeline[int(start / bucket) : int(end / bucket)]) * 8 / (end - start)


def time_to_reach(flow: Flow, threshold_bps: float, window: float = 0.2) -> float | None:
    """First time the goodput over ``window`` seconds reaches ``threshold_bps``."""
    timeline, bucket = flow.receiver.timeline, flow.receiver.bucket
    span = round(window / bucket)
    total = 0
    for index, count in enumerate(timeline):
        total += count
        if index >= span:
            total -= timeline[index - span]
        if index + 1 >= span and total * 8 / window >= threshold_bps:
            return (index + 1) * bucket
    return None


def jain(rates: list[float]) -> float:
    return sum(rates) ** 2 / (len(rates) * sum(r * r for r in rates)) if any(rates) else 0.0


def single_transfer(
    name: str,
    size: int,
    rate_bps: float,
    rtt: float,
    loss: float,
    seed: int,
    config: DataChannelConfig | None = None,
) -> tuple[Network, Flow, float]:
    network = Network(seed=seed)
    forward = network.link(
        LinkConfig(rate_bps=rate_bps, delay=rtt / 2, queue_bytes=int(rate_bps / 8 * 0.2), loss=loss)
    )
    backward = network.link(LinkConfig(delay=rtt / 2))
    flow = add_flow(
        network,
        PatternContent({1: size}, seed=seed),
        forward=forward,
        backward=backward,
        client_config=config,
    )
    started = time.process_time()
    if not run_flows(network, [flow], max_time=3600.0):
        raise RuntimeError(f"{name}: the transfer did not finish")
    return network, flow, time.process_time() - started


def goodput_figures(size: int, flow: Flow, network: Network, limit: float) -> tuple[float, str]:
    """Whole-transfer goodput, and a text that adds the rate once the ramp is over."""
    goodput = size * 8 / network.now
    text = f"{goodput / 1e6:.0f} Mbit/s = {goodput / limit:.1%} of {limit / 1e6:.0f}"
    settled = time_to_reach(flow, 0.9 * limit)
    if settled is not None and network.now - settled > 2.0:
        steady = rate(flow, settled, network.now - 0.5)
        text += f" (after the ramp, {settled:.1f} s: {steady / limit:.1%})"
    return goodput, text


def scenario_a(size: int, seed: int) -> Iterator[Row]:
    rate_bps, rtt, loss = 200e6, 0.1, 0.01
    network, flow, cpu = single_transfer("a", size, rate_bps, rtt, loss, seed)
    name = f"(a) {human(size)}, 200 Mbit/s, 100 ms, 1% loss, 200 ms queue"
    goodput = size * 8 / network.now
    limit = bound(rate_bps, loss)
    yield Row(
        name,
        "goodput >= 95% of bound",
        f"{goodput / 1e6:.1f} Mbit/s = {goodput / limit:.1%} of {limit / 1e6:.1f}",
        goodput >= 0.95 * limit,
        cpu,
        network.now,
    )
    reach = time_to_reach(flow, 0.9 * limit)
    yield Row(
        name,
        "time to 90% of link rate <= 2 s",
        "never" if reach is None else f"{reach:.2f} s (from connect, 0.2 s windows)",
        reach is not None and reach <= 2.0,
        0.0,
        network.now,
    )
    p95 = flow.client.link.queue_delay_percentile(0.95)  # the client sends on the bottleneck
    yield Row(
        name, "queueing delay p95 <= 25 ms", f"{p95 * 1e3:.1f} ms", p95 <= 0.025, 0.0, network.now
    )
    yield integrity_row(name, flow, network)


def integrity_row(name: str, flow: Flow, network: Network) -> Row:
    stats = flow.client.conn.statistics()
    overhead = stats.bytes_retransmitted / max(stats.stream_bytes_sent, 1)
    return Row(
        name,
        "byte-identical",
        f"{'yes' if flow.receiver.intact else 'NO'}; "
        f"retransmitted {overhead:.2%} of the bytes, {stats.packets_lost} packets lost",
        flow.receiver.intact,
        0.0,
        network.now,
    )


def scenario_b(size: int, seed: int) -> Iterator[Row]:
    rate_bps, rtt = 1e9, 0.2
    warm = DataChannelConfig(initial_rate=int(rate_bps / 2))
    cases = (
        (0.05, None, "goodput >= 90% of bound"),
        (0.05, warm, "goodput >= 90% of bound"),
        (0.20, None, "completes"),
    )
    for loss, config, target in cases:
        network, flow, cpu = single_transfer("b", size, rate_bps, rtt, loss, seed, config)
        name = f"(b) {human(size)}, 1 Gbit/s, 200 ms, {loss:.0%} loss"
        if config is not None:
            name += ", starting at a remembered 500 Mbit/s"
        limit = bound(rate_bps, loss)
        goodput, measured = goodput_figures(size, flow, network, limit)
        met = goodput >= 0.9 * limit if target.startswith("goodput") else flow.receiver.done
        yield Row(name, target, measured, met, cpu, network.now)
        yield integrity_row(name, flow, network)


def shared_link(
    seed: int, seconds: float, stagger: float, second: DataChannelConfig | None
) -> tuple[Network, Flow, Flow, float]:
    rate_bps, rtt = 200e6, 0.1
    network = Network(seed=seed)
    forward = network.link(
        LinkConfig(rate_bps=rate_bps, delay=rtt / 2, queue_bytes=int(rate_bps / 8 * rtt))
    )
    backward = network.link(LinkConfig(delay=rtt / 2))
    size = int(rate_bps / 8 * seconds)
    started = time.process_time()
    first = add_flow(
        network,
        PatternContent({1: size}, seed=seed),
        forward=forward,
        backward=backward,
        name="first",
    )
    network.run(lambda: False, stagger)
    late = add_flow(
        network,
        PatternContent({1: size}, seed=seed + 1),
        forward=forward,
        backward=backward,
        name="second",
        client_config=second,
    )
    network.run(lambda: False, stagger + 12.0)
    return network, first, late, time.process_time() - started


def scenario_c(seed: int) -> Iterator[Row]:
    for stagger in (0.0, 2.0):
        network, a, b, cpu = shared_link(seed, 30.0, stagger, None)
        name = f"(c) 2 fair flows, 200 Mbit/s, 100 ms, 1 BDP queue, 2nd starts +{stagger:.0f} s"
        start, end = stagger + 5.0, stagger + 10.0
        rates = [rate(a, start, end), rate(b, start, end)]
        index = jain(rates)
        yield Row(
            name,
            "Jain >= 0.95 within 10 s",
            f"{index:.3f} over [{start:.0f}, {end:.0f}] s: {rates[0] / 1e6:.0f} / "
            f"{rates[1] / 1e6:.0f} Mbit/s",
            index >= 0.95,
            cpu,
            network.now,
        )
    low = DataChannelConfig(rate_policy=RatePolicy.LOW_PRIORITY)
    network, fair, background, cpu = shared_link(seed, 8.0, 2.0, low)
    run_flows(network, [fair], max_time=120.0)
    fair_done = network.now
    started = time.process_time()
    network.run(lambda: False, fair_done + 5.0)
    cpu += time.process_time() - started
    share = rate(background, 4.0, 8.0) / max(rate(fair, 4.0, 8.0) + rate(background, 4.0, 8.0), 1)
    alone = rate(background, fair_done + 2.0, fair_done + 5.0)
    name = "(c) fair + low-priority flow, 200 Mbit/s, 100 ms"
    yield Row(
        name,
        "low priority gives way",
        f"its share of the link with a fair flow: {share:.1%}",
        share <= 0.1,
        cpu,
        network.now,
    )
    yield Row(
        name,
        "low priority uses a free link",
        f"{alone / 1e6:.0f} Mbit/s once alone",
        alone >= 0.8 * bound(200e6, 0.0),
        0.0,
        network.now,
    )


def human(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def parse_size(text: str) -> int:
    scales = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in scales:
        return int(float(text[:-1]) * scales[text[-1]])
    return int(text)


def table(rows: list[Row]) -> str:
    lines = [
        "| scenario | target | measured | met | CPU s | virtual s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        met = "—" if row.met is None else ("yes" if row.met else "**no**")
        cpu = f"{row.cpu:.1f}" if row.cpu else ""
        cells = (row.scenario, row.target, row.measured, met, cpu, f"{row.virtual:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=parse_size, default=1 << 30, help="bytes for (a) and (b), e.g. 256M"
    )
    parser.add_argument("--only", default="a,b,c", help="comma-separated scenarios: a, b, c")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    chosen = {part.strip() for part in args.only.split(",")}
    scenarios: dict[str, Callable[[], Iterator[Row]]] = {
        "a": lambda: scenario_a(args.size, args.seed),
        "b": lambda: scenario_b(args.size, args.seed),
        "c": lambda: scenario_c(args.seed),
    }
    rows: list[Row] = []
    for key, run in scenarios.items():
        if key in chosen:
            for row in run():
                rows.append(row)
                print(f"{row.scenario}: {row.target}: {row.measured}", file=sys.stderr, flush=True)
    print(table(rows))
    return 0 if all(row.met is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
