"""What a peer server sends in its requests and records: refused with InvalidArgument when
no server could act on it (found by tests/fuzz/fuzz_records.py; inputs in
tests/fuzz/regressions/records)."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from jetstream.datachannel import DataChannelConfig
from jetstream.errors import InvalidArgument
from jetstream.transfers import peerwire
from jetstream.transfers.filesender import data_channel_config
from jetstream.transfers.model import RateLimits
from jetstream.v1 import common_pb2, peer_pb2


@pytest.mark.parametrize("modified", [Timestamp(seconds=1, nanos=-1),
                                      Timestamp(seconds=1 << 62)])
def test_a_received_file_with_an_impossible_time_is_invalid(modified):
    state = peer_pb2.ReceivedFileState(path="a\nb", modify_time=modified)
    with pytest.raises(InvalidArgument, match=r"^received file a\\x0ab: Timestamp is not valid"):
        peerwire.held([state])


@pytest.mark.parametrize(("size", "offset", "length", "problem"), [
    (100, 90, 20, "range 90\\+20 is beyond its size 100"),
    (1 << 63, 0, 1, "size 9223372036854775808 is beyond"),
    ((1 << 64) - 1, (1 << 64) - 2, 1, "is beyond"),  # the compiled range set holds int64 only
])
def test_a_received_range_beyond_the_file_is_invalid(size, offset, length, problem):
    state = peer_pb2.ReceivedFileState(path="f", size_bytes=size, received_ranges=[
        common_pb2.ByteRange(offset=offset, length=length)])
    with pytest.raises(InvalidArgument, match=problem):
        peerwire.held([state])


@pytest.mark.parametrize(("rate", "problem"), [
    (common_pb2.RateLimit(policy=common_pb2.RATE_POLICY_FIXED), "the fixed policy needs"),
    (common_pb2.RateLimit(min_bps=10, max_bps=5), "min_bps exceeds max_bps"),
    (common_pb2.RateLimit(target_bps=10, max_bps=5), "target_bps exceeds max_bps"),
    (common_pb2.RateLimit(policy=7), "unknown rate policy 7"),
])
def test_rate_limits_no_data_channel_can_run_at_are_invalid(rate, problem):
    with pytest.raises(InvalidArgument, match=problem):
        peerwire.rate_from_wire(rate)


def test_a_ceiling_below_the_floor_lowers_the_floor():
    config = data_channel_config(DataChannelConfig(), RateLimits(min_bps=100_000_000), 10_000)
    assert (config.min_rate, config.max_rate) == (10_000, 10_000)


def test_a_file_finished_at_the_receiver_is_held_whole():
    from jetstream.transfers.incoming import FileCheckpoint

    finished = FileCheckpoint("big.bin", 1 << 30, 123, "", (), complete=True)
    partial = FileCheckpoint("part.bin", 1000, 456, ".part.bin.x", ((0, 400),))
    held = peerwire.held([peerwire.to_wire(finished), peerwire.to_wire(partial)])
    assert held["big.bin"][:2] == (1 << 30, 123)
    assert list(held["big.bin"][2]) == [(0, 1 << 30)]
    assert list(held["part.bin"][2]) == [(0, 400)]
