"""Databases that ran an earlier text of a migration changed after release are repaired
before the newer migrations run (``store.sqlite.reconcile``; QA s18, upgrade): they had
its version, lacked its columns, and chargers' starts failed with "no such column"."""

from __future__ import annotations

import logging
import sqlite3
from datetime import timedelta
from pathlib import Path

import aiosqlite
import pytest

from domain import entities as d
from domain.query import ALL
from store.sqlite import SqliteStore
from store.sqlite.migrations import (
    MIGRATION_FUNCTIONS,
    MIGRATIONS,
    Migration,
    apply_migrations,
    split_statements,
)
from store.sqlite.reconcile import SOC_FROM_SAMPLES, reference, repairs
from tests.support.schema_at import roll_back

TEXTS = dict(MIGRATIONS)


def earlier(version: int, old: str, new: str) -> list[Migration]:
    """Today's migrations with version ``version`` as it shipped before: ``new`` of
    today's text was ``old``."""
    assert new in TEXTS[version]
    return [(v, TEXTS[v].replace(new, old) if v == version else text)
            for v, text in MIGRATIONS]


async def migrate(path: Path, migrations: list[Migration]) -> list[int]:
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        return await apply_migrations(conn, migrations)


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def columns(path: Path, table: str) -> set[str]:
    return {str(r[1]) for r in rows(path, f'PRAGMA table_info("{table}")')}


@pytest.mark.parametrize("version", [v for v, _ in MIGRATIONS])
def test_every_version_as_migrated_today_needs_no_repair(version: int) -> None:
    """The comparison takes nothing for a difference that is not one (spacing, quotes,
    the order tables were made in), at every version a database may be at."""
    prefix = [m for m in MIGRATIONS if m[0] <= version]
    made = reference(prefix, MIGRATION_FUNCTIONS, split_statements)
    again = reference(prefix, MIGRATION_FUNCTIONS, split_statements)
    assert repairs(made, again) == []


async def test_an_earlier_local_list_text_gets_card_ids_and_its_index(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Builds of 0.3.0 made ``local_list_entry`` without ``card_id``: blocking a card was
    an internal error and every charger boot logged one."""
    path = tmp_path / "old.db"
    shipped = earlier(33, '''    "wanted" TEXT
) STRICT;''', '''    "wanted" TEXT,
    "card_id" TEXT
) STRICT;''')
    shipped = [(v, t.replace('CREATE INDEX "local_list_entry_card_id_idx" ON "local_list_entry" '
                             '("card_id");', 'CREATE INDEX "local_list_entry_tag_idx" ON '
                             '"local_list_entry" ("tag");')) for v, t in shipped
               if v < 64]  # 0.3.0 was long before 64, which reads card_id
    await migrate(path, shipped)
    assert "card_id" not in columns(path, "local_list_entry")
    with sqlite3.connect(path) as conn:  # a card, and an entry sent after it was made
        conn.execute("""INSERT INTO id_tag (id, created_at, updated_at, created_by,
            updated_by, tag, status, user_id) VALUES ('c1', 10, 10, 'a', 'a', 'TAG1',
            'Accepted', 'u1')""")
        # e1 was sent to CP-1 after the card was made, e0 to CP-0 before it existed.
        for entry, station, at in (("e1", "s1", 20), ("e0", "s0", 5)):
            conn.execute("""INSERT INTO local_list_entry (id, created_at, updated_at,
                created_by, updated_by, station_id, cp_id, tag, status) VALUES
                (?, ?, ?, 'a', 'a', ?, 'CP', 'TAG1', 'Accepted')""", (entry, at, at, station))
    with caplog.at_level(logging.WARNING, "chargegraph.store"):
        assert await migrate(path, list(MIGRATIONS)) == [v for v, _ in MIGRATIONS if v >= 64]
    assert "card_id" in columns(path, "local_list_entry")
    assert {r[0]: r[1] for r in rows(path, "SELECT id, card_id FROM local_list_entry")} == {
        "e1": "c1", "e0": None}
    # 64 then took each entry's holder from its card (QA s26).
    assert {r[0]: r[1] for r in rows(
        path, "SELECT id, holder_id FROM local_list_entry")} == {"e1": "u1", "e0": None}
    names = {r[0] for r in rows(path, "SELECT name FROM sqlite_master WHERE type='index'")}
    # The earlier text's index is dropped: a known leftover (an administrator's own is
    # left: below).
    assert "local_list_entry_card_id_idx" in names and "local_list_entry_tag_idx" not in names
    assert "differed from its version's" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "chargegraph.store"):
        await migrate(path, list(MIGRATIONS))  # repaired once: the next start reads only
    assert "differed" not in caplog.text


async def test_an_earlier_session_text_gets_its_columns_before_the_newer_migrations(
        tmp_path: Path) -> None:
    """A database at version 21 from a build whose 21 added no State of Charge columns,
    and one at 27 whose 27 added no start flags: each is repaired at its version, then
    migrated on; the store then reads and writes sessions."""
    soc = ('ALTER TABLE "session" ADD COLUMN "soc_percent" REAL;\n'
           'ALTER TABLE "session" ADD COLUMN "soc_at" INTEGER;\n'
           f"{SOC_FROM_SAMPLES};\n")
    old21 = tmp_path / "at21.db"
    await migrate(old21, [m for m in earlier(21, "", soc) if m[0] <= 21])
    assert "soc_percent" not in columns(old21, "session")
    flags = '''ALTER TABLE "session" ADD COLUMN "start_clock_behind" INTEGER NOT NULL DEFAULT 0;
ALTER TABLE "session" ADD COLUMN "start_refused" TEXT;
'''
    old27 = tmp_path / "at27.db"
    await migrate(old27, [m for m in earlier(27, "", flags) if m[0] <= 27])
    assert "start_refused" not in columns(old27, "session")
    for path in (old21, old27):
        store = SqliteStore(str(path))
        await store.start()
        try:
            assert await store.find_all(d.Session, ALL) == []
        finally:
            await store.close()
        assert {"soc_percent", "soc_at", "start_clock_behind", "start_refused"} \
            <= columns(path, "session")
        assert rows(path, 'SELECT MAX("version") FROM "schema_version"') == [
            (MIGRATIONS[-1][0],)]


async def test_a_share_without_its_bound_is_bound_to_what_it_was_given(
        tmp_path: Path) -> None:
    path = tmp_path / "at30.db"
    await migrate(path, [m for m in earlier(30, "", '    "bound_kw" REAL NOT NULL,\n')
                         if m[0] <= 30])
    with sqlite3.connect(path) as conn:
        conn.execute("""INSERT INTO site_allocation (id, created_at, updated_at, created_by,
            updated_by, site_id, company_id, session_id, station_id, cp_id, connector_id,
            transaction_id, power_kw, unit) VALUES ('s1', 1, 1, 'a', 'a', 'site', 'co',
            's1', 'st', 'CP-1', 1, 7, 11.0, 'W')""")
    await migrate(path, list(MIGRATIONS))
    assert rows(path, "SELECT bound_kw FROM site_allocation") == [(11.0,)]


def test_a_column_that_cannot_be_added_is_a_clear_refusal() -> None:
    wanted = reference([(1, 'CREATE TABLE "t" ("a" TEXT, "b" TEXT NOT NULL);')],
                       MIGRATION_FUNCTIONS, split_statements)
    found = reference([(1, 'CREATE TABLE "t" ("a" TEXT);')], MIGRATION_FUNCTIONS,
                      split_statements)
    with pytest.raises(sqlite3.DatabaseError, match=r"t\.b"):
        repairs(found, wanted)


async def test_version_40_makes_right_the_data_earlier_texts_left(tmp_path: Path) -> None:
    """What earlier texts of 8, 16 and 21 wrote otherwise: a blocked card without its
    blocker, a company station's books also its owner's, a State of Charge beyond
    0..100; rows already right are left as they are."""
    from tests.contract.factories import (
        T0,
        id_tag,
        meter_sample,
        payment,
        put,
        refund,
        session,
        station,
        user,
    )

    path = tmp_path / "at39.db"
    owner, driver = user(), user()
    ours = station(company_id="c" * 24, owner_id=owner.id)
    own = station(owner_id=owner.id)  # of no company: its owner's books are right
    glitched, fine = session(ours, 1, company_id=ours.company_id, station_owner_id=owner.id,
                             soc_percent=150.0), session(own, 1, station_owner_id=owner.id,
                                                         soc_percent=40.0)
    # 90 from a sample of one phase, the newest: an in-range value the rule leaves out.
    phased = session(own, 2, station_owner_id=owner.id, soc_percent=90.0,
                     soc_at=T0 + timedelta(minutes=5))
    cards = [id_tag(driver, tag="LOST", status=d.IdTagStatus.BLOCKED, updated_by="op"),
             id_tag(driver, tag="MINE", status=d.IdTagStatus.BLOCKED, blocked_by=driver.id)]
    paid = payment(glitched, company_id=ours.company_id, station_owner_id=owner.id)
    store = SqliteStore(str(path))
    await store.start()
    await put(store, owner, driver, ours, own, glitched, fine, *cards, paid,
              refund(glitched, paid.id, company_id=ours.company_id,
                     station_owner_id=owner.id),
              meter_sample(ours, glitched, measurand="SoC", value=80.0, unit="Percent"),
              phased,
              meter_sample(own, phased, measurand="SoC", value=40.0, unit="Percent",
                           connector_id=2),
              meter_sample(own, phased, measurand="SoC", value=90.0, unit="Percent",
                           connector_id=2, phase="L1", at=T0 + timedelta(minutes=5)))
    await store.close()
    roll_back(path, 39)  # the rows as a database at 39 holds them
    assert (await migrate(path, list(MIGRATIONS)))[0] == 40
    assert dict(rows(path, "SELECT tag, blocked_by FROM id_tag")) == {  # type: ignore[arg-type]
        "LOST": "op", "MINE": driver.id}
    assert dict(rows(path, "SELECT id, station_owner_id FROM session")) == {  # type: ignore[arg-type]
        glitched.id: None, fine.id: owner.id, phased.id: owner.id}
    assert rows(path, "SELECT station_owner_id FROM payment") == [(None,)]
    assert rows(path, "SELECT station_owner_id FROM refund") == [(None,)]
    assert dict(rows(path, "SELECT id, soc_percent FROM session")) == {  # type: ignore[arg-type]
        glitched.id: 80.0, fine.id: 40.0, phased.id: 40.0}


async def test_version_66_records_the_sessions_closed_without_their_stop(
        tmp_path: Path) -> None:
    """Before 66 a close without a stop was read from a null meterStop and the reason
    Other, which a charger's own stop of -1 with reason Other also left (review r26: its
    resend was taken for a correction). 66 flags the closes without a stop; the stop of
    -1 is told apart by the IMPLAUSIBLE_STOP it always set."""
    from tests.contract.factories import T0, put, session, station

    path = tmp_path / "at64.db"
    where = station()
    done = {"state": d.SessionState.COMPLETED, "end_time": T0 + timedelta(hours=1),
            "stop_reason": "Other"}
    made = {"lost": session(where, 1, **done),
            "minus_one": session(where, 2, **done,
                                 meter_anomaly=d.MeterAnomaly.IMPLAUSIBLE_STOP),
            "stopped": session(where, 3, **{**done, "stop_reason": "Local"},
                               meter_stop_wh=500),
            "open": session(where, 4)}
    store = SqliteStore(str(path))
    await store.start()
    await put(store, where, *made.values())
    await store.close()
    roll_back(path, 64)  # the rows as a database at 64 holds them
    assert 66 in await migrate(path, list(MIGRATIONS))
    flags = {r[0]: r[1] for r in rows(path, "SELECT id, closed_without_stop FROM session")}
    assert {name: flags[s.id] for name, s in made.items()} == {
        "lost": 1, "minus_one": 0, "stopped": 0, "open": 0}


def test_an_index_otherwise_defined_is_made_again_and_one_of_an_administrator_is_left(
        ) -> None:
    """Compared as written but for spacing and quotes: a literal's case is a difference
    ('Blocked' is not 'BLOCKED')."""
    today = [(1, """CREATE TABLE "t" ("a" TEXT, "s" TEXT);
CREATE INDEX "t_blocked_idx" ON "t" ("a") WHERE "s" = 'Blocked';""")]
    earlier = [(1, """CREATE TABLE "t" ("a" TEXT, "s" TEXT);
CREATE INDEX "t_blocked_idx" ON "t" ("a") WHERE "s" = 'BLOCKED';
CREATE INDEX "mine" ON "t" ("s");""")]
    wanted = reference(today, MIGRATION_FUNCTIONS, split_statements)
    found = reference(earlier, MIGRATION_FUNCTIONS, split_statements)
    assert repairs(found, wanted) == [
        'DROP INDEX "t_blocked_idx"',
        """CREATE INDEX "t_blocked_idx" ON "t" ("a") WHERE "s" = 'Blocked'"""]
    spaced = [(1, today[0][1].replace('ON "t" ("a")', 'ON t  (a)'))]
    assert repairs(reference(spaced, MIGRATION_FUNCTIONS, split_statements), wanted) == []


def test_an_index_an_earlier_text_made_is_dropped_wherever_found() -> None:
    """One a later migration removed on purpose (every MeterValues paid for it) stayed
    once reconcile left the indexes it does not make (review s18)."""
    wanted = reference(MIGRATIONS, MIGRATION_FUNCTIONS, split_statements)
    extra = ('CREATE INDEX "meter_sample_session_measurand_at_idx" ON "meter_sample" '
             '("session_id", "measurand", "at", "id");\n'
             'CREATE INDEX "reports_idx" ON "session" ("cost_minor");')  # an admin's
    found = reference([*MIGRATIONS, (999, extra)], MIGRATION_FUNCTIONS, split_statements)
    assert repairs(found, wanted) == ['DROP INDEX "meter_sample_session_measurand_at_idx"']
