"""Command line: python -m bench.linkemu {up,down,status,check,build}.

`up` leaves the link running (the forwarder is detached) until `down`; `check`
sets up its own links and always removes them, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from types import FrameType

from .config import LinkConfig
from .link import (
    DEFAULT_DEV,
    DEFAULT_PREFIX,
    DEFAULT_SUBNET,
    Link,
    LinkError,
    Names,
    all_states,
    build,
    down,
    read_state,
    request_stats,
)


def _link_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("link (per direction: A->B is the data direction)")
    g.add_argument(
        "--rate", default="200mbit", help="bottleneck rate, both ways (200mbit, 1gbit, 0=unlimited)"
    )
    g.add_argument("--rate-ba", default=None, help="B->A rate if different (asymmetric link)")
    g.add_argument("--rtt", default="100ms", help="base round-trip time, RTT/2 each way")
    g.add_argument(
        "--queue",
        default=None,
        help="drop-tail queue: 200ms, 1bdp, 100pkt, 256kb (default 1 BDP, >= 64 packets)",
    )
    g.add_argument("--loss", default="0", help="average loss, e.g. 1%% (on --impair directions)")
    g.add_argument("--loss-model", choices=("bernoulli", "gilbert"), default="bernoulli")
    g.add_argument("--burst", type=float, default=4.0, help="gilbert: mean bad-state run, packets")
    g.add_argument("--loss-bad", default="100%", help="gilbert: loss probability in the bad state")
    g.add_argument("--reorder", default="0", help="probability a packet is held back, e.g. 1%%")
    g.add_argument("--reorder-delay", default="1ms", help="extra delay of a held-back packet")
    g.add_argument("--duplicate", default="0", help="duplication probability, e.g. 0.1%%")
    g.add_argument(
        "--corrupt", default="0", help="probability of one flipped payload bit, e.g. 0.1%%"
    )
    g.add_argument(
        "--corrupt-checksum",
        choices=("fix", "keep"),
        default="fix",
        help="fix: corruption reaches the application; keep: the kernel drops it",
    )
    g.add_argument(
        "--impair",
        choices=("ab", "ba", "both"),
        default="ab",
        help="directions that get loss/reorder/duplicate/corrupt (default ab)",
    )
    g.add_argument(
        "--overhead", type=int, default=0, help="bytes added per packet for the rate (14: Ethernet)"
    )
    g.add_argument("--mtu", type=int, default=1500)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument(
        "--tick", default="0", help="min spacing of forwarder wake-ups, e.g. 50us (less CPU)"
    )


def _name_options(p: argparse.ArgumentParser, prefix: str = DEFAULT_PREFIX) -> None:
    p.add_argument(
        "--prefix",
        default=prefix,
        help=f"namespace prefix: <prefix>a, <prefix>b (default {prefix})",
    )
    p.add_argument(
        "--subnet",
        default=DEFAULT_SUBNET,
        help="private IPv4 subnet (blackholed in the root namespace)",
    )
    p.add_argument("--dev", default=DEFAULT_DEV, help="TUN device name inside each namespace")


def _config(a: argparse.Namespace) -> LinkConfig:
    return LinkConfig.make(
        a.rate,
        a.rtt,
        queue=a.queue,
        loss=a.loss,
        loss_model=a.loss_model,
        burst=a.burst,
        loss_bad=a.loss_bad,
        reorder=a.reorder,
        reorder_delay=a.reorder_delay,
        duplicate=a.duplicate,
        corrupt=a.corrupt,
        impair=a.impair,
        rate_ba=a.rate_ba,
        mtu=a.mtu,
        seed=a.seed,
        overhead=a.overhead,
        corrupt_fix_checksum=a.corrupt_checksum == "fix",
        tick=a.tick,
    )


def cmd_up(a: argparse.Namespace) -> int:
    link = Link(_config(a), Names(a.prefix, a.subnet, a.dev), detach=True).up()
    state = read_state(a.prefix) or {}
    if a.json:
        print(json.dumps({**state, "notes": link.notes}, indent=2))
        return 0
    n = link.names
    print(f"linkemu: link '{n.prefix}' is up")
    print(f"  A: netns {n.ns_a}, {n.dev} {n.addr_a}/{n.network.prefixlen}")
    print(f"  B: netns {n.ns_b}, {n.dev} {n.addr_b}/{n.network.prefixlen}")
    for line in link.config.describe().splitlines():
        print(f"  {line}")
    print(f"  forwarder pid {state.get('pid')}, stats {state.get('stats')} (refresh: kill -USR1)")
    for note in link.notes:
        print(f"  note: {note}")
    print(
        f"  run:  ip netns exec {n.ns_b} iperf3 -s  /  ip netns exec {n.ns_a} iperf3 -c {n.addr_b}"
    )
    print(f"  stop: python -m bench.linkemu down --prefix {n.prefix}")
    return 0


def cmd_down(a: argparse.Namespace) -> int:
    prefixes = [s["prefix"] for s in all_states()] if a.all else [a.prefix]
    for prefix in prefixes:
        stats = down(prefix, remove_route=a.remove_route, quiet=False)
        if stats:
            print(json.dumps(stats))
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    states = all_states() if a.all else [s for s in [read_state(a.prefix)] if s]
    if not states:
        print(f"linkemu: no link with prefix {a.prefix!r}" if not a.all else "linkemu: no links")
        return 1
    for st in states:
        cfg = LinkConfig.from_dict(st["config"])
        print(
            f"{st['prefix']}: {st['ns_a']} {st['addr_a']} <-> {st['ns_b']} {st['addr_b']}, "
            f"pid {st['pid']}"
        )
        print("  " + cfg.describe().replace("\n", "\n  "))
        try:
            from pathlib import Path

            print("  " + json.dumps(request_stats(int(st["pid"]), Path(st["stats"]))))
        except (LinkError, OSError) as e:
            print(f"  forwarder not answering ({e}); run `down --prefix {st['prefix']}`")
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    from .check import run_check

    ok, table = run_check(
        _config(a), Names(a.prefix, a.subnet, a.dev), a.duration, gbit=not a.no_gbit
    )
    print()
    print(table)
    print()
    print("linkemu check: " + ("PASS (all within 5 %)" if ok else "FAIL (see rows marked NO)"))
    return 0 if ok else 1


def cmd_build(a: argparse.Namespace) -> int:
    print(build(force=True))
    return 0


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so `with Link(...)` blocks tear down."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.linkemu", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="set up a link and leave it running")
    _link_options(up)
    _name_options(up)
    up.add_argument("--json", action="store_true", help="print the state as JSON")
    up.set_defaults(func=cmd_up)
    dn = sub.add_parser("down", help="remove a link (idempotent)")
    _name_options(dn)
    dn.add_argument("--all", action="store_true", help="every link with a state file")
    dn.add_argument("--remove-route", action="store_true", help="also remove the blackhole route")
    dn.set_defaults(func=cmd_down)
    st = sub.add_parser("status", help="show a link and its live counters")
    _name_options(st)
    st.add_argument("--all", action="store_true")
    st.set_defaults(func=cmd_status)
    ck = sub.add_parser("check", help="measure RTT and rate against what was asked")
    _link_options(ck)
    _name_options(ck, prefix="js-chk-")
    ck.add_argument("--duration", type=float, default=5.0, help="seconds per iperf3 run")
    ck.add_argument("--no-gbit", action="store_true", help="skip the 1 Gbit/s runs")
    ck.set_defaults(func=cmd_check)
    bd = sub.add_parser("build", help="compile the forwarder")
    bd.set_defaults(func=cmd_build)
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    try:
        return int(a.func(a))
    except (LinkError, ValueError) as e:
        print(f"linkemu: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the `with Link(...)` blocks have already torn down
        print("linkemu: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
