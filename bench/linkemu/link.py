"""Set up and tear down the emulated link: namespaces, TUN devices, forwarder.

Layout for prefix P (default 'js-'):

    netns Pa: emu0 10.77.0.1/24 ─┐                 ┌─ netns Pb: emu0 10.77.0.2/24
                                  └─ linkemu-fwd ──┘   (in the root namespace,
                                     A->B, B->A        holding both TUN fds)

The root namespace gets only a blackhole route for the subnet, so traffic sent
there by mistake fails locally instead of leaving the machine. Teardown is
idempotent and works from names alone (no state file needed), so `up` can
always start by removing whatever a crashed run left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .config import LinkConfig

Side = Literal["a", "b"]

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "forwarder.c"
BUILD_DIR = HERE / "build"
BINARY = BUILD_DIR / "linkemu-fwd"
STATE_ROOT = Path(os.environ.get("LINKEMU_STATE_DIR", "/run/jetstream-linkemu"))
DEFAULT_PREFIX = os.environ.get("LINKEMU_PREFIX", "js-")
DEFAULT_SUBNET = os.environ.get("LINKEMU_SUBNET", "10.77.0.0/24")
DEFAULT_DEV = "emu0"
BUF_MAX = 64 << 20  # net.core.rmem_max / wmem_max floor, so tools can ask for big buffers
TXQUEUELEN = 4096  # TUN ring: absorbs forwarder scheduling hiccups (~50 ms at 1 Gbit/s)
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,19}")


class LinkError(RuntimeError):
    """Setting up or checking the emulated link failed; the message says what to do."""


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 20) -> str:
    """Run a short command, return stdout; raise LinkError with its stderr on failure."""
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise LinkError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def require_root() -> None:
    """Namespaces, TUN and routes need root; say so plainly instead of failing later."""
    if os.geteuid() != 0:
        raise LinkError("linkemu needs root (network namespaces, TUN devices, routes)")
    if not os.path.exists("/dev/net/tun"):
        raise LinkError("/dev/net/tun is missing (load the tun module or run outside a jail)")
    if shutil.which("ip") is None:
        raise LinkError("the 'ip' command is missing: apt-get install -y iproute2")


def build(force: bool = False) -> Path:
    """Compile the forwarder if its source is newer than the binary (plain `cc -O2`).

    Written to a temporary name and renamed, so parallel builds never run a torn file.
    """
    if not force and BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise LinkError(f"C compiler {cc!r} not found: apt-get install -y gcc")
    BUILD_DIR.mkdir(exist_ok=True)
    tmp = BUILD_DIR / f".linkemu-fwd.{os.getpid()}"
    cmd = [cc, "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(SOURCE), "-lm"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise LinkError(f"building the forwarder failed:\n{p.stderr}")
    os.replace(tmp, BINARY)
    return BINARY


@dataclass(frozen=True)
class Names:
    """Everything that identifies one link instance; derived from prefix and subnet."""

    prefix: str = DEFAULT_PREFIX
    subnet: str = DEFAULT_SUBNET
    dev: str = DEFAULT_DEV

    def __post_init__(self) -> None:
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise ValueError(f"prefix {self.prefix!r}: 1-20 of [A-Za-z0-9_.-]")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,15}", self.dev):
            raise ValueError(f"device name {self.dev!r}: 1-15 of [A-Za-z0-9_-]")
        net = self.network
        if not net.is_private or net.prefixlen > 30:
            raise ValueError(f"subnet {self.subnet}: must be a private IPv4 /30 or larger")

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet, strict=True)

    @property
    def ns_a(self) -> str:
        return f"{self.prefix}a"

    @property
    def ns_b(self) -> str:
        return f"{self.prefix}b"

    @property
    def addr_a(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def addr_b(self) -> str:
        return str(self.network.network_address + 2)

    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / self.prefix

    def ns(self, side: Side) -> str:
        return self.ns_a if side == "a" else self.ns_b

    def addr(self, side: Side) -> str:
        return self.addr_a if side == "a" else self.addr_b


# ---------------------------------------------------------------- processes


def _alive(pid: int) -> bool:
    """True if pid runs (a zombie counts as gone: it holds no TUN fds any more)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(b")") + 2 :][:1] != b"Z"


def _cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _forwarder_pids(names: Names) -> list[int]:
    """Forwarders serving this prefix, found from their command line (no state needed)."""
    want = f"--netns-a=/run/netns/{names.ns_a}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            argv = _cmdline(int(entry))
            if argv and argv[0].endswith(b"linkemu-fwd") and want in argv:
                pids.append(int(entry))
    return pids


def _terminate(pids: Sequence[int], grace: float = 3.0) -> None:
    """SIGTERM these pids, wait up to `grace` seconds, then SIGKILL the survivors."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)


def list_netns() -> list[str]:
    """Names of the named network namespaces (`ip netns list`)."""
    out = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


# ---------------------------------------------------------------- teardown


def down(
    prefix: str = DEFAULT_PREFIX, *, remove_route: bool = False, quiet: bool = True
) -> dict[str, Any] | None:
    """Remove everything a link with this prefix created; safe to call any time.

    Order matters: a namespace lives on while a process is inside it or holds a
    TUN fd from it, so the forwarder and the processes in the namespaces go first.
    The blackhole route is kept unless asked (it only makes mistakes fail locally).
    Returns the forwarder's final statistics when it could read them.
    """
    require_root()
    state = read_state(prefix)
    names = Names(prefix, state["subnet"], state["dev"]) if state else Names(prefix)
    pids = set(_forwarder_pids(names))
    if state and state.get("pid") and _alive(state["pid"]):
        if b"linkemu-fwd" in b" ".join(_cmdline(state["pid"])):
            pids.add(int(state["pid"]))
    _terminate(sorted(pids))
    existing = list_netns()
    removed = [f"forwarder {p}" for p in sorted(pids)]
    for ns in (names.ns_a, names.ns_b):
        if ns in existing:
            removed.append(f"netns {ns}")
            inside = [int(p) for p in _run(["ip", "netns", "pids", ns], check=False).split()]
            _terminate(inside)
            _run(["ip", "netns", "del", ns], check=False)
            if ns in list_netns():
                raise LinkError(f"could not delete namespace {ns}")
    stats = None
    stats_path = names.state_dir / "stats.json"
    with contextlib.suppress(OSError, ValueError):
        stats = json.loads(stats_path.read_text())
    if remove_route:
        others = [s for s in all_states() if s["prefix"] != prefix and s["subnet"] == names.subnet]
        if not others:
            _run(["ip", "route", "del", "blackhole", names.subnet], check=False)
    shutil.rmtree(names.state_dir, ignore_errors=True)
    if not quiet:
        print(
            f"linkemu: removed {', '.join(removed)}"
            if removed
            else f"linkemu: nothing to remove for {prefix}"
        )
    return stats


# ---------------------------------------------------------------- state


def read_state(prefix: str) -> dict[str, Any] | None:
    """The state file of a link, or None if there is none (or it is unreadable)."""
    try:
        data: dict[str, Any] = json.loads((STATE_ROOT / prefix / "state.json").read_text())
        return data
    except (OSError, ValueError):
        return None


def all_states() -> list[dict[str, Any]]:
    """State of every link set up on this machine with linkemu."""
    if not STATE_ROOT.is_dir():
        return []
    out = [read_state(p.name) for p in STATE_ROOT.iterdir()]
    return [s for s in out if s]


def _write_state(names: Names, state: dict[str, Any]) -> None:
    names.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = names.state_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, names.state_dir / "state.json")


# ---------------------------------------------------------------- setup helpers


def _check_subnet_free(names: Names) -> None:
    """Refuse a subnet the root namespace already routes (other than our blackhole)."""
    net = names.network
    for r in json.loads(_run(["ip", "-4", "-j", "route", "show", "table", "all"]) or "[]"):
        dst = r.get("dst", "")
        if dst in ("", "default") or r.get("type") in ("blackhole", "unreachable", "prohibit"):
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.IPv4Network(dst, strict=False).overlaps(net) and r.get("type") != "local":
                raise LinkError(f"subnet {net} overlaps route {dst} in the root namespace")
    for link in json.loads(_run(["ip", "-4", "-j", "addr", "show"]) or "[]"):
        for a in link.get("addr_info", []):
            if ipaddress.IPv4Address(a["local"]) in net:
                raise LinkError(f"subnet {net} overlaps {a['local']} on {link['ifname']}")


def _raise_buffer_limits() -> list[str]:
    """Raise net.core.{r,w}mem_max to 64 MiB (never lower them); report what changed.

    They are global, not per namespace, and the 4 MiB default caps SO_RCVBUF at
    rates where a 100 ms burst is 12 MB.
    """
    notes = []
    for key in ("rmem_max", "wmem_max"):
        path = Path(f"/proc/sys/net/core/{key}")
        old = int(path.read_text())
        if old < BUF_MAX:
            path.write_text(str(BUF_MAX))
            notes.append(f"raised net.core.{key} {old} -> {BUF_MAX} (global sysctl)")
    return notes


def _ns_sysctls(ns: str) -> None:
    """Per-namespace settings: no IPv6 chatter on the link, TCP buffers for big BDPs."""
    settings = {
        "net.ipv6.conf.all.disable_ipv6": "1",
        "net.ipv6.conf.default.disable_ipv6": "1",
        "net.ipv4.tcp_rmem": f"4096 131072 {BUF_MAX}",
        "net.ipv4.tcp_wmem": f"4096 16384 {BUF_MAX}",
    }
    for k, v in settings.items():
        _run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{k}={v}"], check=False)


def _wait_ready(proc: subprocess.Popen[bytes], fd: int, log: Path, timeout: float = 10) -> None:
    """Block until the forwarder writes 'ready' on its pipe, or explain why it did not."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"ready" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise LinkError(f"forwarder not ready after {timeout:g} s; log: {log}")
        r, _, _ = select.select([fd], [], [], min(left, 0.2))
        if r:
            chunk = os.read(fd, 64)
            if not chunk:
                break
            buf += chunk
        elif proc.poll() is not None:
            break
    if b"ready" not in buf:
        proc.wait(timeout=5)
        raise LinkError(f"forwarder exited ({proc.returncode}): {log.read_text().strip()}")


# ---------------------------------------------------------------- the link


class Link:
    """An emulated WAN link between two network namespaces.

        with Link(rate="200mbit", rtt="100ms", loss="1%", prefix="js-x-") as link:
            link.ns_a, link.addr_b, link.run("b", [...]), link.stats()

    Keyword arguments other than prefix/subnet/dev/detach go to LinkConfig.make;
    or pass a ready LinkConfig (and Names). Used as a context manager it is set
    up on enter and torn down on exit (and at interpreter exit); up()/down()
    also work by hand. With detach=True the forwarder outlives this process
    (the CLI's `up`); otherwise it exits when this process does, so a crashed
    test leaves only namespaces behind, which the next `up` with the same
    prefix removes.
    """

    def __init__(
        self,
        config: LinkConfig | None = None,
        names: Names | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        subnet: str = DEFAULT_SUBNET,
        dev: str = DEFAULT_DEV,
        detach: bool = False,
        **link: Any,
    ) -> None:
        if config is not None and link:
            raise TypeError(f"pass either a LinkConfig or link keywords, not both: {sorted(link)}")
        self.config = config if config is not None else LinkConfig.make(**link)
        self.names = names if names is not None else Names(prefix, subnet, dev)
        self.detach = detach
        self.notes: list[str] = []
        self.final_stats: dict[str, Any] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Link({self.names.ns_a} <-> {self.names.ns_b}: {self.config.describe()!r})"

    @classmethod
    def make(cls, **kw: Any) -> Link:
        """Same as Link(**kw); kept for readability at call sites."""
        return cls(**kw)

    # names and addresses
    @property
    def ns_a(self) -> str:
        return self.names.ns_a

    @property
    def ns_b(self) -> str:
        return self.names.ns_b

    @property
    def addr_a(self) -> str:
        return self.names.addr_a

    @property
    def addr_b(self) -> str:
        return self.names.addr_b

    @property
    def pid(self) -> int | None:
        st = read_state(self.names.prefix)
        return int(st["pid"]) if st and st.get("pid") else None

    def __enter__(self) -> Link:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> Link:
        """Create namespaces, forwarder and devices; removes leftovers of this prefix first."""
        require_root()
        n = self.names
        down(n.prefix)
        _check_subnet_free(n)
        # Safety first: mistakes aimed at the subnet from the root namespace fail here.
        _run(["ip", "route", "replace", "blackhole", n.subnet])
        self.notes = [
            f"blackhole route for {n.subnet} in the root namespace",
            *_raise_buffer_limits(),
        ]
        binary = build()
        n.state_dir.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {
            "prefix": n.prefix,
            "subnet": n.subnet,
            "dev": n.dev,
            "ns_a": n.ns_a,
            "ns_b": n.ns_b,
            "addr_a": n.addr_a,
            "addr_b": n.addr_b,
            "pid": None,
            "stats": str(n.state_dir / "stats.json"),
            "log": str(n.state_dir / "forwarder.log"),
            "config": self.config.to_dict(),
            "created": time.time(),
            "owner_pid": os.getpid(),
        }
        _write_state(n, state)
        if not self.detach:
            atexit.register(self._atexit)
        try:
            for ns in (n.ns_a, n.ns_b):
                _run(["ip", "netns", "add", ns])
                _ns_sysctls(ns)
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            self._start_forwarder(binary, state)
            for side in ("a", "b"):
                ns, addr = n.ns(side), n.addr(side)
                _run(
                    [
                        "ip",
                        "-n",
                        ns,
                        "link",
                        "set",
                        n.dev,
                        "mtu",
                        str(self.config.mtu),
                        "txqueuelen",
                        str(TXQUEUELEN),
                        "up",
                    ]
                )
                _run(["ip", "-n", ns, "addr", "add", f"{addr}/{n.network.prefixlen}", "dev", n.dev])
        except BaseException:
            self.down()
            raise
        return self

    def _start_forwarder(self, binary: Path, state: dict[str, Any]) -> None:
        n = self.names
        r, w = os.pipe()
        argv = [
            str(binary),
            f"--netns-a=/run/netns/{n.ns_a}",
            f"--netns-b=/run/netns/{n.ns_b}",
            f"--dev-a={n.dev}",
            f"--dev-b={n.dev}",
            f"--stats={state['stats']}",
            f"--ready-fd={w}",
            *self.config.forwarder_args(),
        ]
        if not self.detach:
            argv.append(f"--parent-pid={os.getpid()}")
        log = Path(state["log"])
        with open(log, "ab") as logf:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                pass_fds=(w,),
                start_new_session=True,
            )
        os.close(w)
        try:
            state["pid"] = self._proc.pid
            _write_state(n, state)
            _wait_ready(self._proc, r, log)
        finally:
            os.close(r)

    def down(self) -> dict[str, Any] | None:
        """Tear down (idempotent); keeps the forwarder's final stats in final_stats."""
        stats = down(self.names.prefix)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None
        if stats is not None:
            self.final_stats = stats
        with contextlib.suppress(Exception):
            atexit.unregister(self._atexit)
        return stats

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self.down()

    # ------------------------------------------------------------ using it

    def stats(self, timeout: float = 2.0) -> dict[str, Any]:
        """Live forwarder counters and CPU use (asks it with SIGUSR1 for a fresh dump)."""
        st = read_state(self.names.prefix)
        if not st or not st.get("pid"):
            raise LinkError(f"link {self.names.prefix} is not up")
        return request_stats(int(st["pid"]), Path(st["stats"]), timeout)

    def cmd(self, side: Side, argv: Sequence[str]) -> list[str]:
        """argv wrapped to run inside namespace A or B."""
        return ["ip", "netns", "exec", self.names.ns(side), *argv]

    def run(
        self, side: Side, argv: Sequence[str], timeout: float = 60, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a namespace (bounded by timeout)."""
        return subprocess.run(
            self.cmd(side, argv), text=True, capture_output=True, timeout=timeout, **kw
        )

    def popen(self, side: Side, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a command inside a namespace; the caller waits for or kills it."""
        return subprocess.Popen(self.cmd(side, argv), **kw)

    def socket(
        self,
        side: Side,
        family: int = socket.AF_INET,
        type: int = socket.SOCK_DGRAM,
        proto: int = 0,
    ) -> socket.socket:
        """A socket created inside namespace A or B, usable from this process."""
        return netns_socket(self.names.ns(side), family, type, proto)

    def ping(
        self,
        src: Side = "a",
        count: int = 20,
        interval: float = 0.02,
        size: int = 56,
        timeout: float = 3.0,
    ) -> list[float | None]:
        """ICMP echo RTTs in seconds from one side to the other (None: no reply)."""
        dst: Side = "b" if src == "a" else "a"
        return icmp_ping(self.names.ns(src), self.names.addr(dst), count, interval, size, timeout)


def request_stats(pid: int, path: Path, timeout: float = 2.0) -> dict[str, Any]:
    """Send SIGUSR1 to a forwarder and return the stats dump that follows."""

    def seq() -> int:
        with contextlib.suppress(OSError, ValueError):
            return int(json.loads(path.read_text())["seq"])
        return -1

    before = seq()
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if seq() > before:
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        time.sleep(0.005)
    raise LinkError(f"forwarder {pid} did not answer SIGUSR1 within {timeout:g} s")


# ---------------------------------------------------------------- sockets in namespaces

_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def netns_socket(
    ns: str, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM, proto: int = 0
) -> socket.socket:
    """Create a socket inside a named namespace without a subprocess.

    A socket belongs to the namespace it was created in, so a short-lived thread
    enters the namespace (setns affects only the calling thread; Python 3.11 has
    no os.setns), creates the socket and exits. The rest of the process is untouched.
    """
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(socket.socket(family, type, proto))
        except BaseException as e:
            result.append(e)

    t = threading.Thread(target=work, name=f"netns-{ns}")
    t.start()
    t.join()
    r = result[0]
    if isinstance(r, BaseException):
        raise r
    return r


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def icmp_ping(
    ns: str, dst: str, count: int = 20, interval: float = 0.02, size: int = 56, timeout: float = 3.0
) -> list[float | None]:
    """ICMP echo from inside `ns` to `dst`; the peer's kernel answers, so no echo server.

    Probes are sent on a fixed schedule (not one at a time), so a 100 ms RTT with
    20 probes takes about 0.5 s. Each RTT is measured against its own send time.
    """
    ident = os.getpid() & 0xFFFF
    sent: dict[int, int] = {}
    rtts: dict[int, float] = {}
    with netns_socket(ns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.setblocking(False)
        start = time.monotonic()
        end = start + (count - 1) * interval + timeout
        seq = 0
        while time.monotonic() < end and len(rtts) < count:
            now = time.monotonic()
            if seq < count and now >= start + seq * interval:
                payload = bytes(size)
                hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
                pkt = (
                    struct.pack("!BBHHH", 8, 0, _icmp_checksum(hdr + payload), ident, seq) + payload
                )
                sent[seq] = time.perf_counter_ns()
                s.sendto(pkt, (dst, 0))
                seq += 1
                continue
            wake = start + seq * interval if seq < count else end
            r, _, _ = select.select([s], [], [], max(0.0, min(wake, end) - time.monotonic()))
            if not r:
                continue
            while True:
                try:
                    data, addr = s.recvfrom(65535)
                except BlockingIOError:
                    break
                t = time.perf_counter_ns()
                ihl = (data[0] & 0x0F) * 4
                typ, _code, _ck, rid, rseq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
                if (
                    typ == 0
                    and rid == ident
                    and addr[0] == dst
                    and rseq in sent
                    and rseq not in rtts
                ):
                    rtts[rseq] = (t - sent[rseq]) / 1e9
    return [rtts.get(i) for i in range(count)]
