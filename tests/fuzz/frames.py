"""Payloads of fuzz-chosen frames for the harnesses that seal authentic packets.

Raw bytes mostly fail at the first frame; frames built field by field from the input reach
the handlers behind the decoder (ACK ranges, flow control, stream offsets, CLOSE reasons).
The layouts are docs/protocol.md section 4's, written out here so a harness can also build
what the encoders refuse to (a range count that does not match, a length past the end).
"""

from __future__ import annotations

import struct

import atheris

from jetstream.datachannel import wire
from jetstream.datachannel.wire import FrameType

_ACK = struct.Struct(">BQIHI")
_ACK_RANGE = struct.Struct(">II")
_U64 = struct.Struct(">BQ")
_CLOSE = struct.Struct(">BHH")
_HELLO = struct.Struct(">B32sIQHI")
_DATA = struct.Struct(">BIQH")


def fuzz_frames(fdp: atheris.FuzzedDataProvider) -> bytes:
    """A payload of fuzz-chosen frames, each well formed or nearly so."""
    parts = []
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        kind = fdp.ConsumeIntInRange(0, 9)
        if kind == 0:
            parts.append(wire.PING_FRAME)
        elif kind == 1:
            count = fdp.ConsumeIntInRange(0, 4)
            parts.append(_ACK.pack(FrameType.ACK, fdp.ConsumeIntInRange(0, 64),
                                   fdp.ConsumeIntInRange(0, 0xFFFFFFFF), count,
                                   fdp.ConsumeIntInRange(0, 64)))
            for _ in range(max(count - 1, 0)):
                parts.append(_ACK_RANGE.pack(fdp.ConsumeIntInRange(0, 16),
                                             fdp.ConsumeIntInRange(0, 16)))
        elif kind in (2, 3):
            parts.append(_U64.pack(FrameType.MAX_DATA if kind == 2 else FrameType.DATA_BLOCKED,
                                   fdp.ConsumeIntInRange(0, (1 << 64) - 1)))
        elif kind == 4:
            reason = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
            parts.append(_CLOSE.pack(FrameType.CLOSE, fdp.ConsumeIntInRange(0, 0xFFFF),
                                     len(reason)) + reason)
        elif kind in (5, 6):
            body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 1200))
            stream = fdp.ConsumeIntInRange(0, 8) if fdp.ConsumeBool() else \
                fdp.ConsumeIntInRange(0, 0xFFFFFFFF)
            offset = fdp.ConsumeIntInRange(0, 4096) if fdp.ConsumeBool() else \
                fdp.ConsumeIntInRange(0, (1 << 64) - 1)
            length = len(body) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 0xFFFF)
            parts.append(_DATA.pack(FrameType.DATA_FIN if kind == 6 else FrameType.DATA,
                                    stream, offset, length) + body)
        elif kind == 7:
            parts.append(_HELLO.pack(FrameType.HELLO, fdp.ConsumeBytes(32),
                                     *(fdp.ConsumeIntInRange(0, (1 << bits) - 1)
                                       for bits in (32, 64, 16, 32))))
        elif kind == 8:
            parts.append(bytes(fdp.ConsumeIntInRange(1, 40)))
        else:
            parts.append(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 40)))
    return b"".join(parts)


def damaged(fdp: atheris.FuzzedDataProvider, sent: list[bytes]) -> bytes | None:
    """One earlier packet with a bit flipped or its end cut off."""
    if not sent:
        return None
    packet = bytearray(sent[fdp.ConsumeIntInRange(0, len(sent) - 1)])
    if fdp.ConsumeBool():
        bit = fdp.ConsumeIntInRange(0, len(packet) * 8 - 1)
        packet[bit // 8] ^= 1 << (bit % 8)
    else:
        del packet[fdp.ConsumeIntInRange(0, len(packet) - 1):]
    return bytes(packet)
