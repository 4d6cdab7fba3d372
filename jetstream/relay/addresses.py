"""Peer addresses as the relay link spells them: `ip:port`, `[ip]:port` for IPv6."""

from __future__ import annotations

Address = tuple[str, int]


def format_address(addr: Address) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> Address:
    """The inverse of `format_address`; ValueError for anything else."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"not an ip:port address: {text!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def grpc_peer_address(peer: str) -> Address | None:
    """(host, port) of a grpc peer string such as `ipv4:127.0.0.1:5000` or `ipv6:[::1]:5000`;
    None for other transports (the local Unix socket)."""
    scheme, _, rest = peer.partition(":")
    if scheme not in ("ipv4", "ipv6"):
        return None
    try:
        return parse_address(rest)
    except ValueError:
        return None
