"""The connection state table (handshake.py)."""

from __future__ import annotations

import pytest

from jetstream.datachannel.handshake import TRANSITIONS, Role, State, Trigger, next_state
from jetstream.errors import LocalProtocolError, RemoteProtocolError


def test_client_and_server_paths() -> None:
    state = next_state(Role.CLIENT, State.START, Trigger.CONNECT)
    assert state is State.INITIAL_SENT
    assert next_state(Role.CLIENT, state, Trigger.RECEIVE_HANDSHAKE) is State.ESTABLISHED
    state = next_state(Role.SERVER, State.START, Trigger.RECEIVE_INITIAL)
    assert state is State.HANDSHAKE_SENT
    assert next_state(Role.SERVER, state, Trigger.RECEIVE_1RTT) is State.ESTABLISHED


def test_who_broke_the_rules_decides_the_error() -> None:
    with pytest.raises(LocalProtocolError):
        next_state(Role.SERVER, State.START, Trigger.CONNECT)
    with pytest.raises(RemoteProtocolError):
        next_state(Role.CLIENT, State.START, Trigger.RECEIVE_HANDSHAKE)


def test_every_state_can_end_and_closed_is_final() -> None:
    for role in Role:
        for state in State:
            if state is State.CLOSED:
                continue
            ends = {next_state(role, state, t) for t in (Trigger.TIMEOUT, Trigger.PEER_CLOSED)}
            assert ends == {State.CLOSED}
        assert not [key for key in TRANSITIONS if key[0] is role and key[1] is State.CLOSED]
