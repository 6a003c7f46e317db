from datetime import UTC, datetime, timedelta

from domain.services.throttle import MAX_TRACKED, SignInThrottle


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_locks_after_the_limit_within_the_window_and_frees_after_the_lockout() -> None:
    clock = Clock()
    throttle = SignInThrottle(clock, limit=3, window=timedelta(minutes=10),
                              lockout=timedelta(minutes=5))
    for _ in range(2):
        throttle.failed("a@x.io")
    assert throttle.locked_for("a@x.io") is None
    clock.now += timedelta(minutes=11)  # the first two fell out of the window
    throttle.failed("a@x.io")
    assert throttle.locked_for("a@x.io") is None
    throttle.failed("a@x.io")
    throttle.failed("a@x.io")
    assert throttle.locked_for("a@x.io") == timedelta(minutes=5)
    assert throttle.locked_for("b@x.io") is None  # per email
    clock.now += timedelta(minutes=5)
    assert throttle.locked_for("a@x.io") is None
    throttle.failed("a@x.io")  # a fresh start: one failure is not a lock
    assert throttle.locked_for("a@x.io") is None


def test_success_clears_and_the_table_is_bounded() -> None:
    throttle = SignInThrottle(Clock(), limit=2)
    throttle.failed("a@x.io")
    throttle.succeeded("a@x.io")
    throttle.failed("a@x.io")
    assert throttle.locked_for("a@x.io") is None
    for i in range(MAX_TRACKED + 10):
        throttle.failed(f"{i}@x.io")
    assert len(throttle._failures) == MAX_TRACKED


def test_lockouts_back_off_up_to_the_maximum_and_quiet_forgets_them() -> None:
    clock = Clock()
    throttle = SignInThrottle(clock, limit=2, window=timedelta(minutes=10),
                              lockout=timedelta(minutes=1), max_lockout=timedelta(minutes=5))

    def lock() -> timedelta | None:
        first, second = throttle.failed("cp"), throttle.failed("cp")
        assert (first, second) == (False, True)  # the second started a lockout
        return throttle.locked_for("cp")

    for minutes in (1, 2, 4, 5, 5):  # doubling, then the maximum
        assert lock() == timedelta(minutes=minutes)
        assert not throttle.failed("cp")  # during a lockout: no second start
        assert throttle.locked_for("cp") == timedelta(minutes=minutes)  # nor a longer one
        clock.now += timedelta(minutes=minutes)
        assert throttle.locked_for("cp") is None
    clock.now += timedelta(minutes=5)  # quiet for the maximum after its last lockout
    assert lock() == timedelta(minutes=1)
    throttle.succeeded("cp")  # a success forgets them at once
    clock.now += timedelta(minutes=1)
    assert lock() == timedelta(minutes=1)


def test_a_served_lockout_counts_afresh_also_where_it_was_not_asked() -> None:
    """Failures another instance shares after a lockout ended start a new count there
    too, as on the instance that asked ``locked_for``: the two stay alike."""
    clock = Clock()
    throttle = SignInThrottle(clock, limit=2, lockout=timedelta(minutes=1),
                              max_lockout=timedelta(minutes=4))
    throttle.failed("cp")
    throttle.failed("cp")
    clock.now += timedelta(minutes=1)
    assert not throttle.failed("cp")  # one of a fresh count, not the third of the old
    assert throttle.locked_for("cp") is None
