"""The servers' garbage-collector settings (jetstream/gcpolicy.py): what start-up built is
frozen out of every collection, and young collections run far less often than by default."""

from __future__ import annotations

import gc

from jetstream import gcpolicy


def test_settle_freezes_start_up_objects_and_collects_less_often():
    before = gc.get_threshold()
    try:
        gcpolicy.settle()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == gcpolicy.THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
