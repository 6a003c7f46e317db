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
