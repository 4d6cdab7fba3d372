"""Credit goes back to the flow that carried the bytes, oldest first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jetstream.transfers.credit import CreditLedger


def test_repayment_follows_arrival_order_across_flows() -> None:
    ledger: CreditLedger[str] = CreditLedger()
    ledger.received("a", 100)
    ledger.received("a", 50)  # merged with its neighbour
    ledger.received("b", 70)
    ledger.received("a", 10)
    assert list(ledger.repay(120)) == [("a", 120)]
    assert list(ledger.repay(60)) == [("a", 30), ("b", 30)]
    assert list(ledger.repay(1000)) == [("b", 40), ("a", 10)]
    assert list(ledger.repay(5)) == [], "nothing is repaid that was not owed"


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 5000)), max_size=60),
       st.lists(st.integers(1, 7000), max_size=60))
def test_every_flow_is_repaid_what_it_carried_and_no_more(arrivals, disposals) -> None:
    ledger: CreditLedger[str] = CreditLedger()
    carried = dict.fromkeys("abc", 0)
    repaid = dict.fromkeys("abc", 0)
    for flow, nbytes in arrivals:
        ledger.received(flow, nbytes)
        carried[flow] += nbytes
    total = sum(carried.values())
    disposed = 0
    for nbytes in disposals:
        nbytes = min(nbytes, total - disposed)
        disposed += nbytes
        for flow, amount in ledger.repay(nbytes):
            assert amount > 0
            repaid[flow] += amount
    assert sum(repaid.values()) == disposed
    assert all(repaid[f] <= carried[f] for f in carried)
    for flow, amount in ledger.repay(total - disposed):
        repaid[flow] += amount
    assert repaid == carried
