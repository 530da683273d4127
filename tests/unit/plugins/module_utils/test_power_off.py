"""Nova's shutdown policy, with an injected clock: no test sleeps for real."""

import pytest

from ansible_collections.hypervisor.resize.plugins.module_utils import connection
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import WaitTimeout


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class FakeDomain:
    """Goes off `off_after` seconds after the first ACPI request (None: ignores ACPI)."""

    def __init__(self, clock, off_after):
        self.clock, self.off_after = clock, off_after
        self.calls = []
        self.first_request = None
        self.destroyed = False

    def isActive(self):
        if self.destroyed:
            return False
        return not (self.off_after is not None and self.first_request is not None
                    and self.clock() - self.first_request >= self.off_after)

    def shutdown(self):
        self.calls.append(("shutdown", self.clock()))
        if self.first_request is None:
            self.first_request = self.clock()

    def destroy(self):
        self.calls.append(("destroy", self.clock()))
        self.destroyed = True

    def name(self):
        return "web01"


def test_graceful_when_the_guest_obeys():
    clock = Clock()
    dom = FakeDomain(clock, off_after=3)
    out = connection.power_off(dom, timeout=60, retry_interval=10, clock=clock, sleep=clock.sleep)
    assert out == {"method": "graceful", "seconds": 3.0}
    assert dom.calls == [("shutdown", 0.0)]


def test_resends_every_retry_interval_then_hard_stop_at_timeout():
    clock = Clock()
    dom = FakeDomain(clock, off_after=None)
    out = connection.power_off(dom, timeout=60, retry_interval=10, clock=clock, sleep=clock.sleep)
    assert out["method"] == "hard"
    requests = [t for c, t in dom.calls if c == "shutdown"]
    assert requests == pytest.approx([0.0, 10.0, 20.0, 30.0, 40.0, 50.0], abs=1e-6)
    assert dom.calls[-1][0] == "destroy" and dom.calls[-1][1] == pytest.approx(60.0, abs=1e-6)


def test_a_guest_that_goes_off_is_noticed_within_a_fifth_of_a_second():
    clock = Clock()
    dom = FakeDomain(clock, off_after=1.05)
    out = connection.power_off(dom, timeout=60, retry_interval=10, clock=clock, sleep=clock.sleep)
    assert out["method"] == "graceful" and 1.05 <= out["seconds"] <= 1.25


def test_obeys_a_later_request():
    clock = Clock()
    dom = FakeDomain(clock, off_after=15)
    out = connection.power_off(dom, timeout=60, retry_interval=10, clock=clock, sleep=clock.sleep)
    assert out["method"] == "graceful" and not dom.destroyed


def test_already_off_is_not_touched():
    clock = Clock()
    dom = FakeDomain(clock, off_after=0)
    dom.destroyed = True
    assert connection.power_off(dom, clock=clock, sleep=clock.sleep)["method"] == "none"
    assert dom.calls == []


def test_wait_until_times_out_with_what_it_waited_for():
    clock = Clock()
    with pytest.raises(WaitTimeout, match="timed out after 5s waiting for the moon") as err:
        connection.wait_until(lambda: False, 5, 1, "the moon", clock=clock, sleep=clock.sleep)
    assert err.value.details["waited_seconds"] == 5.0
