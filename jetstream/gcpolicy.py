"""The garbage collector's settings for a process that moves packets.

The data path allocates a few short-lived containers per datagram (tuples, memoryviews,
events), none of them in cycles. With CPython's default thresholds (700, 10, 10) a young
collection runs every ~100 datagrams, and the older generations are walked over again and
again, with the sender's in-flight packet records and every module object loaded at start
in them. Freezing what start-up built and collecting less often took 12 % off the sender's
CPU per packet and added 13 % to the data channel's rate (docs/performance.md); cycles that
do form (a failed task's traceback) are still collected, later.
"""

from __future__ import annotations

import gc

THRESHOLDS = (100_000, 50, 100)
"""Allocations before a young collection; young, then middle collections before the next
generation's."""


def settle() -> None:
    """Call once start-up is done: what it built lives as long as the process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
