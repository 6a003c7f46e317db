"""An erasure leaves nothing of the person in the store (QA s24): after the logical
erasure, SQLite's ``-wal`` file still held old page images of the person's rows (name,
email, plates) until the service stopped, for a file copy or a volume snapshot to pick
up. The files are read as bytes, as such a copy would be. MongoDB's undo journal holds
before-images too, while a batch is in flight."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from domain.entities import AuditAction, Company, Role
from domain.policy import Policy, Viewer
from domain.query import Eq
from domain.services.accounts import AccountService
from domain.services.base import ServiceContext
from domain.services.erasure import Erasure
from domain.services.refresh_tokens import RefreshTokenService
from store.mongo import MongoStore
from store.mongo.journal import JOURNAL, JOURNAL_PARTS
from store.sqlite import SqliteStore
from store.sqlite import writer as writer_module
from tests.contract.factories import audit, company, put, user, vehicle
from tests.helpers import FastHasher
from tests.support.mongomock_async import async_mongomock_database

#: What names the person, as stored (the name and plate keys too).
PERSONAL = (b"Lena Example", b"lena example", b"lena@example.com", b"B-LE 123", b"BLE123")


@pytest.fixture
async def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> AsyncIterator[SqliteStore]:
    """A store on a file, its connections opened as by an SQLite built without
    SECURE_DELETE (this one has it on by default, which made the file clean by luck)."""
    connect: Callable[..., sqlite3.Connection] = sqlite3.connect

    def insecure(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.execute("PRAGMA secure_delete = OFF")
        return conn

    monkeypatch.setattr(sqlite3, "connect", insecure)
    s = SqliteStore(str(tmp_path / "erasure.db"))
    await s.start()
    try:
        yield s
    finally:
        await s.close()


def left_in_files(path: str) -> dict[str, list[bytes]]:
    """The personal values found in the database's files, by file."""
    found: dict[str, list[bytes]] = {}
    for suffix in ("", "-wal", "-shm"):
        try:
            data = Path(path + suffix).read_bytes()
        except FileNotFoundError:
            continue
        hits = [value for value in PERSONAL if value in data]
        if hits:
            found[suffix or "db"] = hits
    return found


async def a_person_to_erase(store: SqliteStore | MongoStore) -> tuple[Erasure, str]:
    """A person with a car, renamed once (audit images of both names), and the erasure
    service; every write of it still in the WAL (no checkpoint yet)."""
    person = user(name="Lena Example", email="lena@example.com")
    car = vehicle(person, license_plate="B-LE 123")
    image = {"name": "Lena Example", "name_key": "lena example", "email": "lena@example.com"}
    await put(store, person, car)
    await store.write([], [audit(person, "system", action=AuditAction.UPDATE, before=image,
                                 after={**image, "name": "Lena Example"}),
                           audit(car, person.id, action=AuditAction.CREATE,
                                 after={"license_plate": "B-LE 123", "plate_key": "BLE123"})])
    if isinstance(store, SqliteStore):
        assert "-wal" in left_in_files(store.path)  # what there is to scrub
    ctx = ServiceContext(store=store, policy=Policy(), hasher=FastHasher())
    return Erasure(ctx, AccountService(ctx), RefreshTokenService(ctx)), person.id


async def test_an_erasure_leaves_nothing_of_the_person_in_the_files(
        store: SqliteStore) -> None:
    erasure, person_id = await a_person_to_erase(store)

    await erasure.erase_user(Viewer.of(user(role=Role.ADMIN)), person_id)

    # While the service runs: no old page image in the -wal, nothing freed left unzeroed.
    assert await asyncio.to_thread(left_in_files, store.path) == {}
    await put(store, company(name="Still writing"))  # the store goes on as before
    assert await store.count(Company, Eq("name", "Still writing")) == 1


async def test_a_scrub_a_reader_blocks_is_tried_again_in_the_background(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection reading an older snapshot (an sqlite3 shell, a backup) keeps the WAL's
    frames needed: the scrub cannot cut the file, and neither the erasure nor any write
    waits for it; it is tried again until the reader is done."""
    monkeypatch.setattr(writer_module, "SCRUB_RETRY_S", (0.05, 0.1))
    erasure, person_id = await a_person_to_erase(store)
    reader = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    try:
        reader.execute("BEGIN")
        reader.execute('SELECT COUNT(*) FROM "user"').fetchall()  # a snapshot in the WAL

        await asyncio.wait_for(
            erasure.erase_user(Viewer.of(user(role=Role.ADMIN)), person_id), 5)
        await put(store, company(name="Written meanwhile"))
        await asyncio.sleep(0.5)  # several tries, all refused
        assert store._writer is not None and store._writer._scrub_retry is not None
        assert "-wal" in await asyncio.to_thread(left_in_files, store.path)
        assert await store.count(Company, Eq("name", "Written meanwhile")) == 1
    finally:
        reader.execute("COMMIT")
        reader.close()

    for _ in range(50):  # the next try, within a pause of 0.1 s
        if not await asyncio.to_thread(left_in_files, store.path):
            break
        await asyncio.sleep(0.05)
    assert await asyncio.to_thread(left_in_files, store.path) == {}
    assert store._writer._scrub_retry is None


async def test_no_mongodb_document_keeps_the_erased_person() -> None:
    """No image of the person outlives the erasure's writes in any collection: the
    journal's before-images go with their batch (``Store.scrub`` has nothing to do)."""
    store = MongoStore(async_mongomock_database(), sweep_every=None)
    await store.start()
    try:
        erasure, person_id = await a_person_to_erase(store)
        await erasure.erase_user(Viewer.of(user(role=Role.ADMIN)), person_id)
        await store.scrub()
        db = store.db.sync()
        stored = {name: list(db[name].find({})) for name in db.list_collection_names()}
    finally:
        await store.close()
    text = json.dumps(stored, default=str).encode()
    assert [value for value in PERSONAL if value in text] == []
    assert (stored.get(JOURNAL, []), stored.get(JOURNAL_PARTS, [])) == ([], [])
    assert stored["user"] and stored["audit_entry"]  # what was searched
