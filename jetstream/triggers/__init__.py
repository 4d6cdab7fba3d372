"""Trigger scripts: executables in --trigger-dir named after events, run when they happen.

`catalog` names the events and the arguments each script gets, `scripts` finds the
scripts and decides which may run, `runner` runs them off the event log (docs/triggers.md).
"""
