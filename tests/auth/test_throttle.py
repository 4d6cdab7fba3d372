"""The login throttle, driven with a fake clock."""

from __future__ import annotations

import pytest

from jetstream.auth.throttle import LoginThrottle, LoginThrottled, Standing, peer_address
from jetstream.errors import ResourceExhausted

X, Y = "ipv4:192.0.2.10:40000", "ipv4:198.51.100.7:40001"


def fail(throttle: LoginThrottle, user: str, source: str, now: float, times: int = 1) -> None:
    for _ in range(times):
        throttle.begin(user, source, now)  # never reported as success: counts as a failure


def test_five_failures_then_refused_with_retry_after():
    throttle = LoginThrottle()
    fail(throttle, "alice", X, 100.0, times=5)
    with pytest.raises(LoginThrottled) as refused:
        throttle.begin("alice", X, 100.5)
    assert isinstance(refused.value, ResourceExhausted)
    assert refused.value.retry_after == pytest.approx(4.5)
    assert "try again in 5 s" in str(refused.value)


def test_window_frees_later_grows_and_is_capped():
    throttle = LoginThrottle(base_delay=5.0, max_delay=300.0)
    now = 0.0
    fail(throttle, "alice", X, now, times=5)
    windows = []
    for _ in range(10):
        with pytest.raises(LoginThrottled) as refused:
            throttle.begin("alice", X, now)
        windows.append(refused.value.retry_after)
        now += refused.value.retry_after
        fail(throttle, "alice", X, now)  # allowed again once the window is over, and fails
    assert windows[:7] == [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0]
    assert max(windows) == 300.0


def test_refused_attempts_do_not_extend_the_window():
    throttle = LoginThrottle()
    fail(throttle, "alice", X, 0.0, times=5)
    for t in (1.0, 2.0, 3.0, 4.0):
        with pytest.raises(LoginThrottled):
            throttle.begin("alice", X, t)
    throttle.begin("alice", X, 5.0)


def test_success_resets_the_users_counter():
    throttle = LoginThrottle()
    fail(throttle, "alice", X, 0.0, times=4)
    throttle.succeeded(throttle.begin("alice", X, 1.0))
    fail(throttle, "alice", X, 2.0, times=4)
    throttle.begin("alice", X, 2.0)  # a fifth: fine, the count restarted


def test_attacker_cannot_lock_the_user_out_from_elsewhere():
    throttle = LoginThrottle()
    fail(throttle, "alice", X, 0.0, times=5)
    with pytest.raises(LoginThrottled):
        throttle.begin("alice", X, 1.0)
    throttle.succeeded(throttle.begin("alice", Y, 1.0))


def test_one_address_guessing_many_users_is_limited():
    throttle = LoginThrottle(source_limit=20)
    for n in range(20):
        fail(throttle, f"user{n}", X, 0.0)
    with pytest.raises(LoginThrottled):
        throttle.begin("someone-else", X, 0.0)
    throttle.begin("someone-else", Y, 0.0)


def test_logging_in_to_ones_own_account_buys_no_extra_guesses():
    throttle = LoginThrottle(source_limit=20)
    for n in range(19):
        fail(throttle, f"victim{n}", X, float(n))
        throttle.succeeded(throttle.begin("attacker", X, float(n)))
    fail(throttle, "victim-last", X, 30.0)
    with pytest.raises(LoginThrottled):
        throttle.begin("victim-more", X, 30.0)


def test_concurrent_attempts_count_before_their_outcome():
    throttle = LoginThrottle()
    attempts = [throttle.begin("alice", X, 0.0) for _ in range(5)]
    with pytest.raises(LoginThrottled):
        throttle.begin("alice", X, 0.0)
    throttle.succeeded(attempts[0])
    throttle.begin("alice", X, 0.0)


def test_failures_are_forgotten_after_a_quiet_period():
    throttle = LoginThrottle(forget_after=1800.0)
    fail(throttle, "alice", X, 0.0, times=4)
    fail(throttle, "alice", X, 1800.0, times=4)
    throttle.begin("alice", X, 1800.0)


def test_user_names_differing_in_case_share_a_counter():
    throttle = LoginThrottle()
    for name in ("alice", "Alice", "ALICE", "aLiCe", "alicE"):
        fail(throttle, name, X, 0.0)
    with pytest.raises(LoginThrottled):
        throttle.begin("alice", X, 0.0)


def test_memory_is_bounded():
    throttle = LoginThrottle(max_entries=100, source_limit=10**9)
    for n in range(10_000):
        fail(throttle, f"u{n}", f"10.0.{n // 250}.{n % 250}", float(n))
    assert len(throttle) <= 100


def test_stale_entries_are_dropped_first():
    throttle = LoginThrottle(forget_after=1800.0)
    for n in range(50):
        fail(throttle, f"u{n}", f"10.1.0.{n}", 0.0)
    fail(throttle, "late", Y, 5000.0)
    assert len(throttle) == 2  # only "late" and its address are left


def test_ipv6_clients_count_per_64():
    throttle = LoginThrottle(source_limit=20)
    for n in range(20):
        fail(throttle, f"u{n}", f"ipv6:[2001:db8:1:2::{n:x}]:5000", 0.0)
    with pytest.raises(LoginThrottled):
        throttle.begin("u99", "2001:db8:1:2:ffff::1", 0.0)
    throttle.begin("u99", "2001:db8:1:3::1", 0.0)


def test_ipv4_mapped_ipv6_is_the_ipv4_address():
    throttle = LoginThrottle()
    fail(throttle, "alice", "ipv6:[::ffff:192.0.2.10]:1", 0.0, times=5)
    with pytest.raises(LoginThrottled):
        throttle.begin("alice", X, 0.0)


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:192.0.2.1:5678", "192.0.2.1"),
        ("ipv6:[2001:db8::1]:5678", "2001:db8::1"),
        ("ipv6:%5B::1%5D:5678", "::1"),
        ("192.0.2.1", "192.0.2.1"),
        ("unix:/run/jetstream.sock", "unix:/run/jetstream.sock"),
    ],
)
def test_peer_address(peer, address):
    assert peer_address(peer) == address
    assert peer_address(address) == address


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        LoginThrottle(base_delay=10.0, max_delay=5.0)


def test_an_addresss_standing_follows_its_recent_logins():
    throttle = LoginThrottle(forget_after=1800.0)
    first = throttle.begin("alice", X, 0.0)
    assert first.standing is Standing.UNKNOWN
    throttle.succeeded(first)
    assert throttle.begin("bob", Y, 1.0).standing is Standing.UNKNOWN  # another address
    again = throttle.begin("alice", X, 10.0)
    assert again.standing is Standing.TRUSTED
    # `again` never succeeds: a failure from X makes it suspect until forgotten
    assert throttle.begin("alice", X, 11.0).standing is Standing.SUSPECT
    assert throttle.begin("alice", X, 5000.0).standing is Standing.UNKNOWN
