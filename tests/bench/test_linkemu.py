"""Tests of the WAN link emulator (bench/linkemu): the equipment must be right
before any benchmark run on it means anything.

The namespace tests need root and /dev/net/tun. They skip without them, except
under CI=true, where a missing prerequisite is a failure (CI must run them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) does not add the cwd
    sys.path.insert(0, str(ROOT))

from bench.linkemu import Link, LinkConfig, parse_prob, parse_queue, parse_rate, parse_time  # noqa: E402
from bench.linkemu import link as linkmod  # noqa: E402

PREFIX = f"jst{os.getpid() % 100000}-"  # unique per run: parallel runs cannot collide
PORT = 40000


def _missing() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root (network namespaces, TUN devices, routes)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    for tool in ("ip", os.environ.get("CC", "cc")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@pytest.fixture
def netns_ok() -> None:
    """Skip (or, under CI=true, fail) when namespaces cannot be created here."""
    why = _missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the link emulator cannot run: {why}")
        pytest.skip(why)


def make_link(**kw: object) -> Link:
    kw.setdefault("rate", "50mbit")
    kw.setdefault("rtt", "4ms")
    return Link(prefix=PREFIX, **kw)  # type: ignore[arg-type]


def udp_send_recv(
    link: Link,
    n: int,
    size: int = 1000,
    src: str = "a",
    expect: int | None = None,
    quiet: float = 0.4,
) -> tuple[list[bytes], list[float]]:
    """Send n datagrams src->other side, return payloads and arrival times (bounded wait)."""
    dst = "b" if src == "a" else "a"
    rx = link.socket(dst)  # type: ignore[arg-type]
    tx = link.socket(src)  # type: ignore[arg-type]
    with rx, tx:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        rx.bind((link.names.addr(dst), PORT))  # type: ignore[arg-type]
        rx.settimeout(quiet)
        for i in range(n):
            tx.sendto(i.to_bytes(4, "big") + bytes(size - 4), (link.names.addr(dst), PORT))  # type: ignore[arg-type]
        got: list[bytes] = []
        times: list[float] = []
        deadline = time.monotonic() + 10
        want = n if expect is None else expect
        while len(got) < want and time.monotonic() < deadline:
            try:
                got.append(rx.recv(65535))
            except TimeoutError:
                break
            times.append(time.monotonic())
    return got, times


def seqs(payloads: list[bytes]) -> list[int]:
    return [int.from_bytes(p[:4], "big") for p in payloads]


# ------------------------------------------------------------------ no root needed


def test_units() -> None:
    assert parse_rate("200mbit") == 200e6
    assert parse_rate("1gbit") == 1e9
    assert parse_rate("1.5G") == 1.5e9
    assert parse_rate("0") == 0
    with pytest.raises(ValueError, match="ambiguous"):
        parse_rate("100mbps")
    assert parse_time("100ms") == pytest.approx(0.1)
    assert parse_time("50us") == pytest.approx(50e-6)
    with pytest.raises(ValueError):
        parse_time("100")
    assert parse_prob("1%") == pytest.approx(0.01)
    assert parse_prob(0.01) == 0.01
    with pytest.raises(ValueError):
        parse_prob("1")  # netem's trap: is it 1 % or 100 %?
    assert parse_queue("200ms", 200e6, 0.1, 1500) == pytest.approx(5e6)
    assert parse_queue("1bdp", 200e6, 0.1, 1500) == pytest.approx(2.5e6)
    assert parse_queue("100pkt", 200e6, 0.1, 1500) == 150000
    assert parse_queue("2MiB", 0, 0, 1500) == 2 << 20


def test_config_directions_and_defaults() -> None:
    c = LinkConfig.make("200mbit", "100ms", loss="1%")
    assert c.ab.delay_s == c.ba.delay_s == pytest.approx(0.05)
    assert c.ab.loss == pytest.approx(0.01) and c.ba.loss == 0  # data direction only
    assert c.ab.queue_bytes == pytest.approx(2.5e6)  # 1 BDP
    both = LinkConfig.make("200mbit", "100ms", loss="1%", impair="both", rate_ba="10mbit")
    assert both.ba.loss == pytest.approx(0.01) and both.ba.rate_bps == 10e6
    assert LinkConfig.from_dict(both.to_dict()) == both
    g = LinkConfig.make("10mbit", "10ms", loss="5%", loss_model="gilbert", burst=4).ab
    p, r = g.gilbert_params()
    assert r == pytest.approx(0.25) and p / (p + r) == pytest.approx(0.05)
    assert "--ab-ge-r=0.25" in g.forwarder_args("ab")


# ------------------------------------------------------------------ namespaces


def test_rtt_matches_and_never_early(netns_ok: None) -> None:
    with make_link(rate="20mbit", rtt="20ms") as link:
        rtts = [r for r in link.ping(count=20, interval=0.01) if r is not None]
    assert len(rtts) == 20
    assert min(rtts) >= 0.020  # propagation delay is never undershot
    assert statistics.median(rtts) == pytest.approx(0.020, rel=0.05)


def test_rate_and_drop_tail_queue(netns_ok: None) -> None:
    # 400 x 1028-byte IP packets at 20 Mbit/s: 165 ms of serialization.
    with make_link(rate="20mbit", rtt="2ms", queue="1MiB") as link:
        got, times = udp_send_recv(link, 400)
        s = link.stats()
    assert len(got) == 400
    span = times[-1] - times[0]
    assert span == pytest.approx(399 * 1028 * 8 / 20e6, rel=0.1)
    assert s["ab"]["drop_queue"] == 0
    # The same burst into a 20-packet queue: drop-tail keeps the first ones.
    with make_link(rate="20mbit", rtt="2ms", queue="20pkt") as link:
        got, _ = udp_send_recv(link, 400)
        s = link.stats()
    assert 20 <= len(got) < 100
    assert s["ab"]["drop_queue"] == 400 - len(got)
    assert seqs(got)[:20] == list(range(20))


def test_full_loss_blocks_data_direction_only(netns_ok: None) -> None:
    with make_link(loss="100%") as link:
        assert link.ping(count=5, interval=0.01, timeout=0.3) == [None] * 5
        got, _ = udp_send_recv(link, 50, quiet=0.2)
        assert got == []
        back, _ = udp_send_recv(link, 50, src="b")  # B->A is clean by default
        assert len(back) == 50
        s = link.stats()
    assert s["ab"]["pkts_out"] == 0 and s["ab"]["drop_loss"] == s["ab"]["pkts_in"] >= 55


def test_bernoulli_loss_is_seeded(netns_ok: None) -> None:
    lost = []
    for _ in range(2):
        with make_link(loss="20%", seed=7, queue="2MiB") as link:
            got, _ = udp_send_recv(link, 1000, quiet=0.3)
        lost.append(set(range(1000)) - set(seqs(got)))
    assert lost[0] == lost[1]  # same seed, same packets lost
    assert 150 <= len(lost[0]) <= 250  # 20 % of 1000, +-4 sigma


def test_gilbert_loss_is_bursty(netns_ok: None) -> None:
    with make_link(loss="10%", loss_model="gilbert", burst=5, queue="4MiB") as link:
        got, _ = udp_send_recv(link, 3000, quiet=0.3)
    received = set(seqs(got))
    lost = [i not in received for i in range(3000)]
    runs = [len(r) for r in "".join("x" if x else "." for x in lost).split(".") if r]
    assert 0.05 <= sum(lost) / 3000 <= 0.16
    assert statistics.mean(runs) > 3  # Bernoulli at 10 % would give about 1.1


def test_duplicate_and_reorder(netns_ok: None) -> None:
    with make_link(duplicate="100%", queue="2MiB") as link:
        got, _ = udp_send_recv(link, 200, expect=400)
    assert sorted(seqs(got)) == sorted(list(range(200)) * 2)
    with make_link(reorder="30%", reorder_delay="5ms", queue="2MiB") as link:
        got, _ = udp_send_recv(link, 300)
        s = link.stats()
    order = seqs(got)
    assert sorted(order) == list(range(300)) and order != list(range(300))
    assert s["ab"]["reordered"] > 0


@pytest.mark.parametrize("fix", [True, False])
def test_corruption(netns_ok: None, fix: bool) -> None:
    """With the checksum fixed the damage reaches the application; without, the kernel drops it."""
    with make_link(corrupt="100%", corrupt_fix_checksum=fix, queue="2MiB") as link:
        got, _ = udp_send_recv(link, 100, quiet=0.3)
        s = link.stats()
    assert s["ab"]["corrupted"] == 100
    if not fix:
        assert got == []
        return
    assert len(got) == 100
    sent = [int.from_bytes(i.to_bytes(4, "big") + bytes(996), "big") for i in range(100)]
    for p in got:
        v = int.from_bytes(p, "big")
        flips = min(bin(v ^ ref).count("1") for ref in sent)
        assert flips == 1


def _leftovers(prefix: str) -> list[str]:
    out = [ns for ns in linkmod.list_netns() if ns.startswith(prefix)]
    out += [f"pid {p}" for p in linkmod._forwarder_pids(linkmod.Names(prefix))]
    if (linkmod.STATE_ROOT / prefix).exists():
        out.append("state dir")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    out += [line for line in links.splitlines() if "emu0" in line]  # nothing leaks into the root ns
    return out


def test_teardown_leaves_nothing(netns_ok: None) -> None:
    link = make_link()
    with link:
        pid = link.pid
        assert pid and linkmod._alive(pid)
        assert link.ns_a in linkmod.list_netns()
    assert link.final_stats and link.final_stats["event"] == "exit"
    assert not linkmod._alive(pid)
    assert _leftovers(PREFIX) == []


def test_up_cleans_after_kill9(netns_ok: None) -> None:
    cli = [sys.executable, "-m", "bench.linkemu"]
    args = ["--prefix", PREFIX, "--rate", "10mbit", "--rtt", "2ms"]
    try:
        subprocess.run([*cli, "up", *args], cwd=ROOT, check=True, capture_output=True, timeout=30)
        first = linkmod.read_state(PREFIX)
        assert first and linkmod._alive(first["pid"])
        os.kill(first["pid"], signal.SIGKILL)  # simulated crash: namespaces stay behind
        deadline = time.monotonic() + 5
        while linkmod._alive(first["pid"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert f"{PREFIX}a" in linkmod.list_netns()
        subprocess.run([*cli, "up", *args], cwd=ROOT, check=True, capture_output=True, timeout=30)
        second = linkmod.read_state(PREFIX)
        assert second and second["pid"] != first["pid"] and linkmod._alive(second["pid"])
        rtts = linkmod.icmp_ping(f"{PREFIX}a", second["addr_b"], count=3, interval=0.01)
        assert all(r is not None for r in rtts)
    finally:
        subprocess.run(
            [*cli, "down", "--prefix", PREFIX], cwd=ROOT, capture_output=True, timeout=30
        )
    assert _leftovers(PREFIX) == []


def test_link_set_up_in_a_thread_outlives_the_thread(netns_ok: None) -> None:
    """asyncio.to_thread(link.up) must not kill the forwarder when the worker thread exits."""
    link = make_link()
    t = threading.Thread(target=link.up)
    t.start()
    t.join()
    try:
        time.sleep(0.2)
        assert all(r is not None for r in link.ping(count=3, interval=0.01))
    finally:
        link.down()


def test_forwarder_exits_with_its_owner(netns_ok: None) -> None:
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from bench.linkemu import Link; "
        "l = Link(prefix=sys.argv[2], rate='10mbit', rtt='2ms').up(); print('up', flush=True); "
        "time.sleep(30)"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code, str(ROOT), PREFIX], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout and owner.stdout.readline().strip() == "up"
        pid = linkmod.read_state(PREFIX)["pid"]  # type: ignore[index]
        owner.kill()  # SIGKILL: no atexit, no cleanup in the owner
        owner.wait(timeout=5)
        deadline = time.monotonic() + 3
        while linkmod._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not linkmod._alive(pid)
    finally:
        owner.kill()
        owner.wait(timeout=5)
        linkmod.down(PREFIX)
    assert _leftovers(PREFIX) == []


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    """Whatever a test does, it leaves no namespace or forwarder behind."""
    yield
    if _missing() is None:
        linkmod.down(PREFIX)
