"""Two ChargeGraph instances on one database and one Redis: events and commands cross
from the instance holding a charger's websocket to the other."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chargegraph.secrets import derived_key
from domain import entities as d
from domain.clock import utcnow
from domain.policy import SYSTEM, Policy, Viewer
from domain.query import Eq, all_of
from domain.services import ServiceContext, Services
from domain.services.base import patch
from domain.services.charging import ChargingService
from graph.auth import TokenService
from graph.context import GraphContext
from graph.ids import to_global_id
from graph.schema import schema
from ocpp_bridge.simulator import connected
from pubsub.factory import open_event_bus
from store.sqlite import SqliteStore
from tests.e2e.conftest import running_service, two_instances
from tests.e2e.wsclient import GraphQLWS
from tests.helpers import FastHasher, soon, until
from tests.ocpp.conftest import STATION_PASSWORD
from tests.ocpp.test_charger_actions import RESERVE
from tests.support.redis_server import RedisServer

STATUS = "subscription { connectorStatusChanged { cpId connectorId status } }"


async def test_events_cross_instances_through_redis(tmp_path: Path) -> None:
    async with two_instances(tmp_path) as (a, b):
        watcher = await GraphQLWS.open(b.ws_url, await b.token("op"))
        await watcher.subscribe(STATUS)
        await b.until_subscribed(1)
        async with connected(a.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.status(1, "Charging")
        message = await watcher.next()
        assert message["payload"]["data"]["connectorStatusChanged"] == {
            "cpId": "CP-1", "connectorId": 1, "status": "CHARGING"}
        await watcher.close()


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_a_subscription_opened_while_redis_is_out_is_told_so_at_once(
        tmp_path: Path, protocol: str) -> None:
    """QA s32: opened on B while Redis was stopped, a subscription looked live and heard
    nothing of A's chargers, without a word until Redis returned (EVENTS_LOST); only
    /healthz said so. Its first message now says EVENTS_UNAVAILABLE, without ending it:
    B's own chargers' events still come, and it ends with EVENTS_LOST once Redis is back
    (then a new subscription hears A again)."""
    with RedisServer() as redis:
        async with two_instances(tmp_path, redis) as (a, b):
            token = await b.token("op")
            redis.stop()
            await soon(lambda: not b.services.ctx.bus.receiving)  # type: ignore[union-attr]
            watcher = await GraphQLWS.open(b.ws_url, token, protocol)
            op_id = await watcher.subscribe(STATUS)
            told = await watcher.next()
            assert told["id"] == op_id and told["type"] in ("next", "data")
            assert told["payload"]["data"] is None
            [error] = told["payload"]["errors"]
            assert error["extensions"] == {"code": "EVENTS_UNAVAILABLE"}
            async with connected(b.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
                await cp.status(1, "Charging")
                local = await watcher.next(timeout=30)
            assert local["id"] == op_id
            assert local["payload"]["data"]["connectorStatusChanged"] == {
                "cpId": "CP-1", "connectorId": 1, "status": "CHARGING"}
            redis.start()  # the same port
            back = await watcher.next(timeout=30)
            assert back["id"] == op_id and back["type"] == "error"
            payload = back["payload"]
            first = payload[0] if isinstance(payload, list) else payload
            assert first["extensions"] == {"code": "EVENTS_LOST"}
            await soon(lambda: b.services.ctx.bus.receiving)  # type: ignore[union-attr]
            # A back on Redis too: a publish before its reconnect reaches no one (a
            # loaded run waited for A's status in vain).
            await soon(lambda: a.services.ctx.bus.receiving)  # type: ignore[union-attr]
            again = await watcher.subscribe(STATUS)
            await b.until_subscribed(1)
            async with connected(a.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
                await cp.status(1, "Available")
                heard = await watcher.next(timeout=10)
            assert heard["id"] == again and heard["type"] in ("next", "data")
            assert heard["payload"]["data"]["connectorStatusChanged"]["status"] == \
                "AVAILABLE"
            await watcher.close()


async def test_an_iterated_subscription_opened_while_redis_is_out_is_told_so_too(
        tmp_path: Path) -> None:
    """The per-subscriber path (``LiveFeed`` iterated: Strawberry's and graphql-core's
    own subscription machinery, and the sockets' for a source not ours) says what the
    sockets say (review s33: it said nothing and went on, as if live): EVENTS_UNAVAILABLE
    at once, B's own events after it, EVENTS_LOST once Redis is back."""
    with RedisServer() as redis:
        async with two_instances(tmp_path, redis) as (_, b):
            redis.stop()
            await soon(lambda: not b.services.ctx.bus.receiving)  # type: ignore[union-attr]
            context = GraphContext.build(b.services, TokenService("t" * 40, timedelta(
                hours=1)), SYSTEM)
            stream = await schema.subscribe(STATUS, context_value=context)
            assert isinstance(stream, AsyncGenerator), stream
            async with contextlib.aclosing(stream):
                told = await asyncio.wait_for(stream.__anext__(), 10)
                assert told.data is None
                assert [e.extensions for e in told.errors or ()] == [
                    {"code": "EVENTS_UNAVAILABLE"}]
                async with connected(b.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
                    await cp.status(1, "Charging")
                    local = await asyncio.wait_for(stream.__anext__(), 30)
                assert local.errors is None
                assert local.data == {"connectorStatusChanged": {
                    "cpId": "CP-1", "connectorId": 1, "status": "CHARGING"}}
                redis.start()  # the same port
                back = await asyncio.wait_for(stream.__anext__(), 30)
                assert back.data is None
                assert [e.extensions for e in back.errors or ()] == [
                    {"code": "EVENTS_LOST"}]
                with pytest.raises(StopAsyncIteration):
                    await asyncio.wait_for(stream.__anext__(), 10)


async def test_a_command_sent_to_one_instance_reaches_a_charger_on_the_other(
        tmp_path: Path) -> None:
    async with two_instances(tmp_path) as (a, b):
        token = await b.token("op")
        unlock = """mutation($cp: String!) { unlockConnector(input: {cpId: $cp,
            connectorId: 1}) { status errors { code field } } }"""
        schedule = """mutation($cp: String!) { getCompositeSchedule(input: {cpId: $cp,
            connectorId: 1, duration: 3600}) { status
            chargingSchedule { chargingSchedulePeriod { limit } } errors { code } } }"""
        async with connected(a.ocpp_url, "CP-1", password=STATION_PASSWORD):
            answer = await b.gql(unlock, {"cp": "CP-1"}, token=token)
            assert answer["unlockConnector"] == {"status": "UNLOCKED", "errors": []}
            # An answer with decimals in it (the ocpp package parses floats as Decimal),
            # the same through the relay as on the instance holding the charger.
            relayed = await b.gql(schedule, {"cp": "CP-1"}, token=token)
            direct = await a.gql(schedule, {"cp": "CP-1"}, token=await a.token("op"))
            assert relayed == direct
            assert relayed["getCompositeSchedule"]["errors"] == []
            assert relayed["getCompositeSchedule"]["chargingSchedule"][
                "chargingSchedulePeriod"][0]["limit"] > 0
        # Connected nowhere now: B hears no claim and says so.
        answer = await b.gql(unlock, {"cp": "CP-1"}, token=token)
        assert answer["unlockConnector"]["errors"] == [
            {"code": "CHARGER_OFFLINE", "field": "cpId"}]


async def test_a_command_is_not_sent_on_a_connection_superseded_in_a_redis_outage(
        tmp_path: Path) -> None:
    """Review s33: while Redis was out, B did not hear that its charger had connected to
    A, and sent a command on its old socket, still open here (a charger whose modem
    switched networks keeps it open on its side, here its old simulator): the command
    read the station's newest connection, A's, and is not sent on an older one. B's lease
    is long, so that no lease round closes that socket first."""
    unlock = """mutation($cp: String!) { unlockConnector(input: {cpId: $cp,
        connectorId: 1}) { status errors { code field message } } }"""
    with RedisServer() as redis:
        async with two_instances(tmp_path, redis, instance_lease_seconds=3600) as (a, b):
            token = await b.token("op")
            async with connected(b.ocpp_url, "CP-1", password=STATION_PASSWORD) as old:
                await old.boot()
                redis.stop()
                await soon(lambda: not a.services.ctx.bus.receiving  # type: ignore[union-attr]
                           and not b.services.ctx.bus.receiving)  # type: ignore[union-attr]
                async with connected(a.ocpp_url, "CP-1", password=STATION_PASSWORD) as new:
                    await new.boot()
                    # B still holds its old socket, as its own.
                    gateway = b.services.commands.gateway
                    assert gateway is not None and gateway.is_connected("CP-1")
                    answer = await b.gql(unlock, {"cp": "CP-1"}, token=token)
                    assert old.received == [] and new.received == []
                    assert answer["unlockConnector"]["status"] is None
                    # Online elsewhere, out of reach: nothing was sent.
                    assert answer["unlockConnector"]["errors"] == [{
                        "code": "CHARGER_OFFLINE", "field": "cpId", "message":
                        "CP-1 is connected to another instance that does not answer now; "
                        "try again in a moment"}]


LOGIN = """mutation($p: String!) { login(email: "op@example.com", password: $p) {
    token errors { code } } }"""


async def test_guesses_spread_over_two_instances_meet_one_limit(tmp_path: Path) -> None:
    async with two_instances(tmp_path) as (a, b):
        # Five wrong passwords from one address, alternating: each instance saw three at
        # most, under the limit of five it would keep alone.
        for i in range(5):
            answer = await (a, b)[i % 2].gql(LOGIN, {"p": f"guess {i}"})
            assert answer["login"]["errors"] == [{"code": "UNAUTHENTICATED"}]
        # What A counted reaches B over the bus (shortly: bounded wait, no timing asserted).
        throttle = b.services.accounts.throttle
        for _ in range(200):
            if throttle.locked_for("op@example.com 127.0.0.1") is not None:
                break
            await asyncio.sleep(0.01)
        for instance in (a, b):  # the right password, too, waits out the lockout
            locked = await instance.gql(LOGIN, {"p": "password-123"})
            assert locked["login"] == {"token": None, "errors": [{"code": "TOO_MANY_ATTEMPTS"}]}


async def test_a_lone_instance_keys_what_its_throttles_count_as_shared_ones_do(
        tmp_path: Path) -> None:
    """Review s31: an instance without Redis digested with an empty key, and chargers'
    known addresses are stored by their digest (``KnownChargerAddress``): an unkeyed hash
    of an address anyone holding the database and a cpId could reverse by trying every
    IPv4 address. Every instance keys them with the deployment's key, as shared
    instances do; and freed card numbers (``FreedIdTag``, review r32-c: a short card UID
    under a plain SHA-256) with a key of their own from the same secret (review r32-f:
    the throttles' label)."""
    async with running_service(tmp_path) as lone, two_instances(tmp_path / "pair") as (a, _):
        keys = [({throttle.secret for throttle in (
            *running.services.accounts.throttles, *running.services.charging.sign_ins.shared)},
            running.services.ctx.digest_key) for running in (lone, a)]
        secret = "e" * 40  # running_service's
        assert keys == 2 * [({derived_key(secret, "sign-in throttle")},
                             derived_key(secret, "freed card numbers"))]


REMOVE_STATION = """mutation($input: RemoveStationInput!) { removeStation(input: $input) {
    errors { code } } }"""


async def test_a_removed_stations_known_addresses_are_forgotten_on_every_instance(
        tmp_path: Path) -> None:
    """Where a station's charger passed the password check from is dropped with the
    station from the store and, told over the bus, from every instance's memory: only
    the store's went, and the instances running kept taking the address as the
    charger's for up to 30 days, the cpId made again included."""
    async with two_instances(tmp_path) as (a, b):
        async with connected(a.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
        charger = "127.0.0.1"
        await soon(lambda: b.services.charging.sign_ins.passed_from("CP-1", charger))
        await a.services.charging.keeping_known.settled()  # stored too
        station = a.central.stations["CP-1"]
        # Removed through B, which learnt the address over the bus; A saw it pass.
        removed = await b.gql(REMOVE_STATION, {"input": {"id": to_global_id(
            "station", station.id)}}, token=await b.token("op"))
        assert removed["removeStation"] == {"errors": []}
        assert not b.services.charging.sign_ins.passed_from("CP-1", charger)
        await soon(lambda: not a.services.charging.sign_ins.passed_from("CP-1", charger))


LOCAL_LIST = """mutation { sendLocalList(input: {cpId: "CP-1", listVersion: 5,
    updateType: FULL, localAuthorizationList: [
        {idTag: "TAG-OK", idTagInfo: {status: ACCEPTED}},
        {idTag: "TAG-OTHER", idTagInfo: {status: ACCEPTED}}]}) { status errors { code } } }"""


async def test_an_expired_card_is_withdrawn_from_a_charger_once_by_the_instance_holding_it(
        tmp_path: Path) -> None:
    """Every instance runs the card-expiry sweep (at its start and every 5 minutes, so
    instances started together sweep in step): only the one holding a charger's
    websocket sends it the withdrawal, once; the others' (here B's, the charger being
    on A) send nothing, through the relay or otherwise."""
    async with two_instances(tmp_path) as (a, b), connected(
            a.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        sent = await b.gql(LOCAL_LIST, token=await b.token("op"))
        assert sent["sendLocalList"] == {"status": "ACCEPTED", "errors": []}
        store = a.services.ctx.store
        cards: dict[str, d.IdTag] = {}
        for tag in ("TAG-OK", "TAG-OTHER"):
            card = await store.find_one(d.IdTag, Eq("tag", tag))
            assert card is not None
            cards[tag] = card
        soon = utcnow() + timedelta(milliseconds=300)
        await store.write([patch(cards["TAG-OK"], SYSTEM, expires_at=soon)], [])
        await asyncio.sleep(0.5)
        cp.received.clear()

        assert await b.services.withdrawal.sweep_expired() == 1
        assert cp.received == []  # B holds no charger: it marks, and sends nothing
        assert await a.services.withdrawal.sweep_expired() == 1
        assert [action for action, _ in cp.received] == ["SendLocalList"]
        assert cp.local_list["TAG-OK"] == {"status": "Expired"}

        # Both at once (instances started together): one withdrawal still.
        later = utcnow() + timedelta(milliseconds=300)
        await store.write([patch(cards["TAG-OTHER"], SYSTEM, expires_at=later)], [])
        await asyncio.sleep(0.5)
        cp.received.clear()
        await asyncio.gather(a.services.withdrawal.sweep_expired(),
                             b.services.withdrawal.sweep_expired())
        await asyncio.sleep(0.5)  # nothing more on its way from B
        assert [action for action, _ in cp.received] == ["SendLocalList"]
        assert cp.local_list["TAG-OTHER"] == {"status": "Expired"}


async def test_a_card_expired_while_its_charger_was_away_is_withdrawn_when_it_reconnects(
        tmp_path: Path) -> None:
    """The charger's instance was lost (killed, or the network): the card-expiry sweep
    marks the withdrawal while the charger is connected nowhere, and the charger comes
    back to another instance without rebooting (no BootNotification: a connection
    handed over, a network blip). Its connection sends the withdrawal, as it sends
    the cancels owed to it; waiting for a boot left the expired card Accepted in its
    list until the charger happened to reboot."""
    async with two_instances(tmp_path) as (a, b):
        async with connected(a.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            sent = await a.gql(LOCAL_LIST, token=await a.token("op"))
            assert sent["sendLocalList"] == {"status": "ACCEPTED", "errors": []}
        store = a.services.ctx.store
        card = await store.find_one(d.IdTag, Eq("tag", "TAG-OK"))
        assert card is not None
        soon = utcnow() + timedelta(milliseconds=300)
        await store.write([patch(card, SYSTEM, expires_at=soon)], [])
        await asyncio.sleep(0.5)
        assert await a.services.withdrawal.sweep_expired() == 1  # connected nowhere

        async with connected(b.ocpp_url, "CP-1", password=STATION_PASSWORD) as again:
            again.local_list_version = cp.local_list_version  # the same charger
            again.local_list = dict(cp.local_list)

            async def withdrawn() -> bool:
                return again.local_list.get("TAG-OK") == {"status": "Expired"}
            await until(withdrawn)
            assert again.local_list["TAG-OTHER"] == {"status": "Accepted"}


async def test_a_card_renewed_after_its_withdrawing_instance_died_is_put_back_accepted(
        tmp_path: Path) -> None:
    """The instance sending an expired card's withdrawal is killed after the charger
    accepted it (version 6) and before recording it (still 5). The charger comes back
    to another instance without rebooting: its connection sends the withdrawal again at
    6, VersionMismatch, and once more above the charger's version. What the renewal
    puts back is what the operator's list held, Accepted (review s26: the resend,
    not following the version recorded, was taken for a list that may have dropped
    the tag, and renewing the card took the operator's entry out of the list)."""
    async with two_instances(tmp_path) as (a, b):
        async with connected(a.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
            await cp.boot()
            sent = await a.gql(LOCAL_LIST, token=await a.token("op"))
            assert sent["sendLocalList"] == {"status": "ACCEPTED", "errors": []}
        store = a.services.ctx.store
        card = await store.find_one(d.IdTag, Eq("tag", "TAG-OK"))
        assert card is not None
        await store.write([patch(card, SYSTEM, expires_at=utcnow()
                                 + timedelta(milliseconds=300))], [])
        await asyncio.sleep(0.5)
        assert await a.services.withdrawal.sweep_expired() == 1  # marked wanted
        # What A's push did before A was killed: the charger took the withdrawal at
        # version 6; A never recorded the answer (the store still says version 5).
        cp.local_list_version = 6
        cp.local_list["TAG-OK"] = {"status": "Expired"}

        async with connected(b.ocpp_url, "CP-1", password=STATION_PASSWORD) as again:
            again.local_list_version = cp.local_list_version  # the same charger
            again.local_list = dict(cp.local_list)

            async def settled() -> bool:
                [entry] = await store.find_all(d.LocalListEntry, Eq("tag", "TAG-OK"))
                return entry.wanted is None and entry.status == "Expired"
            await until(settled)

            # The card is renewed: what the withdrawal changed is put back.
            card = await store.find_one(d.IdTag, Eq("tag", "TAG-OK"))
            assert card is not None
            renewed = patch(card, SYSTEM, expires_at=utcnow() + timedelta(days=365))
            await store.write([renewed], [])
            await b.services.withdrawal.restore_card(SYSTEM, renewed.record)  # type: ignore[arg-type]
            assert again.local_list.get("TAG-OK", {}).get("status") == "Accepted", (
                again.local_list, again.received)


async def test_an_expired_cards_reservation_is_cancelled_at_its_charger_once(
        tmp_path: Path) -> None:
    """Every instance's card-expiry sweep finds the expired card's reservation: it is
    cancelled in the store once, and its charger sent the CancelReservation once, by
    the instance holding it (review s26: each instance sent it through the relay, the
    second answered Rejected and recorded as a failed cancel)."""
    async with two_instances(tmp_path) as (a, b), connected(
            a.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        held = (await b.gql(RESERVE, {"input": {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK",
            "expiryDate": expiry}}, token=await b.token("op")))["reserveNow"]
        assert held["reservation"]["state"] == "ACTIVE", held
        number = held["reservation"]["reservationId"]
        store = a.services.ctx.store
        card = await store.find_one(d.IdTag, Eq("tag", "TAG-OK"))
        assert card is not None
        soon = datetime.now(UTC) + timedelta(milliseconds=300)
        await store.write([patch(card, SYSTEM, expires_at=soon)], [])
        await asyncio.sleep(0.5)  # expired since both instances' last sweep
        cp.received.clear()

        # Instances started together sweep in step (at start, then every 5 minutes).
        await asyncio.gather(a.services.withdrawal.sweep_expired(),
                             b.services.withdrawal.sweep_expired())
        await asyncio.sleep(0.5)  # nothing more on its way from B
        [after] = await store.find_all(d.Reservation, Eq("reservation_id", number))
        assert after.state is d.ReservationState.CANCELLED
        cancels = [p for action, p in cp.received if action == "CancelReservation"]
        assert cancels == [{"reservation_id": number}]  # once, not once per instance


async def test_an_expired_cards_reservation_another_instance_cancelled_is_sent_by_the_holder(
        tmp_path: Path) -> None:
    """B's sweep, first, cancels the reservation in the store and owes the cancel to
    the charger, which is on A: B sends nothing; A's sweep, finding it owed, sends it."""
    async with two_instances(tmp_path) as (a, b), connected(
            a.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        held = (await a.gql(RESERVE, {"input": {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK",
            "expiryDate": expiry}}, token=await a.token("op")))["reserveNow"]
        assert held["reservation"]["state"] == "ACTIVE", held
        number = held["reservation"]["reservationId"]
        store = a.services.ctx.store
        card = await store.find_one(d.IdTag, Eq("tag", "TAG-OK"))
        assert card is not None
        soon = datetime.now(UTC) + timedelta(milliseconds=300)
        await store.write([patch(card, SYSTEM, expires_at=soon)], [])
        await asyncio.sleep(0.5)
        cp.received.clear()

        await b.services.withdrawal.sweep_expired()
        await asyncio.sleep(0.3)  # nothing on its way from B
        [owed] = await store.find_all(d.Reservation, Eq("reservation_id", number))
        assert owed.state is d.ReservationState.CANCELLED
        assert owed.cancel_owed_since is not None
        assert [p for action, p in cp.received if action == "CancelReservation"] == []

        await a.services.withdrawal.sweep_expired()
        assert [p for action, p in cp.received if action == "CancelReservation"] == [
            {"reservation_id": number}]
        [sent] = await store.find_all(d.Reservation, Eq("reservation_id", number))
        assert (sent.state, sent.cancel_owed_since) == (d.ReservationState.CANCELLED, None)


async def test_a_card_expired_by_an_edit_on_one_instance_and_swept_on_the_other_is_cancelled_once(
        tmp_path: Path) -> None:
    """An admin on B sets TAG-OK's expiry to a moment just past, after A's sweep last
    stopped: the edit's withdrawal and A's sweep both find its reservation, the edit's
    reading it live just before A's sweep cancels it (review r27-reserve: the edit's
    CancelReservation, through the relay, followed the sweep's, the charger answered it
    Rejected, and it was recorded as a failed cancel). Cancelled once, the charger sent
    the cancel once, by A, the instance holding it, and no cancel recorded refused."""
    async with two_instances(tmp_path) as (a, b), connected(
            a.ocpp_url, "CP-1", password=STATION_PASSWORD) as cp:
        await cp.boot()
        await cp.report_all()
        expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        held = (await a.gql(RESERVE, {"input": {
            "cpId": "CP-1", "connectorId": 1, "idTag": "TAG-OK",
            "expiryDate": expiry}}, token=await a.token("op")))["reserveNow"]
        assert held["reservation"]["state"] == "ACTIVE", held
        number = held["reservation"]["reservationId"]
        store = a.services.ctx.store
        card = await store.find_one(d.IdTag, Eq("tag", "TAG-OK"))
        assert card is not None
        await a.services.withdrawal.sweep_expired()  # A's cursor: now
        await asyncio.sleep(0.05)
        cp.received.clear()

        # A's sweep runs while B's withdrawal is under way, once it has read the card.
        commands = b.services.commands
        carry, cancel_owed = commands._carry, commands.cancel_owed
        swept: list[bool] = []

        async def sweep_on_a() -> None:
            if not swept:
                swept.append(True)
                await a.services.withdrawal.sweep_expired()

        async def carry_after_a(*args: Any, **kwargs: Any) -> None:
            if args[1].action == "CancelReservation":
                await sweep_on_a()
            await carry(*args, **kwargs)

        async def cancel_after_a(*args: Any, **kwargs: Any) -> list[d.Reservation]:
            await sweep_on_a()
            return await cancel_owed(*args, **kwargs)

        commands._carry = carry_after_a  # type: ignore[method-assign]
        commands.cancel_owed = cancel_after_a  # type: ignore[method-assign]
        await b.services.fleet.update_id_tag(
            Viewer.of(a.central.users["admin"]), card.id,
            expires_at=datetime.now(UTC) - timedelta(milliseconds=1))
        await b.services.fleet.settled()
        await b.services.withdrawal.settled()
        await a.services.withdrawal.sweep_expired()
        await a.services.commands.sweep_owed_cancels()
        await asyncio.sleep(0.5)  # nothing more on its way from B

        [after] = await store.find_all(d.Reservation, Eq("reservation_id", number))
        assert after.state is d.ReservationState.CANCELLED
        assert [p for action, p in cp.received if action == "CancelReservation"] == [
            {"reservation_id": number}]
        answers = [e.after for e in await store.find_all(d.AuditEntry, all_of(
            Eq("command", "CancelReservation"), Eq("action", d.AuditAction.COMMAND)))
            if e.after and e.after.get("stage") == "ANSWERED"]
        assert [(x["status"], x["error"]) for x in answers] == [("Accepted", None)], answers


async def test_every_instance_follows_what_the_others_change_through_one_subscription(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 31: the follow of what other instances announce (``ChargingService.follow``)
    was started by the OCPP server, and by the wiring only on an instance serving the API
    alone. The wiring starts it on every instance, once: an OCPP instance and an API-only
    one, over one database and one Redis, each drop their cached copy of a station edited
    on a third instance, each through one subscription (the OCPP server no longer has a
    second)."""
    follows: list[ChargingService] = []
    follow = ChargingService.follow

    def counted(charging: ChargingService, events: Any) -> Any:
        follows.append(charging)  # when its task first runs: once per instance
        return follow(charging, events)

    monkeypatch.setattr(ChargingService, "follow", counted)
    async with two_instances(tmp_path, ocpp_enabled=False) as (a, b):
        instances = (a.services.charging, b.services.charging)
        assert [follows.count(charging) for charging in instances] == [1, 1]
        # The third: services of their own over the same database and Redis.
        store = SqliteStore(a.settings.database_url.removeprefix("sqlite:///"))
        await store.start()
        bus = open_event_bus(a.settings.pubsub_url)
        await bus.start()
        try:
            other = Services(ServiceContext(store=store, policy=Policy(),
                                            hasher=FastHasher(), bus=bus))
            station = await store.find_one(d.Station, Eq("cp_id", "CP-1"))
            assert station is not None
            for charging in instances:  # as if its charger's messages read it
                charging.cache.remember(station)
                assert charging.cache.station("CP-1") is not None
            await other.stations.update_station(SYSTEM, station.id, name="Renamed")
            await soon(lambda: all(charging.cache.station("CP-1") is None
                                   for charging in instances))
        finally:
            await bus.close()
            await store.close()
    assert len(follows) == 2  # the third instance follows nothing here
