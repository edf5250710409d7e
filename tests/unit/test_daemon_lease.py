"""On a host so loaded that claim renewals come late, the daemon renews with a longer lease (bounded),
and goes back to the base lease once renewals come on time."""

from __future__ import annotations

from producer.daemon import MAX_LEASE_FACTOR, ProducerDaemon


def test_late_renewals_stretch_the_lease_within_a_bound():
    d = ProducerDaemon("redis://127.0.0.1:1/0", lease_s=3.0)  # never connects
    assert d.renew_px(0.75) == 3000, "on time: the base lease"
    assert d.renew_px(4.0) == 12000, "a 4 s stall: three times that"
    assert d.renew_px(100.0) == 3000 * MAX_LEASE_FACTOR, "bounded"
    for _ in range(60):
        px = d.renew_px(0.75)
    assert px == 3000, "back to the base lease once renewals come on time"
    d.client.close()
