"""Signing in upgrades an outdated password hash, without undoing a concurrent change."""

from __future__ import annotations

import unicodedata
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher as Argon2

from domain import entities as d
from domain.errors import Unauthenticated, ValidationError
from domain.policy import SYSTEM, Policy, Viewer
from domain.ports import Update
from domain.query import Eq
from domain.services import ServiceContext, Services
from domain.services.base import changed
from domain.services.edits import edit
from domain.services.throttle import digest
from store.sqlite import SqliteStore
from tests.helpers import FastHasher


class Upgrading(FastHasher):
    """Hashes with a higher time cost and calls the old cost outdated."""

    def __init__(self) -> None:
        super().__init__()
        self._argon = Argon2(time_cost=2, memory_cost=1024, parallelism=1)

    def needs_rehash(self, password_hash: str) -> bool:
        return ",t=1," in password_hash


async def services_with_ada(store: SqliteStore, hasher: FastHasher | None = None
                            ) -> Services:
    """Services over ``store`` with one driver, ada@example.com ("first password")."""
    services = Services(ServiceContext(store=store, policy=Policy(),
                                       hasher=hasher or FastHasher()))
    await services.accounts.create_user(SYSTEM, email="ada@example.com",
                                        password="first password", name="Ada",
                                        role=d.Role.DRIVER)
    return services


async def checks_held(store: SqliteStore, release: Any, count: int,
                      client: Callable[[int], str]) -> tuple[Services, list[Any]]:
    """``count`` sign-ins (of ``client(i)``) being checked, each held until ``release``
    is set: the services and the sign-ins' futures."""
    import asyncio

    services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher()))

    async def held(password_hash: str, password: str) -> bool:
        await release.wait()
        return False

    services.accounts.password_matches = held  # type: ignore[method-assign]
    flood = [asyncio.ensure_future(services.accounts.authenticate(
        f"u{i}@example.com", "guess", client(i))) for i in range(count)]
    for _ in range(500):  # until all of them are being checked (bounded)
        if services.accounts._pending == count:
            break
        await asyncio.sleep(0.01)
    return services, flood


class CountingHasher(FastHasher):
    """Counts the passwords it checks."""

    def __init__(self) -> None:
        super().__init__()
        self.checked = 0

    def verify(self, password_hash: str, password: str) -> bool:
        self.checked += 1
        return super().verify(password_hash, password)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "sign-in.db"))
    await s.start()
    yield s
    await s.close()


async def user_with_old_hash(store: SqliteStore) -> d.User:
    old = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher()))
    return await old.accounts.create_user(SYSTEM, email="ada@example.com",
                                          password="first password", name="Ada",
                                          role=d.Role.DRIVER)


async def stored(store: SqliteStore, user: d.User) -> d.User:
    found = (await store.get_many(d.User, [user.id]))[0]
    assert found is not None
    return found


async def test_an_outdated_hash_is_upgraded_at_sign_in(store: SqliteStore) -> None:
    user = await user_with_old_hash(store)
    hasher = Upgrading()
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=hasher))
    await services.accounts.authenticate("ada@example.com", "first password")
    upgraded = (await stored(store, user)).password_hash
    assert ",t=2," in upgraded and hasher.verify(upgraded, "first password")


async def test_an_upgrade_at_sign_in_is_no_change_of_the_account(store: SqliteStore
                                                                   ) -> None:
    """QA s25: the rehash was audited as the person's own UPDATE with
    ``password_changed: true`` (the marker of a new password), so every sign-in after a
    hasher upgrade wrote a password change that never happened into the log their
    operators and admins read, and moved the account's ``updatedAt``/``updatedBy``. The
    password is the same: nothing of the account changed, and the log says nothing. An
    edit of the account read before the sign-in (an admin's form open meanwhile) lands
    on its version: the upgrade moved none (review s25: the edit here read the account
    afresh, so it could not fail for that)."""
    user = await user_with_old_hash(store)
    hasher = Upgrading()
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=hasher))
    signed_in = await services.accounts.authenticate("ada@example.com", "first password")
    read_before = edit(user, SYSTEM, name="Ada L")  # guarded on the pre-upgrade version
    await services.accounts.commit(SYSTEM, [(read_before, user)])
    after = await stored(store, user)
    assert after.name == "Ada L"
    assert ",t=2," in after.password_hash and hasher.verify(after.password_hash,
                                                             "first password")
    assert signed_in.password_hash == after.password_hash
    entries = await store.find_all(d.AuditEntry, Eq("entity_id", user.id))
    assert [e.action for e in entries] == [d.AuditAction.CREATE, d.AuditAction.UPDATE]
    assert entries[-1].actor == SYSTEM.actor  # the edit's; none of the sign-in


async def test_an_upgrade_at_sign_in_leaves_the_accounts_stamps(store: SqliteStore
                                                                ) -> None:
    user = await user_with_old_hash(store)
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=Upgrading()))
    await services.accounts.authenticate("ada@example.com", "first password")
    after = await stored(store, user)
    assert ",t=2," in after.password_hash  # upgraded still
    assert (after.updated_at, after.updated_by) == (user.updated_at, user.updated_by)
    entries = await store.find_all(d.AuditEntry, Eq("entity_id", user.id))
    assert [e.action for e in entries] == [d.AuditAction.CREATE]


async def test_the_upgrade_does_not_undo_a_password_changed_meanwhile(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    user = await user_with_old_hash(store)
    hasher = Upgrading()
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=hasher))
    elsewhere = hasher.hash("second password")
    real_hash = hasher.hash

    async def changed_on_another_instance() -> None:
        current = await stored(store, user)
        await store.write([Update(changed(current, SYSTEM, password_hash=elsewhere,
                                          token_epoch=1))], [])

    pending: list[object] = []

    def hash_then_race(password: str) -> str:
        pending.append(changed_on_another_instance())  # lands before the upgrade's write
        return real_hash(password)

    monkeypatch.setattr(hasher, "hash", hash_then_race)
    real_write = store.write

    async def write_after_the_race(*args: object, **kwargs: object) -> None:
        while pending:
            await pending.pop()  # type: ignore[misc]
        await real_write(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "write", write_after_the_race)
    await services.accounts.authenticate("ada@example.com", "first password")
    after = await stored(store, user)
    assert after.password_hash == elsewhere and after.token_epoch == 1


async def test_text_that_is_no_email_is_not_counted(store: SqliteStore) -> None:
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher()))
    from domain.errors import Unauthenticated
    for text in ("x" * 100_000, "not an email"):
        with pytest.raises(Unauthenticated):
            await services.accounts.authenticate(text, "whatever password")
    assert services.accounts.throttle._failures == {}
    with pytest.raises(Unauthenticated):
        await services.accounts.authenticate("nobody@example.com", "whatever password")
    assert list(services.accounts.email_throttle._failures) == [digest("nobody@example.com")]


async def test_password_hashing_leaves_the_event_loop_free(store: SqliteStore) -> None:
    """argon2 takes tens of milliseconds of CPU per sign-in: on worker threads, a few at
    a time, the loop keeps serving chargers and requests meanwhile. Told by order, not by
    the loop's gaps (a bound of 0.18 s; 0.12 s seen on a loaded machine): each check
    holds its thread until the loop has run while it was under way, which a check on
    the loop's own thread would wait for in vain."""
    import asyncio
    import threading

    from tests.helpers import soon

    checking = threading.Event()  # a check is under way
    served = threading.Event()  # the loop ran while it was
    waited: list[bool] = []  # per check: whether the loop ran meanwhile
    threads: set[int] = set()

    class Slow(FastHasher):
        def verify(self, password_hash: str, password: str) -> bool:
            threads.add(threading.get_ident())
            checking.set()
            waited.append(served.wait(5))  # holds its thread, as argon2's C code does
            return super().verify(password_hash, password)

    services = await services_with_ada(store, Slow())

    async def loop_serves() -> None:
        await soon(checking.is_set)
        served.set()

    serving = asyncio.create_task(loop_serves())
    from domain.errors import Unauthenticated
    attempts = [services.accounts.authenticate(f"u{i}@example.com", "wrong password")
                for i in range(6)]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    await serving
    assert all(isinstance(r, Unauthenticated) for r in results)
    assert waited == [True] * len(waited) and waited, waited
    assert threading.get_ident() not in threads  # never on the loop's thread


async def test_guessing_spread_over_many_clients_still_meets_a_limit(store: SqliteStore
                                                                     ) -> None:
    from domain.errors import Unauthenticated
    from domain.services.accounts import EMAIL_LIMIT

    services = await services_with_ada(store)
    for i in range(EMAIL_LIMIT):  # one try each from many addresses: none is locked alone
        with pytest.raises(Unauthenticated) as err:
            await services.accounts.authenticate("ada@example.com", "guess", f"10.0.{i}.1")
        assert err.value.code == "UNAUTHENTICATED"
    with pytest.raises(Unauthenticated) as err:
        await services.accounts.authenticate("ada@example.com", "first password", "10.9.9.9")
    assert err.value.code == "TOO_MANY_ATTEMPTS"


async def test_cancelled_sign_ins_cannot_run_more_hashing_at_once(store: SqliteStore) -> None:
    """A client that starts sign-ins and cancels them at once (a websocket ``complete``)
    leaves its hashing running, but never more than the pool's threads at a time."""
    import asyncio
    import threading
    import time

    from domain.services.base import HASHING_THREADS

    running, peak, guard = [0], [0], threading.Lock()

    class Counting(FastHasher):
        def verify(self, password_hash: str, password: str) -> bool:
            with guard:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with guard:
                running[0] -= 1
            return False

    services = Services(ServiceContext(store=store, policy=Policy(), hasher=Counting()))
    for _ in range(3):
        tasks = [asyncio.ensure_future(
            services.accounts.authenticate(f"u{i}@example.com", "guess")) for i in range(8)]
        await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.3)  # what was still running finishes
    assert 1 <= peak[0] <= HASHING_THREADS


async def test_guesses_sent_all_at_once_meet_the_same_limit(store: SqliteStore) -> None:
    """Sixty sign-ins at once from one client, the right password last: only the first
    few are checked, the rest are refused before hashing, and the right one among them
    finds the account locked."""
    import asyncio

    from domain.errors import Unauthenticated

    hasher = CountingHasher()
    services = await services_with_ada(store, hasher)
    hasher.checked = 0
    guesses = [f"guess {i}" for i in range(59)] + ["first password"]
    outcomes = await asyncio.gather(
        *(services.accounts.authenticate("ada@example.com", g, "10.0.0.1") for g in guesses),
        return_exceptions=True)
    codes = [o.code if isinstance(o, Unauthenticated) else "SIGNED_IN" for o in outcomes]
    limit = services.accounts.throttle.limit
    assert hasher.checked == limit and codes.count("UNAUTHENTICATED") == limit
    assert codes[-1] == "TOO_MANY_ATTEMPTS"


async def test_a_right_password_counted_before_its_check_is_forgiven(store: SqliteStore
                                                                     ) -> None:
    from domain.errors import Unauthenticated

    services = await services_with_ada(store)
    limit = services.accounts.throttle.limit
    for _ in range(limit - 1):
        with pytest.raises(Unauthenticated):
            await services.accounts.authenticate("ada@example.com", "guess", "10.0.0.1")
    # The last try before the lock is the right one: it signs in, and is not held against
    # the email for others.
    await services.accounts.authenticate("ada@example.com", "first password", "10.0.0.1")
    assert services.accounts.email_throttle.locked_for("ada@example.com") is None
    await services.accounts.authenticate("ada@example.com", "first password", "10.0.0.2")


async def test_right_sign_ins_all_at_once_are_told_to_wait_a_moment_not_15_min(
        store: SqliteStore) -> None:
    """Twenty right sign-ins at once (a client retrying in parallel): those over the limit
    are refused while the first are checked, with no claim of failures; once those are
    through, the account is not locked."""
    import asyncio

    from domain.errors import Unauthenticated

    services = await services_with_ada(store)
    outcomes = await asyncio.gather(
        *(services.accounts.authenticate("ada@example.com", "first password", "10.0.0.1")
          for _ in range(20)), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, Unauthenticated)]
    assert refused and all(o.code == "TOO_MANY_ATTEMPTS" for o in refused)
    assert all("a moment" in o.message and "failed" not in o.message for o in refused)
    await services.accounts.authenticate("ada@example.com", "first password", "10.0.0.1")


async def test_text_that_is_no_email_is_refused_without_checking_a_password(
        store: SqliteStore) -> None:
    """No account can have it: a flood of such sign-ins used to keep the hashing threads
    busy with dummy checks."""
    from domain.errors import Unauthenticated

    hasher = CountingHasher()
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=hasher))
    with pytest.raises(Unauthenticated) as err:
        await services.accounts.authenticate("not-an-email", "y", "10.0.0.1")
    assert (err.value.code, hasher.checked) == ("UNAUTHENTICATED", 0)


async def test_one_client_guessing_across_many_emails_meets_a_limit(store: SqliteStore
                                                                    ) -> None:
    from domain.errors import Unauthenticated
    from domain.services.accounts import CLIENT_LIMIT

    services = await services_with_ada(store)
    for i in range(CLIENT_LIMIT):  # a fresh email each time: no per-email count grows
        with pytest.raises(Unauthenticated):
            await services.accounts.authenticate(f"u{i}@example.com", "guess", "10.0.0.1")
    with pytest.raises(Unauthenticated) as err:
        await services.accounts.authenticate("ada@example.com", "first password", "10.0.0.1")
    assert err.value.code == "TOO_MANY_ATTEMPTS"
    # Another client is not held to it.
    await services.accounts.authenticate("ada@example.com", "first password", "10.0.0.2")


async def test_sign_ins_beyond_those_being_checked_are_told_to_wait(store: SqliteStore
                                                                    ) -> None:
    """A flood from many clients queues no more than ``MAX_PENDING_SIGN_INS`` checks:
    the rest are refused at once rather than waiting behind it for seconds."""
    import asyncio

    from domain.errors import Unauthenticated
    from domain.services.accounts import MAX_PENDING_SIGN_INS

    release = asyncio.Event()
    services, flood = await checks_held(store, release, MAX_PENDING_SIGN_INS,
                                        lambda i: f"10.0.{i}.1")
    with pytest.raises(Unauthenticated) as err:  # bounded: queued, it would wait for ever
        await asyncio.wait_for(
            services.accounts.authenticate("late@example.com", "guess", "10.9.9.9"), 5)
    assert err.value.code == "TOO_MANY_ATTEMPTS" and "a moment" in err.value.message
    release.set()
    await asyncio.gather(*flood, return_exceptions=True)
    with pytest.raises(Unauthenticated) as err:  # checked again once they are through
        await services.accounts.authenticate("late@example.com", "guess", "10.9.9.9")
    assert err.value.code == "UNAUTHENTICATED"


async def test_chargers_connect_while_sign_ins_fill_the_hashing_threads(
        store: SqliteStore) -> None:
    import asyncio
    import threading

    from domain.services import ConnectorSpec
    from domain.services.base import HASHING_THREADS

    services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher()))
    station, _ = await services.stations.create_station(
        SYSTEM, cp_id="CP-1", name="CP-1", password="station-secret-1",
        connectors=[ConnectorSpec(1)])
    busy = threading.Event()
    loop = asyncio.get_running_loop()
    hogs = [loop.run_in_executor(services.accounts.ctx.hashing, busy.wait, 10)
            for _ in range(HASHING_THREADS)]
    try:  # every sign-in thread is taken: a charger's check still runs
        assert await asyncio.wait_for(
            services.charging.station_password_ok(station, "station-secret-1"), 5)
    finally:
        busy.set()
        await asyncio.gather(*hogs)


def test_sign_in_limits_count_an_ipv6_host_by_its_64() -> None:
    from domain.services.accounts import client_key

    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::7") \
        == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_key(None) is None and client_key("testclient") == "testclient"


async def test_a_guesser_rotating_addresses_in_one_64_is_one_client(store: SqliteStore
                                                                    ) -> None:
    from domain.errors import Unauthenticated

    services = await services_with_ada(store)
    for i in range(services.accounts.throttle.limit):
        with pytest.raises(Unauthenticated):
            await services.accounts.authenticate("ada@example.com", "guess",
                                                 f"2001:db8:1:2::{i + 1:x}")
    with pytest.raises(Unauthenticated) as err:
        await services.accounts.authenticate("ada@example.com", "first password",
                                             "2001:db8:1:2::ffff")
    assert err.value.code == "TOO_MANY_ATTEMPTS"
    await services.accounts.authenticate("ada@example.com", "first password", "2001:db8:9::1")


async def test_one_client_takes_at_most_its_share_of_the_sign_ins_being_checked(
        store: SqliteStore) -> None:
    """One address flooding with random emails used to take every slot until its
    failures locked it: everyone else was told to wait meanwhile."""
    import asyncio

    from domain.errors import Unauthenticated
    from domain.services.accounts import MAX_PENDING_PER_CLIENT

    release = asyncio.Event()
    services, flood = await checks_held(store, release, MAX_PENDING_PER_CLIENT,
                                        lambda i: "10.7.7.7")
    with pytest.raises(Unauthenticated) as err:  # the same client, once more
        await asyncio.wait_for(
            services.accounts.authenticate("more@example.com", "guess", "10.7.7.7"), 5)
    assert err.value.code == "TOO_MANY_ATTEMPTS" and "a moment" in err.value.message
    other = asyncio.ensure_future(
        services.accounts.authenticate("ada@example.com", "guess", "10.8.8.8"))
    await asyncio.sleep(0.05)
    assert not other.done()  # another client's sign-in is being checked, not refused
    release.set()
    outcomes = await asyncio.gather(*flood, other, return_exceptions=True)
    assert all(isinstance(o, Unauthenticated) and o.code == "UNAUTHENTICATED"
               for o in outcomes)


async def test_an_address_stored_before_the_normalization_of_0_3_still_signs_in(
        store: SqliteStore) -> None:
    """Review s16: accounts whose stored email 0.3's rule rewrites (a trailing dot, a
    full-width letter, a quoted local part) could not sign in after the upgrade."""
    services = await services_with_ada(store)
    accounts = services.accounts
    ada = await accounts.authenticate("ada@example.com", "first password")
    for old in ("bob@example.com.", "\uff42ob@example.com", '"bob"@example.com'):
        stored_before = await accounts.create_user(
            SYSTEM, email=f"tmp-{len(old)}@example.com", password="first password",
            name="Bob", role=d.Role.DRIVER)
        await store.write([Update(changed(stored_before, SYSTEM, email=old))], [])
        assert (await accounts.authenticate(old, "first password")).id == stored_before.id
        await store.write([Update(changed(stored_before, SYSTEM, email=f"gone-{len(old)}"
                                                                      "@example.com"))], [])
    # The address as normalized now still wins: a look-alike stored before cannot take it.
    look_alike = await accounts.create_user(SYSTEM, email="x@example.com",
                                            password="first password", name="Eve",
                                            role=d.Role.DRIVER)
    await store.write([Update(changed(look_alike, SYSTEM, email="ada@example.com."))], [])
    assert (await accounts.authenticate("ada@example.com.", "first password")).id == ada.id


async def test_a_password_signs_in_however_its_letters_were_typed(store: SqliteStore
                                                                   ) -> None:
    """QA s25: emails were compared Unicode-normalized, passwords as bytes: "Grüße aus
    Köln" set on one device did not sign in where the keyboard (or a paste) gave the
    "ü" as "u" and a combining diaeresis, nor with full-width letters. Account
    passwords are hashed and checked in their NFKC form (NIST SP 800-63B); a hash made
    before, of the text as typed then, still takes that text."""
    composed = unicodedata.normalize("NFC", "Grüße aus Köln")
    decomposed = unicodedata.normalize("NFD", composed)
    services = Services(ServiceContext(store=store, policy=Policy(), hasher=FastHasher()))
    accounts = services.accounts
    ada = await accounts.create_user(SYSTEM, email="ada@example.com", password=composed,
                                     name="Ada", role=d.Role.DRIVER)
    for typed in (composed, decomposed, "Ｇｒüße aus Köln"):
        assert (await accounts.authenticate("ada@example.com", typed)).id == ada.id
    # Changing it to the same password typed the other way changes nothing.
    with pytest.raises(ValidationError) as same:
        await accounts.change_password(Viewer.of(ada), current_password=decomposed,
                                       new_password=composed)
    assert (same.value.field, same.value.code) == ("newPassword", "UNCHANGED")
    # A hash of the decomposed text, made before passwords were normalized.
    before = FastHasher().hash(decomposed)
    await store.write([Update(changed(await stored(store, ada), SYSTEM,
                                      password_hash=before))], [])
    assert (await accounts.authenticate("ada@example.com", decomposed)).id == ada.id
    with pytest.raises(Unauthenticated):
        await accounts.authenticate("ada@example.com", "Gruße aus Köln")
