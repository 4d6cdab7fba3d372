"""Transfer data as the peer protocol carries it, for both directions of a session.

What a receiver already holds from earlier sessions lets a sender skip bytes: a push asks
the receiver (QueryReceivedState); a pull's receiver reads its own checkpoints and hands
them over when it opens the send session. Rate limits travel the other way in a pull: the
receiver owns the transfer, the sender's data channel applies them.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.timestamp_pb2 import Timestamp

from jetstream.datachannel.rangeset import RangeSet
from jetstream.errors import InvalidArgument
from jetstream.services.manifests import ManifestSpec
from jetstream.storage.paths import printable
from jetstream.transfers.incoming import FileCheckpoint
from jetstream.transfers.model import RateLimits, RatePolicy
from jetstream.v1 import common_pb2, manifests_pb2, peer_pb2

Held = dict[str, tuple[int, int, RangeSet]]
"""Path -> (size, mtime_ns, durably received ranges) of partly received files."""

_POLICIES = {RatePolicy.FAIR: common_pb2.RATE_POLICY_FAIR,
             RatePolicy.FIXED: common_pb2.RATE_POLICY_FIXED,
             RatePolicy.LOW_PRIORITY: common_pb2.RATE_POLICY_LOW_PRIORITY}
_POLICY_FROM_WIRE = {wire: policy for policy, wire in _POLICIES.items()}


def to_wire(checkpoint: FileCheckpoint) -> peer_pb2.ReceivedFileState:
    modified = Timestamp()
    modified.FromNanoseconds(checkpoint.mtime_ns)
    return peer_pb2.ReceivedFileState(
        path=checkpoint.path, exists=True, complete=checkpoint.complete,
        size_bytes=checkpoint.size,
        modify_time=modified,
        received_ranges=[common_pb2.ByteRange(offset=a, length=b - a)
                         for a, b in checkpoint.ranges])


MAX_FILE_SIZE = 1 << 62
"""Larger sizes and offsets from a peer are refused: ranges are int64 in the compiled path."""


def held(states: Iterable[peer_pb2.ReceivedFileState]) -> Held:
    """InvalidArgument for a modify_time outside what a Timestamp may hold, a size beyond
    MAX_FILE_SIZE or a range beyond the file's size."""
    out: Held = {}
    for state in states:
        where = f"received file {printable(state.path)}"
        try:
            mtime_ns = state.modify_time.ToNanoseconds()
        except ValueError as exc:
            raise InvalidArgument(f"{where}: {exc}") from None
        if state.size_bytes > MAX_FILE_SIZE:
            raise InvalidArgument(f"{where}: size {state.size_bytes} is beyond {MAX_FILE_SIZE}")
        for r in state.received_ranges:
            if r.offset + r.length > state.size_bytes:
                raise InvalidArgument(f"{where}: range {r.offset}+{r.length} is beyond its "
                                      f"size {state.size_bytes}")
        ranges = RangeSet((r.offset, r.offset + r.length) for r in state.received_ranges)
        if state.complete:  # finished there: nothing of it needs to travel again
            ranges = RangeSet([(0, state.size_bytes)]) if state.size_bytes else RangeSet()
        out[state.path] = (state.size_bytes, mtime_ns, ranges)
    return out


def rate_to_wire(rate: RateLimits) -> common_pb2.RateLimit:
    return common_pb2.RateLimit(min_bps=rate.min_bps, target_bps=rate.target_bps,
                                max_bps=rate.max_bps, policy=_POLICIES[rate.policy])


def rate_from_wire(message: common_pb2.RateLimit) -> RateLimits:
    """Limits a data channel can run at; InvalidArgument for any others (a peer's record
    included: its rate limits reach the sender's data channel as they are)."""
    if message.policy and message.policy not in _POLICY_FROM_WIRE:
        raise InvalidArgument(f"unknown rate policy {message.policy}")
    rate = RateLimits(min_bps=message.min_bps, target_bps=message.target_bps,
                      max_bps=message.max_bps,
                      policy=_POLICY_FROM_WIRE.get(message.policy, RatePolicy.FAIR))
    problem = rate.problem()
    if problem is not None:
        raise InvalidArgument(f"rate_limit: {problem}")
    return rate


def spec_to_wire(spec: ManifestSpec) -> manifests_pb2.ManifestSpec:
    """A pull's spec, for building its manifest on the remote server."""
    return manifests_pb2.ManifestSpec(
        mappings=[manifests_pb2.FileMapping(source_path=m.source_path,
                                            destination_path=m.destination_path)
                  for m in spec.mappings],
        include_patterns=list(spec.include), exclude_patterns=list(spec.exclude),
        symlink_policy=manifests_pb2.SymlinkPolicy.Value(
            "SYMLINK_POLICY_" + spec.symlinks.value.upper()))
