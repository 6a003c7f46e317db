"""Every mutation through HTTP: success, the audit trail, and coded user errors."""

from __future__ import annotations

import unicodedata
from datetime import timedelta
from typing import Any

import pytest

from domain import entities as d
from domain.clock import utcnow
from domain.entities import Connector
from domain.policy import SYSTEM, Viewer
from domain.ports import Insert, Update
from domain.query import ALL
from domain.services import Services, fleet
from domain.services.base import stamp_new
from graph.ids import from_global_id, to_global_id
from graph.schema import schema
from tests.graph.conftest import Api
from tests.graph.world import PASSWORD, World


async def call(api: Api, world: World, who: str | None, mutation: str, input: dict[str, Any],
               selection: str) -> dict[str, Any]:
    name = mutation[0].upper() + mutation[1:]
    query = f"""mutation($input: {name}Input!) {{ {mutation}(input: $input) {{ {selection}
      errors {{ field message code }} }} }}"""
    uid = world.users[who].id if who else None
    return (await api.gql(query, {"input": input}, as_user=uid))[mutation]


def codes(payload: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(e["field"], e["code"]) for e in payload["errors"]]


def gid(kind: str, record_id: str) -> str:
    return to_global_id(kind, record_id)


async def test_login_and_me(api: Api, world: World) -> None:
    q = """mutation($e: String!, $p: String!) { login(email: $e, password: $p) {
      token expiresAt user { name role } errors { field code } } }"""
    ok = (await api.gql(q, {"e": "DRIVER1@example.com", "p": PASSWORD}))["login"]
    assert ok["user"] == {"name": "Driver1", "role": "DRIVER"} and ok["errors"] == []
    r = await api.post("{ me { name email } }", token=ok["token"])
    assert r.json() == {"data": {"me": {"name": "Driver1", "email": "driver1@example.com"}}}
    for email, password in (("driver1@example.com", "wrong password"),
                            ("nobody@example.com", PASSWORD)):
        bad = (await api.gql(q, {"e": email, "p": password}))["login"]
        assert bad["token"] is None
        assert bad["errors"] == [{"field": None, "code": "UNAUTHENTICATED"}]


async def test_signed_out_callers_are_told_to_sign_in_before_anything_is_checked(
        api: Api, world: World) -> None:
    """Whatever the input, a signed-out caller hears UNAUTHENTICATED: a driver app whose
    token was lost was told "no such user" on an ``ownerId`` it never sent, or about its
    input (setTariff's "give exactly one of companyId and stationId")."""
    station = gid("station", world.stations["A-001"].id)
    for mutation, input in (("addVehicle", {"licensePlate": "B-MI 2024"}),
                            ("issueIdTag", {"tag": "ANON-1"}),
                            ("setTariff", {"currency": "EUR", "pricePerKwh": "0.1"}),
                            ("updateStation", {"id": station, "name": "x"}),
                            ("capturePayment", {"id": gid("payment", "nope")})):
        answer = await call(api, world, None, mutation, input, "__typename")
        assert codes(answer) == [(None, "UNAUTHENTICATED")], mutation
        assert answer["errors"][0]["message"] == "sign in first"


async def test_repeated_failed_sign_ins_lock_the_email(api: Api, world: World) -> None:
    q = """mutation($e: String!, $p: String!) { login(email: $e, password: $p) {
      token errors { code } } }"""
    for email in ("driver1@example.com", "nobody@example.com"):  # known or not: the same
        for _ in range(5):
            bad = (await api.gql(q, {"e": email, "p": "wrong password"}))["login"]
            assert bad["errors"] == [{"code": "UNAUTHENTICATED"}]
        locked = (await api.gql(q, {"e": email.upper(), "p": PASSWORD}))["login"]
        assert locked == {"token": None, "errors": [{"code": "TOO_MANY_ATTEMPTS"}]}
    other = (await api.gql(q, {"e": "driver2@example.com", "p": PASSWORD}))["login"]
    assert other["token"] is not None

    # The lock is per client: the owner signing in from elsewhere is not locked out.
    services = api.client._transport.app.services  # type: ignore[attr-defined]
    assert (await services.accounts.authenticate("driver1@example.com", PASSWORD,
                                                 "203.0.113.7")).email == "driver1@example.com"


async def test_companies_and_users(api: Api, world: World) -> None:
    created = await call(api, world, "admin", "createCompany", {"name": "  Gamma  GmbH "},
                         "company { name createdBy }")
    assert created["company"] == {"name": "Gamma GmbH",
                                  "createdBy": gid("user", world.users["admin"].id)}
    assert codes(await call(api, world, "admin", "createCompany", {"name": "Gamma GmbH"},
                            "company { id }")) == [("name", "DUPLICATE")]
    # QA (s17): names differing only in case are one company's name.
    assert codes(await call(api, world, "admin", "createCompany", {"name": "GAMMA gmbh"},
                            "company { id }")) == [("name", "DUPLICATE")]
    assert codes(await call(api, world, "op_a", "updateCompany",
                            {"id": gid("company", world.companies["a"].id),
                             "name": "beta power"}, "company { id }")) == [("name", "DUPLICATE")]
    services = api.client._transport.app.services  # type: ignore[attr-defined]
    found = await services.accounts.ensure_company(world.viewer("admin"), "gamma GMBH")
    assert found.name == "Gamma GmbH"
    assert codes(await call(api, world, "op_a", "updateCompany",
                            {"id": gid("company", world.companies["a"].id),
                             "name": "Beta Power"}, "company { id }")) == [("name", "DUPLICATE")]
    assert codes(await call(api, world, "op_a", "updateCompany",
                            {"id": gid("company", world.companies["a"].id),
                             "name": "Alpha Charging"}, "company { id }")) == []  # its own
    assert codes(await call(api, world, "op_a", "createCompany", {"name": "X"}, "company { id }")
                 ) == [(None, "FORBIDDEN")]
    assert codes(await call(api, world, None, "createCompany", {"name": "X"}, "company { id }")
                 ) == [(None, "UNAUTHENTICATED")]
    new_user = {"email": "new@example.com", "password": "long enough pw", "name": "New",
                "role": "DRIVER"}
    made = await call(api, world, "op_a", "createUser", new_user,
                      "user { email role company { name } }")
    assert made["user"] == {"email": "new@example.com", "role": "DRIVER",
                            "company": {"name": "Alpha Charging"}}
    assert codes(await call(api, world, "admin", "createUser", new_user, "user { id }")
                 ) == [("email", "DUPLICATE")]
    assert codes(await call(api, world, "admin", "createUser", {**new_user, "email": "nope"},
                            "user { id }")) == [("email", "INVALID")]
    assert codes(await call(api, world, "admin", "createUser",
                            {**new_user, "email": "x@example.com", "password": "short"},
                            "user { id }")) == [("password", "TOO_SHORT")]
    assert codes(await call(api, world, "op_a", "createUser",
                            {**new_user, "email": "y@example.com", "role": "ADMIN"},
                            "user { id }")) == [("role", "FORBIDDEN")]


async def test_a_company_name_is_one_however_its_letters_were_typed(api: Api,
                                                                    world: World) -> None:
    """QA: "Bäckerei" with its "ä" typed as "a" and a combining diaeresis (macOS input,
    text copied out of a PDF) made a second company beside "Bäckerei", the two reading
    alike. Names are stored composed (NFC) and compared by their identity (NFKC, case
    folded): a name stored decomposed before, a full-width letter, "SS" for "ß" are the
    same name; an accent left out is another one ("Muller" is not "Müller")."""
    def make(name: str) -> Any:
        return call(api, world, "admin", "createCompany", {"name": name},
                    "company { id name }")

    nfd = unicodedata.normalize("NFD", "Bäckerei Süd")
    assert nfd != "Bäckerei Süd"
    made = await make(nfd)
    assert made["company"]["name"] == "Bäckerei Süd"  # stored composed, shown the same
    # One written decomposed before names were composed on saving.
    services = api.client._transport.app.services  # type: ignore[attr-defined]
    old = stamp_new(d.Company(name=unicodedata.normalize("NFD", "Müllerei Straße")), SYSTEM)
    await services.ctx.store.write([Insert(old)], [])
    for same in ("Bäckerei Süd", "BÄCKEREI SÜD", unicodedata.normalize("NFD", "BÄCKEREI SÜD"),
                 "Ｂäckerei Süd", "Müllerei Straße", "MÜLLEREI STRASSE", "müllerei strasse"):
        assert codes(await make(same)) == [("name", "DUPLICATE")], same
    assert codes(await call(api, world, "op_a", "updateCompany",
                            {"id": gid("company", world.companies["a"].id),
                             "name": "Müllerei Straße"}, "company { id }")
                 ) == [("name", "DUPLICATE")]
    assert (await services.accounts.ensure_company(SYSTEM, "MÜLLEREI STRASSE")).id == old.id
    # Accents are part of a name: sorted together, but two names.
    assert (await make("Backerei Sud"))["company"]["name"] == "Backerei Sud"


async def test_update_and_deactivate_user(api: Api, world: World) -> None:
    me = gid("user", world.users["driver1"].id)
    renamed = await call(api, world, "driver1", "updateUser", {"id": me, "name": "Dee"},
                         "user { name }")
    assert renamed["user"] == {"name": "Dee"}
    assert codes(await call(api, world, "driver1", "updateUser", {"id": me, "role": "ADMIN"},
                            "user { id }")) == [("role", "FORBIDDEN")]
    for who in ("op_a", "op_a2"):  # out of the company: themselves or a colleague
        target = gid("user", world.users[who].id)
        assert codes(await call(api, world, "op_a", "updateUser",
                                {"id": target, "companyId": None}, "user { id }")
                     ) == [("companyId", "FORBIDDEN")], who
    same = await call(api, world, "op_a", "updateUser",
                      {"id": gid("user", world.users["op_a2"].id),
                       "companyId": gid("company", world.companies["a"].id)},
                      "user { company { name } }")
    assert same["user"] == {"company": {"name": "Alpha Charging"}}  # no move, no refusal
    other = gid("user", world.users["driver2"].id)
    assert codes(await call(api, world, "driver1", "updateUser", {"id": other, "name": "X"},
                            "user { id }")) == [("id", "NOT_FOUND")]
    token = api.token_for(world.users["driver2"].id)
    gone = await call(api, world, "admin", "deactivateUser", {"id": other}, "user { active }")
    assert gone["user"] == {"active": False}
    assert (await api.post("{ me { id } }", token=token)).status_code == 401
    q = """mutation($p: String!) { login(email: "driver2@example.com", password: $p) {
      token } }"""
    assert (await api.gql(q, {"p": PASSWORD}))["login"]["token"] is None


async def test_a_station_owner_is_not_demoted_to_driver(api: Api, world: World) -> None:
    """QA s20: demoting a station's owner to DRIVER left a driver owning stations, which
    ``updateStation`` refuses. Refused, naming how many, until they are handed over;
    then the demotion is taken. A role that may own (OPERATOR to ADMIN) is no matter."""
    owner = gid("user", world.users["op_a"].id)
    refused = await call(api, world, "admin", "updateUser",
                         {"id": owner, "role": "DRIVER"}, "user { role }")
    assert codes(refused) == [("role", "IN_USE")]
    assert "2 stations" in refused["errors"][0]["message"]
    assert refused["user"] is None
    for cp_id in ("A-001", "A-002"):
        handed = await call(api, world, "admin", "updateStation", {
            "id": gid("station", world.stations[cp_id].id),
            "ownerId": gid("user", world.users["op_a2"].id)}, "station { id }")
        assert handed["errors"] == [], handed
    promoted = await call(api, world, "admin", "updateUser",
                          {"id": gid("user", world.users["op_a2"].id), "role": "ADMIN"},
                          "user { role }")
    assert promoted == {"user": {"role": "ADMIN"}, "errors": []}
    demoted = await call(api, world, "admin", "updateUser",
                         {"id": owner, "role": "DRIVER"}, "user { role }")
    assert demoted == {"user": {"role": "DRIVER"}, "errors": []}


async def test_end_session_is_for_whoever_keeps_its_books_as_described(
        api: Api, world: World) -> None:
    """QA s20: ``endSession`` said it was for the station's operators, while the code
    lets those who keep the session's books end it (they bill it). A station handed to
    Beta mid-session: Beta, running it now, cannot (the session is not in its books, so
    not even found); Alpha ends it; the description says so."""
    handed = await call(api, world, "admin", "updateStation", {
        "id": gid("station", world.stations["A-001"].id),
        "companyId": gid("company", world.companies["b"].id)}, "station { id }")
    assert handed["errors"] == [], handed
    session = {"id": gid("session", world.sessions["s1"].id)}
    assert codes(await call(api, world, "op_b", "endSession", session,
                            "session { state }")) == [("id", "NOT_FOUND")]
    ended = await call(api, world, "op_a", "endSession", session, "session { state }")
    assert ended == {"session": {"state": "COMPLETED"}, "errors": []}
    mutations = schema._schema.mutation_type
    assert mutations is not None
    text = mutations.fields["endSession"].description or ""
    assert "keep the session's books" in text
    assert "station's operators and admins" not in text


async def login(api: Api, email: str, password: str) -> str | None:
    q = """mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"""
    return (await api.gql(q, {"e": email, "p": password}))["login"]["token"]  # type: ignore[no-any-return]


async def test_deactivation_and_password_change_revoke_tokens(api: Api, world: World
                                                              ) -> None:
    other = gid("user", world.users["driver2"].id)
    before = await login(api, "driver2@example.com", PASSWORD)
    await call(api, world, "admin", "deactivateUser", {"id": other}, "user { active }")
    back = await call(api, world, "admin", "updateUser", {"id": other, "active": True},
                      "user { active }")
    assert back["user"] == {"active": True}
    # Reactivation does not bring back a token issued before the deactivation.
    revoked = await api.post("{ me { id } }", token=before)
    assert revoked.status_code == 401
    assert revoked.json()["errors"][0]["extensions"]["code"] == "INVALID_TOKEN"
    after = await login(api, "driver2@example.com", PASSWORD)
    assert (await api.post("{ me { name } }", token=after)).status_code == 200

    me = gid("user", world.users["driver1"].id)
    old = await login(api, "driver1@example.com", PASSWORD)
    other_device = await login(api, "driver1@example.com", PASSWORD)
    renamed = await api.post(
        """mutation($i: UpdateUserInput!) { updateUser(input: $i) { user { name } } }""",
        {"i": {"id": me, "name": "Dee"}}, token=old)
    assert renamed.json()["data"]["updateUser"]["user"] == {"name": "Dee"}
    assert (await api.post("{ me { id } }", token=old)).status_code == 200  # not revoked
    change = """mutation($i: UpdateUserInput!) { updateUser(input: $i) {
        errors { field code } } }"""
    # A token alone does not change the password or the email: the password does.
    for extra, error in (({}, {"field": "currentPassword", "code": "REQUIRED"}),
                         ({"currentPassword": "not it"},
                          {"field": "currentPassword", "code": "FORBIDDEN"})):
        for field, value in (("password", "a brand new secret"),
                             ("email", "taken.over@example.com")):
            refused = await api.post(change, {"i": {"id": me, field: value, **extra}},
                                     token=old)
            assert refused.json()["data"]["updateUser"]["errors"] == [error], (field, extra)
    changed = await api.post(change, {"i": {"id": me, "password": "a brand new secret",
                                            "currentPassword": PASSWORD}}, token=old)
    assert changed.json()["data"]["updateUser"]["errors"] == []
    for token in (old, other_device):
        assert (await api.post("{ me { id } }", token=token)).status_code == 401
    assert await login(api, "driver1@example.com", PASSWORD) is None
    fresh = await login(api, "driver1@example.com", "a brand new secret")
    assert (await api.post("{ me { id } }", token=fresh)).status_code == 200


async def test_a_reactivation_revokes_tokens_of_a_deactivation_before_token_epochs(
        api: Api, world: World, store) -> None:
    """A user deactivated by a build before token epochs kept epoch 0, so the tokens of
    before came back with the reactivation (QA s18, upgrade). A reactivation moves the
    epoch on too."""
    from dataclasses import replace

    user = world.users["driver2"]
    before = await login(api, "driver2@example.com", PASSWORD)
    [stored] = await store.inner.get_many(d.User, [user.id])
    await store.inner.write([Update(replace(stored, active=False), frozenset({"active"}))], [])
    await call(api, world, "admin", "updateUser",
               {"id": gid("user", user.id), "active": True}, "user { active }")
    assert (await api.post("{ me { id } }", token=before)).status_code == 401


async def test_explicit_null_for_a_required_field_is_a_user_error(api: Api, world: World
                                                                   ) -> None:
    me = gid("user", world.users["driver1"].id)
    for field in ("name", "email", "password"):
        assert codes(await call(api, world, "driver1", "updateUser", {"id": me, field: None},
                                "user { id }")) == [(field, "REQUIRED")], field
    station = gid("station", world.stations["A-001"].id)
    assert codes(await call(api, world, "op_a", "updateStation",
                            {"id": station, "name": None}, "station { id }")
                 ) == [("name", "REQUIRED")]
    vehicle = gid("vehicle", world.vehicles["driver1"].id)
    assert codes(await call(api, world, "driver1", "updateVehicle",
                            {"id": vehicle, "licensePlate": None}, "vehicle { id }")
                 ) == [("licensePlate", "REQUIRED")]
    for value in ("Dee\x00", "Line\x1bname"):
        assert codes(await call(api, world, "driver1", "updateUser",
                                {"id": me, "name": value}, "user { id }")
                     ) == [("name", "INVALID")], value
    located = {"id": station, "location": {"lat": 52.5, "lon": 13.4}}
    assert codes(await call(api, world, "op_a", "updateStation",
                            {**located, "location": {"lat": 52.5, "lon": 13.4,
                                                     "address": "Street 1\x00"}},
                            "station { id }")) == [("location.address", "INVALID")]
    kept = await call(api, world, "op_a", "updateStation",
                      {**located, "location": {"lat": 52.5, "lon": 13.4,
                                               "address": "Street 1\n10115 Berlin"}},
                      "station { location { address } }")
    assert kept["station"] == {"location": {"address": "Street 1\n10115 Berlin"}}


async def test_vehicles(api: Api, world: World) -> None:
    added = await call(api, world, "driver1", "addVehicle",
                       {"licensePlate": "m-xy 42", "make": "Tesla", "batteryKwh": 75},
                       "vehicle { id licensePlate owner { name } }")
    assert added["vehicle"]["licensePlate"] == "M-XY 42"
    assert added["vehicle"]["owner"] == {"name": "Driver1"}
    # Unique per driver: a shared car is registered by each of its drivers.
    assert codes(await call(api, world, "driver1", "addVehicle", {"licensePlate": "MXY-42"},
                            "vehicle { id }")) == [("licensePlate", "DUPLICATE")]
    assert codes(await call(api, world, "driver2", "addVehicle", {"licensePlate": "MXY-42"},
                            "vehicle { id }")) == []
    vid = added["vehicle"]["id"]
    assert codes(await call(api, world, "driver2", "updateVehicle",
                            {"id": vid, "make": "Fiat"}, "vehicle { id }")
                 ) == [("id", "NOT_FOUND")]
    updated = await call(api, world, "driver1", "updateVehicle", {"id": vid, "make": None},
                         "vehicle { make }")
    assert updated["vehicle"] == {"make": None}
    removed = await call(api, world, "driver1", "removeVehicle", {"id": vid},
                         "vehicle { licensePlate }")
    assert removed["vehicle"] == {"licensePlate": "M-XY 42"}
    log = await api.gql("""query($id: ID!) { auditLog(filter: {entityId: $id}) { nodes {
      action actor before after } } }""", {"id": vid}, as_user=world.users["admin"].id)
    actions = [n["action"] for n in log["auditLog"]["nodes"]]
    assert actions == ["DELETE", "UPDATE", "CREATE"]
    delete, update, _ = log["auditLog"]["nodes"]
    assert update["before"]["make"] == "Tesla" and update["after"]["make"] is None
    assert delete["after"] is None and delete["before"]["license_plate"] == "M-XY 42"
    assert delete["actor"] == gid("user", world.users["driver1"].id)


async def test_card_groups_are_set_by_operators_and_admins(api: Api, world: World) -> None:
    """parentIdTag (OCPP's card group) could not be set at all, so reservations for a
    group and group stops never worked. Drivers may not set it: another group's parent
    id would give their card that group's reservations and stops."""
    fleet = world.users["driver_a"].id  # a driver of company a
    issued = await call(api, world, "op_a", "issueIdTag",
                        {"tag": "FLEET-0001", "userId": gid("user", fleet),
                         "parentIdTag": "fleet-a"}, "idTag { id parentIdTag }")
    assert issued["idTag"]["parentIdTag"] == "FLEET-A" and issued["errors"] == []
    tag = issued["idTag"]["id"]
    # QA (s17): an instant given with an offset is answered in UTC, as it reads back.
    dated = await call(api, world, "op_a", "updateIdTag",
                       {"id": tag, "expiresAt": "2030-01-01T05:00:00+05:00"},
                       "idTag { expiresAt }")
    assert dated["idTag"]["expiresAt"].startswith("2030-01-01T00:00:00")
    for other in ("FLEET-B", None):  # nor out of it
        assert codes(await call(api, world, "driver_a", "updateIdTag",
                                {"id": tag, "parentIdTag": other}, "idTag { id }")) == [
            ("parentIdTag", "FORBIDDEN")]
    assert codes(await call(api, world, "driver1", "issueIdTag",
                            {"tag": "MINE-0001", "parentIdTag": "FLEET-A"}, "idTag { id }")
                 ) == [("parentIdTag", "FORBIDDEN")]
    assert codes(await call(api, world, "admin", "updateIdTag",
                            {"id": tag, "parentIdTag": "x" * 21}, "idTag { id }")) == [
        ("parentIdTag", "TOO_LONG")]
    # The driver may still change what is theirs to change, leaving the group as it is.
    kept = await call(api, world, "driver_a", "updateIdTag",
                      {"id": tag, "status": "BLOCKED", "parentIdTag": "FLEET-A"},
                      "idTag { parentIdTag status }")
    assert kept["idTag"] == {"parentIdTag": "FLEET-A", "status": "BLOCKED"}
    cleared = await call(api, world, "admin", "updateIdTag", {"id": tag, "parentIdTag": None},
                         "idTag { parentIdTag }")
    assert cleared["idTag"] == {"parentIdTag": None}
    services = api.client._transport.app.services  # type: ignore[attr-defined]
    regrouped = await services.fleet.update_id_tag(SYSTEM, from_global_id(tag)[1],
                                                   parent_tag="FLEET-C",
                                                   status=d.IdTagStatus.ACCEPTED)
    info = await services.charging.authorize(world.stations["A-001"].cp_id, "FLEET-0001")
    assert regrouped.parent_tag == info.parent_id_tag == "FLEET-C"  # as chargers are told


async def test_a_removed_card_s_number_is_held_back_from_other_drivers(
        api: Api, world: World) -> None:
    """QA s32: a number freed by removeIdTag (or an erasure) was issuable at once by any
    driver, who then had the physical card's sessions booked to them. Refused IN_USE on
    tag for 30 days; an admin (or the company's operator) may issue it at once."""
    issued = await call(api, world, "driver1", "issueIdTag", {"tag": "FREED-0001"},
                        "idTag { id }")
    removed = await call(api, world, "driver1", "removeIdTag",
                         {"id": issued["idTag"]["id"]}, "idTag { id }")
    assert removed["errors"] == []
    claimed = await call(api, world, "driver2", "issueIdTag", {"tag": "FREED-0001"},
                         "idTag { status }")
    assert codes(claimed) == [("tag", "IN_USE")] and claimed["idTag"] is None
    assert "in use recently" in claimed["errors"][0]["message"]
    given = await call(api, world, "admin", "issueIdTag",
                       {"tag": "FREED-0001", "userId": gid("user", world.users["driver2"].id)},
                       "idTag { status }")
    assert given == {"idTag": {"status": "ACCEPTED"}, "errors": []}


async def test_accepting_a_card_past_its_expiry_says_to_move_the_expiry(
        api: Api, world: World) -> None:
    """QA s24: ``updateIdTag(status: ACCEPTED)`` on a card past its expiry did nothing
    (it still read EXPIRED) and answered no error. It changes nothing and answers
    EXPIRED on expiresAt; with the expiry moved later in the same input it is usable."""
    issued = await call(api, world, "admin", "issueIdTag",
                        {"tag": "LAPSED-1", "userId": gid("user", world.users["driver1"].id)},
                        "idTag { id }")
    tag = issued["idTag"]["id"]
    lapsed = await call(api, world, "admin", "updateIdTag",
                        {"id": tag, "expiresAt": "2020-01-01T00:00:00Z"},
                        "idTag { status }")
    assert lapsed["idTag"] == {"status": "EXPIRED"}
    for given in ({}, {"expiresAt": "2021-01-01T00:00:00Z"}):
        refused = await call(api, world, "admin", "updateIdTag",
                             {"id": tag, "status": "ACCEPTED", **given}, "idTag { id }")
        assert codes(refused) == [("expiresAt", "EXPIRED")] and refused["idTag"] is None
    services = api.client._transport.app.services  # type: ignore[attr-defined]
    [card] = await services.fleet.store.get_many(d.IdTag, [from_global_id(tag)[1]])
    assert card is not None and card.expires_at is not None \
        and card.expires_at.year == 2020  # nothing written
    moved = await call(api, world, "admin", "updateIdTag",
                       {"id": tag, "status": "ACCEPTED", "expiresAt": "2030-01-01T00:00:00Z"},
                       "idTag { status }")
    assert moved == {"idTag": {"status": "ACCEPTED"}, "errors": []}


async def test_id_tags(api: Api, world: World) -> None:
    issued = await call(api, world, "driver1", "issueIdTag",
                        {"tag": "rfid-0001", "vehicleId": gid("vehicle",
                                                              world.vehicles["driver1"].id)},
                        "idTag { id tag status vehicle { licensePlate } user { name } }")
    assert issued["idTag"]["tag"] == "RFID-0001" and issued["idTag"]["status"] == "ACCEPTED"
    assert issued["idTag"]["vehicle"] == {"licensePlate": "B-DR 1"}
    assert codes(await call(api, world, "driver2", "issueIdTag", {"tag": "RFID-0001"},
                            "idTag { id }")) == [("tag", "DUPLICATE")]
    assert codes(await call(api, world, "driver2", "issueIdTag", {"tag": "x" * 21},
                            "idTag { id }")) == [("tag", "TOO_LONG")]
    assert codes(await call(api, world, "driver2", "issueIdTag",
                            {"tag": "OTHER", "vehicleId": gid("vehicle",
                                                              world.vehicles["driver1"].id)},
                            "idTag { id }")) == [("vehicleId", "NOT_FOUND")]
    blocked = await call(api, world, "driver1", "updateIdTag",
                         {"id": issued["idTag"]["id"], "status": "BLOCKED"}, "idTag { status }")
    assert blocked["idTag"] == {"status": "BLOCKED"}
    # A driver lifts a block of their own (the card turned up again), but does not move
    # the expiry; an operator of the company or an admin does.
    tag = issued["idTag"]["id"]
    assert codes(await call(api, world, "driver1", "updateIdTag",
                            {"id": tag, "status": "ACCEPTED"}, "idTag { id }")) == []
    assert codes(await call(api, world, "driver1", "updateIdTag",
                            {"id": tag, "status": "BLOCKED"}, "idTag { id }")) == []
    assert codes(await call(api, world, "driver1", "updateIdTag",
                            {"id": tag, "expiresAt": "2030-01-01T00:00:00Z"}, "idTag { id }")
                 ) == [("expiresAt", "FORBIDDEN")]
    vehicle_moved = await call(api, world, "driver1", "updateIdTag",
                               {"id": tag, "vehicleId": None, "status": "BLOCKED"},
                               "idTag { status vehicle { id } }")
    assert vehicle_moved["idTag"] == {"status": "BLOCKED", "vehicle": None}
    lifted = await call(api, world, "admin", "updateIdTag",
                        {"id": tag, "status": "ACCEPTED", "expiresAt": "2030-01-01T00:00:00Z"},
                        "idTag { status expiresAt }")
    assert lifted["idTag"] == {"status": "ACCEPTED", "expiresAt": "2030-01-01T00:00:00.000Z"}
    fleet_tag = world.tags["driver_a"].id
    assert codes(await call(api, world, "driver_a", "updateIdTag",
                            {"id": gid("id_tag", fleet_tag), "status": "BLOCKED"},
                            "idTag { id }")) == []
    assert codes(await call(api, world, "op_a", "updateIdTag",
                            {"id": gid("id_tag", fleet_tag), "status": "ACCEPTED"},
                            "idTag { id }")) == []
    # An operator manages the tags of its company's drivers, not of others.
    assert codes(await call(api, world, "op_a", "issueIdTag",
                            {"tag": "FLEET-1", "userId": gid("user",
                                                             world.users["driver_a"].id)},
                            "idTag { id }")) == []
    assert codes(await call(api, world, "op_a", "issueIdTag",
                            {"tag": "FLEET-2", "userId": gid("user",
                                                             world.users["driver1"].id)},
                            "idTag { id }")) == [("userId", "FORBIDDEN")]


async def test_a_driver_cannot_issue_a_card_around_an_operators_block(api: Api,
                                                                       world: World) -> None:
    own = world.tags["driver1"].id
    # Their own block (a lost card) is what a new card replaces.
    assert codes(await call(api, world, "driver1", "updateIdTag",
                            {"id": gid("id_tag", own), "status": "BLOCKED"},
                            "idTag { id }")) == []
    assert codes(await call(api, world, "driver1", "issueIdTag", {"tag": "REPLACEMENT-1"},
                            "idTag { id }")) == []
    assert codes(await call(api, world, "driver1", "issueIdTag",
                            {"tag": "LATE-1", "expiresAt": "2020-01-01T00:00:00Z"},
                            "idTag { id }")) == [("expiresAt", "OUT_OF_RANGE")]
    # An admin's block holds: no new card of their own until it is lifted.
    assert codes(await call(api, world, "admin", "updateIdTag",
                            {"id": gid("id_tag", own), "status": "BLOCKED"},
                            "idTag { id }")) == []
    assert codes(await call(api, world, "driver1", "issueIdTag", {"tag": "AROUND-1"},
                            "idTag { id }")) == [("tag", "FORBIDDEN")]
    # Nor by writing the block again as it is, which made it look like their own.
    for rewrite in ({"status": "BLOCKED"}, {"vehicleId": None}):
        assert codes(await call(api, world, "driver1", "updateIdTag",
                                {"id": gid("id_tag", own), **rewrite},
                                "idTag { id }")) == [("id", "FORBIDDEN")]
    assert codes(await call(api, world, "driver1", "issueIdTag", {"tag": "AROUND-2"},
                            "idTag { id }")) == [("tag", "FORBIDDEN")]
    # Nor by removing the car the card is linked to, which rewrites the card as theirs.
    added = await call(api, world, "driver1", "addVehicle", {"licensePlate": "B-JO-123"},
                       "vehicle { id }")
    car = added["vehicle"]["id"]
    assert codes(await call(api, world, "admin", "updateIdTag",
                            {"id": gid("id_tag", own), "vehicleId": car}, "idTag { id }")) == []
    assert codes(await call(api, world, "driver1", "removeVehicle", {"id": car},
                            "vehicle { id }")) == []
    assert codes(await call(api, world, "driver1", "issueIdTag", {"tag": "AROUND-3"},
                            "idTag { id }")) == [("tag", "FORBIDDEN")]
    assert codes(await call(api, world, "admin", "issueIdTag",
                            {"tag": "GRANTED-1", "userId": gid("user", world.users["driver1"].id)},
                            "idTag { id }")) == []
    tags = await api.gql("{ idTags(first: 20) { nodes { tag } } }",
                         as_user=world.users["driver1"].id)
    assert {n["tag"] for n in tags["idTags"]["nodes"]} >= {"REPLACEMENT-1", "GRANTED-1"}
    assert "AROUND-1" not in {n["tag"] for n in tags["idTags"]["nodes"]}


async def test_a_driver_cannot_issue_a_card_around_a_card_marked_expired(
        api: Api, world: World) -> None:
    """QA s28 (org): a card marked EXPIRED (a status only operators and admins set: the
    contract behind it ended) was no bar to its driver issuing themselves a new card
    with no expiry the next minute, which every charger accepted: the rule that holds
    for a card blocked by their operator (no new card until it is lifted) did not hold
    for one expired by them. Their operator may still give them one."""
    own = gid("id_tag", world.tags["driver_a"].id)
    assert codes(await call(api, world, "op_a", "updateIdTag",
                            {"id": own, "status": "EXPIRED"}, "idTag { id }")) == []
    assert codes(await call(api, world, "driver_a", "issueIdTag", {"tag": "AROUND-EXP"},
                            "idTag { id }")) == [("tag", "FORBIDDEN")]
    # Nor by blocking it themselves, which made the block theirs to lift (ACCEPTED
    # again, the expiry gone), nor by removing it and then issuing a new one.
    assert codes(await call(api, world, "driver_a", "updateIdTag",
                            {"id": own, "status": "BLOCKED"}, "idTag { id }")
                 ) == [("id", "FORBIDDEN")]
    assert codes(await call(api, world, "driver_a", "removeIdTag", {"id": own},
                            "idTag { id }")) == [("id", "FORBIDDEN")]
    card = await api.gql("query($id: ID!) { node(id: $id) { ... on IdTag { status } } }",
                         {"id": own}, as_user=world.users["driver_a"].id)
    assert card["node"] == {"status": "EXPIRED"}
    assert codes(await call(api, world, "op_a", "issueIdTag",
                            {"tag": "RENEWED-1", "userId": gid("user",
                                                               world.users["driver_a"].id)},
                            "idTag { id }")) == []
    # Re-validated, it bars nothing.
    assert codes(await call(api, world, "op_a", "updateIdTag",
                            {"id": own, "status": "ACCEPTED"}, "idTag { id }")) == []
    assert codes(await call(api, world, "driver_a", "issueIdTag", {"tag": "SPARE-1"},
                            "idTag { id }")) == []


async def test_an_expiry_date_their_operator_set_bars_a_driver_once_past(
        api: Api, world: World, services: Services) -> None:
    """QA s29: a card whose expiry date its operator set, once past, was no bar to its
    driver: they issued themselves a new card and went on charging, nothing recording
    who set the date (a date the driver chose themselves, past, must not bar them). It
    bars them as the EXPIRED mark does, and is not theirs to clear or move."""
    own = gid("id_tag", world.tags["driver_a"].id)
    soon = (utcnow() + timedelta(hours=1)).isoformat()
    set_by_op = await call(api, world, "op_a", "updateIdTag",
                           {"id": own, "expiresAt": soon}, "idTag { expirySetByStaff }")
    assert set_by_op["idTag"] == {"expirySetByStaff": True}
    for moved in (None, (utcnow() + timedelta(days=30)).isoformat()):
        assert codes(await call(api, world, "driver_a", "updateIdTag",
                                {"id": own, "expiresAt": moved}, "idTag { id }")
                     ) == [("expiresAt", "FORBIDDEN")]
    # Their own card's date, past by then, is theirs and bars nothing.
    spare = await call(api, world, "driver_a", "issueIdTag",
                       {"tag": "OWN-DATE-1", "expiresAt": soon}, "idTag { id }")
    # An operator's later edit of something else leaves the date the driver's.
    unlinked = await call(api, world, "op_a", "updateIdTag",
                          {"id": spare["idTag"]["id"], "vehicleId": None},
                          "idTag { expirySetByStaff }")
    assert unlinked["idTag"] == {"expirySetByStaff": False}
    real = services.ctx.clock
    services.ctx.clock = lambda: real() + timedelta(hours=2)
    assert codes(await call(api, world, "driver_a", "issueIdTag", {"tag": "AROUND-DATE"},
                            "idTag { id }")) == [("tag", "FORBIDDEN")]
    for change in ({"status": "BLOCKED"}, {"expiresAt": None}, {"vehicleId": None}):
        assert codes(await call(api, world, "driver_a", "updateIdTag",
                                {"id": own, **change}, "idTag { id }")
                     ) == [("id", "FORBIDDEN")], change
    assert codes(await call(api, world, "driver_a", "removeIdTag", {"id": own},
                            "idTag { id }")) == [("id", "FORBIDDEN")]
    # Their operator clears it: it bars nothing, and the driver's own past date never did.
    cleared = await call(api, world, "op_a", "updateIdTag",
                         {"id": own, "expiresAt": None}, "idTag { expirySetByStaff }")
    assert cleared["idTag"] == {"expirySetByStaff": None}
    assert codes(await call(api, world, "driver_a", "issueIdTag", {"tag": "NEXT-1"},
                            "idTag { id }")) == []
    assert codes(await call(api, world, "driver_a", "removeIdTag",
                            {"id": spare["idTag"]["id"]}, "idTag { id }")) == []
    tags = await api.gql("{ idTags { nodes { tag } } }", as_user=world.users["driver_a"].id)
    assert "AROUND-DATE" not in {n["tag"] for n in tags["idTags"]["nodes"]}


@pytest.mark.parametrize("status", ["EXPIRED", "BLOCKED", "DATE"])
async def test_a_card_withdrawn_while_its_driver_issues_one_bars_the_new_card(
        api: Api, world: World, services: Services, monkeypatch: pytest.MonkeyPatch,
        status: str) -> None:
    """Review r28-org: the operator marks a driver's card EXPIRED (or blocks it, or moves
    its expiry into the past: QA s29) between that driver's issue reading their cards
    and writing the new one (two requests, or two instances). The new card was written
    with no guard on those cards: the driver held an Accepted card of their own beside
    the withdrawn one. The write is guarded by the check, so the overlap is refused as
    the same issue after the withdrawal is."""
    own = world.tags["driver_a"]
    op = Viewer.of(world.users["op_a"])
    original = fleet.reissue_marks  # read after the check, just before the write
    withdrawn = False
    change: dict[str, Any] = {"expires_at": utcnow() - timedelta(minutes=1)} \
        if status == "DATE" else {"status": d.IdTagStatus[status]}

    async def then_the_operator_withdraws_it(*args: Any) -> Any:
        nonlocal withdrawn
        if not withdrawn:
            withdrawn = True
            await services.fleet.update_id_tag(op, own.id, **change)
        return await original(*args)

    monkeypatch.setattr(fleet, "reissue_marks", then_the_operator_withdraws_it)
    answer = await call(api, world, "driver_a", "issueIdTag", {"tag": "RACE-1"},
                        "idTag { id }")
    assert codes(answer) == [("tag", "FORBIDDEN")]
    tags = await api.gql("{ idTags { nodes { tag status } } }",
                         as_user=world.users["driver_a"].id)
    assert {(n["tag"], n["status"]) for n in tags["idTags"]["nodes"]} \
        == {(own.tag, "EXPIRED" if status == "DATE" else status)}


@pytest.mark.parametrize("status", ["EXPIRED", "BLOCKED"])
async def test_a_card_withdrawn_bars_a_new_one_behind_a_hundred_lost_cards(
        api: Api, world: World, services: Services, status: str) -> None:
    """Review r28-org: the check read at most 100 of the driver's BLOCKED or EXPIRED
    cards and looked for one their operator withdrew among those: a driver who blocked
    100 lost cards of their own (each allowed, each replaced) was not barred by a card
    their operator marked EXPIRED (or blocked) after them. The store is asked for such a
    card itself."""
    # A hundred cards of one driver: a deployment lifting the cap (0; QA s33: 10 by
    # default).
    services.fleet.max_cards_per_driver = 0
    driver = Viewer.of(world.users["driver_a"])
    for n in range(100):
        lost = await services.fleet.issue_id_tag(driver, tag=f"LOST-{n}")
        await services.fleet.update_id_tag(driver, lost.id, status=d.IdTagStatus.BLOCKED)
    latest = await services.fleet.issue_id_tag(driver, tag="LATEST-1")
    assert codes(await call(api, world, "op_a", "updateIdTag",
                            {"id": gid("id_tag", latest.id), "status": status},
                            "idTag { id }")) == []
    assert codes(await call(api, world, "driver_a", "issueIdTag", {"tag": "AROUND-100"},
                            "idTag { id }")) == [("tag", "FORBIDDEN")]
    # Their own blocks alone bar nothing: re-validated, the card no longer does either.
    assert codes(await call(api, world, "op_a", "updateIdTag",
                            {"id": gid("id_tag", latest.id), "status": "ACCEPTED"},
                            "idTag { id }")) == []
    assert codes(await call(api, world, "driver_a", "issueIdTag", {"tag": "AROUND-101"},
                            "idTag { id }")) == []


async def test_a_driver_lifts_only_their_own_block(api: Api, world: World) -> None:
    own = gid("id_tag", world.tags["driver1"].id)
    assert codes(await call(api, world, "admin", "updateIdTag",
                            {"id": own, "status": "BLOCKED"}, "idTag { id }")) == []
    assert codes(await call(api, world, "driver1", "updateIdTag",
                            {"id": own, "status": "ACCEPTED"}, "idTag { id }")
                 ) == [("id", "FORBIDDEN")]


async def test_a_driver_marking_her_card_expired_is_told_that_is_refused(
        api: Api, world: World) -> None:
    """Not "only operators and admins unblock or re-validate id tags" (QA s30): she
    did neither."""
    answer = await call(api, world, "driver1", "updateIdTag",
                        {"id": gid("id_tag", world.tags["driver1"].id), "status": "EXPIRED"},
                        "idTag { id }")
    assert [(e["field"], e["code"], e["message"]) for e in answer["errors"]] == [
        ("status", "FORBIDDEN", "only operators and admins mark an id tag expired: block "
                                "it (status BLOCKED) to stop its use")]


async def test_cards_are_removed_but_not_while_they_charge_or_around_a_block(
        api: Api, world: World) -> None:
    selection = "idTag { tag }"
    charging = gid("id_tag", world.tags["driver1"].id)  # in session s1, ACTIVE
    assert codes(await call(api, world, "driver1", "removeIdTag", {"id": charging},
                            selection)) == [("id", "IN_USE")]
    spare = await call(api, world, "driver1", "issueIdTag", {"tag": "SPARE-1"},
                       "idTag { id }")
    spare_id = spare["idTag"]["id"]
    # Another company's operator does not see the card; a driver not someone else's.
    for who in ("op_b", "driver2"):
        assert codes(await call(api, world, who, "removeIdTag", {"id": spare_id},
                                selection)) == [("id", "NOT_FOUND")], who
    assert codes(await call(api, world, "admin", "updateIdTag",
                            {"id": spare_id, "status": "BLOCKED"}, "idTag { id }")) == []
    assert codes(await call(api, world, "driver1", "removeIdTag", {"id": spare_id},
                            selection)) == [("id", "FORBIDDEN")]
    removed = await call(api, world, "admin", "removeIdTag", {"id": spare_id}, selection)
    assert removed == {"idTag": {"tag": "SPARE-1"}, "errors": []}
    tags = await api.gql("{ idTags(first: 20) { nodes { tag } } }",
                         as_user=world.users["driver1"].id)
    assert "SPARE-1" not in {n["tag"] for n in tags["idTags"]["nodes"]}
    # Held back from other drivers for a while (QA s32), staff may issue it again; the
    # audit log keeps what was removed.
    assert codes(await call(api, world, "driver2", "issueIdTag", {"tag": "SPARE-1"},
                            "idTag { id }")) == [("tag", "IN_USE")]
    assert codes(await call(api, world, "admin", "issueIdTag",
                            {"tag": "SPARE-1", "userId": gid("user", world.users["driver2"].id)},
                            "idTag { id }")) == []
    audit = await api.gql('{ auditLog(first: 5, filter: {action: DELETE}) '
                          '{ nodes { entity before } } }',
                          as_user=world.users["admin"].id)
    assert any(n["entity"] == "id_tag" and n["before"]["tag"] == "SPARE-1"
               for n in audit["auditLog"]["nodes"])


STATION_INPUT: dict[str, Any] = {
    "cpId": "NEW-1", "name": "New Station",
    "location": {"lat": 52.52, "lon": 13.405, "address": "Alexanderplatz 1"},
    "connectors": [{"connectorId": 1, "type": "CCS2", "maxKw": 150},
                   {"connectorId": 2, "type": "TYPE2", "maxKw": 22}],
    "password": "a-station-password",
}


async def test_create_station_and_errors(api: Api, world: World, store) -> None:
    made = await call(api, world, "op_a", "createStation", STATION_INPUT,
                      "station { id cpId owner { name } company { name } connectors { "
                      "connectorId type maxKw status } }")
    station = made["station"]
    assert station["owner"] == {"name": "Op_A"} and station["company"] == {"name":
                                                                          "Alpha Charging"}
    assert [c["type"] for c in station["connectors"]] == ["CCS2", "TYPE2"]
    assert station["connectors"][0]["status"] == "UNAVAILABLE"
    before = await store.inner.count(Connector, ALL)
    dup = await call(api, world, "admin", "createStation", STATION_INPUT, "station { id }")
    assert codes(dup) == [("cpId", "DUPLICATE")]
    after = await store.inner.count(Connector, ALL)
    assert before == after  # nothing half-written
    bad: list[tuple[dict[str, Any], tuple[str, str]]] = [
        ({"cpId": "has space"}, ("cpId", "INVALID")),
        ({"cpId": "x" * 49}, ("cpId", "TOO_LONG")),
        ({"cpId": "OK-2", "location": {"lat": 91, "lon": 0}}, ("location.lat", "OUT_OF_RANGE")),
        ({"cpId": "OK-3", "connectors": [{"connectorId": 1}, {"connectorId": 1}]},
         ("connectors.1.connectorId", "DUPLICATE")),
        ({"cpId": "OK-4", "connectors": [{"connectorId": 0}]},
         ("connectors.0.connectorId", "OUT_OF_RANGE")),
        ({"cpId": "OK-5", "password": "short"}, ("password", "TOO_SHORT")),
        ({"cpId": "OK-5", "password": "p" * 41}, ("password", "TOO_LONG")),
        # QA (s17): an empty password (a form's blank field) made a station without one.
        ({"cpId": "OK-5", "password": ""}, ("password", "TOO_SHORT")),
        ({"cpId": "OK-6", "companyId": gid("company", world.companies["b"].id)},
         ("companyId", "NOT_FOUND")),
        ({"cpId": "OK-7", "ownerId": gid("user", world.users["driver_a"].id)},
         ("ownerId", "INVALID")),  # a driver of the company
    ]
    for change, expected in bad:
        payload = await call(api, world, "op_a", "createStation", {**STATION_INPUT, **change},
                             "station { id }")
        assert codes(payload) == [expected], change
        assert payload["station"] is None
    assert codes(await call(api, world, "driver1", "createStation",
                            {**STATION_INPUT, "cpId": "D-1"}, "station { id }")
                 ) == [(None, "FORBIDDEN")]


async def test_update_remove_station_and_connectors(api: Api, world: World) -> None:
    sid = gid("station", world.stations["A-002"].id)
    updated = await call(api, world, "op_a2", "updateStation",
                         {"id": sid, "name": "Renamed", "location": {"lat": 1, "lon": 2}},
                         "station { name location { lat lon address } }")
    assert updated["station"] == {"name": "Renamed",
                                  "location": {"lat": 1.0, "lon": 2.0, "address": None}}
    assert codes(await call(api, world, "op_b", "updateStation", {"id": sid, "name": "X"},
                            "station { id }")) == [("id", "NOT_FOUND")]
    # An empty password is refused; only null removes it.
    assert codes(await call(api, world, "op_a2", "updateStation", {"id": sid, "password": ""},
                            "station { id }")) == [("password", "TOO_SHORT")]
    for password, required in (("a-new-password", True), (None, False)):
        made = await call(api, world, "op_a2", "updateStation",
                          {"id": sid, "password": password}, "station { passwordRequired }")
        assert made["station"] == {"passwordRequired": required}
    assert codes(await call(api, world, "driver1", "updateStation", {"id": sid, "name": "X"},
                            "station { id }")) == [(None, "FORBIDDEN")]  # who they are
    assert codes(await call(api, world, "admin", "updateStation",
                            {"id": sid, "ownerId": gid("user", world.users["driver1"].id)},
                            "station { id }")) == [("ownerId", "INVALID")]
    added = await call(api, world, "op_a", "addConnector",
                       {"stationId": sid, "connectorId": 3, "type": "CHADEMO", "maxKw": 50},
                       "connector { id connectorId type station { cpId } }")
    assert added["connector"]["type"] == "CHADEMO"
    assert added["connector"]["station"] == {"cpId": "A-002"}
    assert codes(await call(api, world, "op_a", "addConnector",
                            {"stationId": sid, "connectorId": 3}, "connector { id }")
                 ) == [("connectorId", "DUPLICATE")]
    cid = added["connector"]["id"]
    changed = await call(api, world, "op_a", "updateConnector", {"id": cid, "maxKw": 62.5},
                         "connector { maxKw }")
    assert changed["connector"] == {"maxKw": 62.5}
    assert (await call(api, world, "op_a", "removeConnector", {"id": cid},
                       "connector { connectorId }"))["connector"] == {"connectorId": 3}
    busy = gid("station", world.stations["A-001"].id)  # has an active session
    assert codes(await call(api, world, "op_a", "removeStation", {"id": busy},
                            "station { id }")) == [("id", "IN_USE")]
    removed = await call(api, world, "op_a", "removeStation", {"id": sid}, "station { cpId }")
    assert removed["station"] == {"cpId": "A-002"}
    data = await api.gql('{ station(cpId: "A-002") { id } connectors(filter: {cpId: "A-002"}) '
                         '{ totalCount } sessions(filter: {cpId: "A-002"}) { totalCount } }',
                         as_user=world.users["admin"].id)
    # The station and its connectors are gone; its session history stays.
    assert data == {"station": None, "connectors": {"totalCount": 0},
                    "sessions": {"totalCount": 1}}


async def test_tariffs(api: Api, world: World) -> None:
    company = gid("company", world.companies["a"].id)
    station = gid("station", world.stations["A-001"].id)
    made = await call(api, world, "op_a", "setTariff",
                      {"companyId": company, "pricePerKwh": "0.39", "currency": "eur",
                       "taxRate": "0.19"}, "tariff { pricePerKwh currency taxRate }")
    assert made["tariff"] == {"pricePerKwh": "0.39", "currency": "EUR", "taxRate": "0.19"}
    q = '{ a: station(cpId: "A-001") { tariff { pricePerKwh } } ' \
        'b: station(cpId: "A-002") { tariff { pricePerKwh } } }'
    data = await api.gql(q, as_user=world.users["driver1"].id)
    assert data == {"a": {"tariff": {"pricePerKwh": "0.39"}},
                    "b": {"tariff": {"pricePerKwh": "0.39"}}}
    await call(api, world, "op_a", "setTariff",
               {"stationId": station, "pricePerKwh": "0.5900", "currency": "EUR"},
               "tariff { id }")
    data = await api.gql(q, as_user=world.users["driver1"].id)
    assert data["a"] == {"tariff": {"pricePerKwh": "0.59"}}  # the station's wins
    assert data["b"] == {"tariff": {"pricePerKwh": "0.39"}}
    assert codes(await call(api, world, "op_b", "setTariff",
                            {"stationId": station, "pricePerKwh": "1", "currency": "EUR"},
                            "tariff { id }")) == [("stationId", "NOT_FOUND")]
    assert codes(await call(api, world, "op_a", "setTariff",
                            {"pricePerKwh": "1", "currency": "EUR"}, "tariff { id }")
                 ) == [("stationId", "REQUIRED")]
    # Both given: a combination refused, not a field missing (s32).
    assert codes(await call(api, world, "op_a", "setTariff",
                            {"companyId": company, "stationId": station, "pricePerKwh": "1",
                             "currency": "EUR"}, "tariff { id }")
                 ) == [("stationId", "INVALID")]
    assert codes(await call(api, world, "op_a", "setTariff",
                            {"companyId": company, "pricePerKwh": "-1", "currency": "EUR"},
                            "tariff { id }")) == [("pricePerKwh", "OUT_OF_RANGE")]
    # Dated back, a version would re-price the sessions under way: operators price from
    # now on; an admin may correct history.
    backdated = {"stationId": station, "pricePerKwh": "99", "currency": "EUR",
                 "validFrom": "2020-01-01T00:00:00Z"}
    assert codes(await call(api, world, "op_a", "setTariff", backdated, "tariff { id }")
                 ) == [("validFrom", "OUT_OF_RANGE")]
    assert codes(await call(api, world, "admin", "setTariff", backdated, "tariff { id }")
                 ) == []
    assert codes(await call(api, world, "op_a", "setTariff",
                            {**backdated, "validFrom": "2099-01-01T00:00:00Z"},
                            "tariff { id }")) == []
    for currency in ("XYZ", "XAU", "EU"):  # unknown, a metal, not a code
        assert codes(await call(api, world, "op_a", "setTariff",
                                {"companyId": company, "pricePerKwh": "1",
                                 "currency": currency}, "tariff { id }")
                     ) == [("currency", "INVALID")], currency
    zero = await call(api, world, "op_a", "setTariff",
                      {"companyId": company, "pricePerKwh": "-0", "currency": "JPY"},
                      "tariff { pricePerKwh currency }")
    assert zero["tariff"] == {"pricePerKwh": "0", "currency": "JPY"}


async def test_idle_fees_are_set_shown_and_checked(api: Api, world: World) -> None:
    station = gid("station", world.stations["A-001"].id)
    base = {"stationId": station, "pricePerKwh": "0.39", "currency": "EUR"}
    shown = "tariff { idlePricePerMinute idleGraceMinutes idleFeeCap }"
    made = await call(api, world, "op_a", "setTariff",
                      {**base, "idlePricePerMinute": "0.10", "idleGraceMinutes": 15,
                       "idleFeeCap": "12.50"}, shown)
    assert made["tariff"] == {"idlePricePerMinute": "0.10", "idleGraceMinutes": 15,
                              "idleFeeCap": "12.50"}
    plain = await call(api, world, "op_a", "setTariff", base, shown)
    assert plain["tariff"] == {"idlePricePerMinute": "0.00", "idleGraceMinutes": 0,
                               "idleFeeCap": None}
    for bad, field in (({"idlePricePerMinute": "-0.01"}, "idlePricePerMinute"),
                       ({"idleGraceMinutes": -1}, "idleGraceMinutes"),
                       ({"idleGraceMinutes": 1441}, "idleGraceMinutes"),
                       ({"idleFeeCap": "-5"}, "idleFeeCap")):
        assert codes(await call(api, world, "op_a", "setTariff", {**base, **bad},
                                "tariff { id }")) == [(field, "OUT_OF_RANGE")], bad


async def test_price_bands_are_set_shown_and_checked(api: Api, world: World) -> None:
    station = gid("station", world.stations["A-001"].id)
    base = {"stationId": station, "pricePerKwh": "0.30", "currency": "EUR",
            "timeZone": "Europe/Berlin"}
    peak = {"days": ["mon", "TUE", "Wednesday"], "start": "07:00", "end": "22:00",
            "pricePerKwh": "0.45"}
    made = await call(api, world, "op_a", "setTariff", {**base, "energyBands": [peak]},
                      "tariff { timeZone energyBands { days start end pricePerKwh } }")
    assert made["tariff"] == {"timeZone": "Europe/Berlin", "energyBands": [{
        "days": ["MON", "TUE", "WED"], "start": "07:00", "end": "22:00",
        "pricePerKwh": "0.45"}]}
    for bands, zone, field, code in (
            ([{**peak, "pricePerKwh": "-1"}], "Europe/Berlin", "energyBands.0.pricePerKwh",
             "OUT_OF_RANGE"),
            ([{**peak, "days": ["MON", "XYZ"]}], "Europe/Berlin", "energyBands.0.days",
             "INVALID"),
            ([{**peak, "end": "06:00"}], "Europe/Berlin", "energyBands.0.end",
             "OUT_OF_RANGE"),
            ([peak], None, "timeZone", "REQUIRED")):
        payload = await call(api, world, "op_a", "setTariff",
                             {**base, "timeZone": zone, "energyBands": bands},
                             "tariff { id }")
        assert codes(payload) == [(field, code)], (bands, zone)
    # Every bad band and field at once, in input order, with the tariff's other fields:
    # both bands of an overlap are told.
    bad = [{**peak, "days": ["MON", "XYZ"], "pricePerKwh": "-1"},
           peak, {**peak, "days": ["WED"], "start": "21:00", "end": "23:00"},
           {**peak, "start": "9", "end": "08:00"}]
    payload = await call(api, world, "op_a", "setTariff",
                         {**base, "pricePerKwh": "-2", "energyBands": bad}, "tariff { id }")
    assert codes(payload) == [("pricePerKwh", "OUT_OF_RANGE"),
                              ("energyBands.0.days", "INVALID"),
                              ("energyBands.0.pricePerKwh", "OUT_OF_RANGE"),
                              ("energyBands.1", "OVERLAP"),
                              ("energyBands.2", "OVERLAP"),
                              ("energyBands.3.start", "INVALID")]


async def test_a_tariff_may_price_one_plug_standard_or_power_type(api: Api, world: World
                                                                   ) -> None:
    base = {"stationId": gid("station", world.stations["A-001"].id), "pricePerKwh": "0.69",
            "currency": "EUR"}
    made = await call(api, world, "op_a", "setTariff", {**base, "connectorType": "CCS2"},
                      "tariff { connectorType powerType }")
    assert made["tariff"] == {"connectorType": "CCS2", "powerType": None}
    made = await call(api, world, "op_a", "setTariff", {**base, "powerType": "DC"},
                      "tariff { connectorType powerType }")
    assert made["tariff"] == {"connectorType": None, "powerType": "DC"}
    assert codes(await call(api, world, "op_a", "setTariff",
                            {**base, "powerType": "AC", "connectorType": "CCS2"},
                            "tariff { id }")) == [("powerType", "INVALID")]


async def test_invalid_ids_are_user_errors(api: Api, world: World) -> None:
    payload = await call(api, world, "admin", "updateStation", {"id": "nonsense", "name": "x"},
                         "station { id }")
    assert codes(payload) == [("id", "INVALID_ID")]
    wrong_kind = gid("user", world.users["admin"].id)
    payload = await call(api, world, "admin", "updateStation", {"id": wrong_kind, "name": "x"},
                         "station { id }")
    assert codes(payload) == [("id", "INVALID_ID")]


async def test_password_resets_leave_a_marker_in_the_audit_log(api: Api, world: World
                                                               ) -> None:
    """QA: a reset's audit entry differed from what it changed only in ``updated_at``
    (secrets are left out of the images). It says that the password changed and, for a
    user, that their tokens were revoked; never the secret."""
    driver, station = world.users["driver_a"], world.stations["A-001"]
    user = await call(api, world, "op_a", "updateUser",
                      {"id": gid("user", driver.id), "password": "another fine secret"},
                      "user { id }")
    assert user["errors"] == []
    reset = await call(api, world, "op_a", "updateStation",
                       {"id": gid("station", station.id), "password": "new-station-pw"},
                       "station { id }")
    assert reset["errors"] == []
    renamed = await call(api, world, "op_a", "updateStation",
                         {"id": gid("station", station.id), "name": "Renamed"},
                         "station { id }")
    assert renamed["errors"] == []
    query = """query($e: ID!) { auditLog(first: 10, filter: {entityId: $e},
        orderBy: [{field: AT, direction: ASC}]) { nodes { action after } } }"""
    for record, kind, markers in ((driver, "user", [{"password_changed": True,
                                                      "tokens_revoked": True}]),
                                  (station, "station", [{"password_changed": True}, {}])):
        data = await api.gql(query, {"e": gid(kind, record.id)},
                             as_user=world.users["admin"].id)
        updates = [n["after"] for n in data["auditLog"]["nodes"] if n["action"] == "UPDATE"]
        assert [{k: v for k, v in after.items() if k in ("password_changed", "tokens_revoked")}
                for after in updates] == markers, kind
        assert "hash" not in str(updates) and "token_epoch" not in str(updates)


async def test_a_vehicle_is_handed_to_another_driver_with_its_history(
        api: Api, world: World, store) -> None:
    """QA (s17, a fleet): moving a van to another driver meant removing it, which took it
    off its past sessions. Handed over, it keeps them; its previous owner's cards let go
    of it; and whoever may not act for both owners may not hand it over."""
    van = gid("vehicle", world.vehicles["driver1"].id)
    driver2 = gid("user", world.users["driver2"].id)
    assert codes(await call(api, world, "driver1", "updateVehicle",
                            {"id": van, "ownerId": driver2}, "vehicle { id }")
                 ) == [("ownerId", "NOT_FOUND")]  # a driver hands nothing to others
    assert codes(await call(api, world, "admin", "updateVehicle",
                            {"id": van, "ownerId": None}, "vehicle { id }")
                 ) == [("ownerId", "REQUIRED")]
    same_plate = await call(api, world, "driver1", "addVehicle", {"licensePlate": "B-DR 2"},
                            "vehicle { id }")
    assert codes(await call(api, world, "admin", "updateVehicle",
                            {"id": same_plate["vehicle"]["id"], "ownerId": driver2},
                            "vehicle { id }")) == [("ownerId", "DUPLICATE")]
    moved = await call(api, world, "admin", "updateVehicle", {"id": van, "ownerId": driver2},
                       "vehicle { owner { name } }")
    assert moved["vehicle"] == {"owner": {"name": "Driver2"}} and moved["errors"] == []
    past = await store.inner.get_many(d.Session, [world.sessions["s2"].id])
    assert past[0].vehicle_id == world.vehicles["driver1"].id  # the van's history stays
    card = await store.inner.get_many(d.IdTag, [world.tags["driver1"].id])
    assert card[0].vehicle_id is None  # driver1's card no longer names driver2's van
    theirs = await api.gql("{ vehicles { nodes { licensePlate } } }",
                           as_user=world.users["driver2"].id)
    assert {"licensePlate": "B-DR 1"} in theirs["vehicles"]["nodes"]


async def test_a_vehicle_handed_over_stays_on_its_former_owners_sessions(
        api: Api, world: World) -> None:
    """QA s28 (org): `ownerId` promises a handed-over car's past sessions stay "with the
    drivers who charged them", but the driver who charged with it read their own
    sessions' `vehicle` as null from then on (a driver saw only the cars they own now).
    They read it as an operator of those sessions does, by plate, make and model:
    not its battery, its new owner, nor a way to change it; and it is not in their
    garage, nor in their top-level `vehicles` list (review r28-org: their apps pick a
    remote start's car from that list, and this one answers NOT_FOUND there)."""
    van = gid("vehicle", world.vehicles["driver1"].id)
    moved = await call(api, world, "admin", "updateVehicle",
                       {"id": van, "ownerId": gid("user", world.users["driver2"].id)},
                       "vehicle { id }")
    assert moved["errors"] == []
    driver1 = world.users["driver1"].id
    mine = await api.gql("""query($s: ID!, $v: ID!) {
        s: node(id: $s) { ... on Session { vehicle { licensePlate make batteryKwh
                                                     owner { name } } } }
        v: node(id: $v) { ... on Vehicle { licensePlate } }
        me { vehicles { totalCount } }
        vehicles { totalCount nodes { id } } }""",
        {"s": gid("session", world.sessions["s2"].id), "v": van}, as_user=driver1)
    assert mine["s"]["vehicle"] == {"licensePlate": "B-DR 1", "make": "VW",
                                    "batteryKwh": None, "owner": None}
    assert mine["v"] == {"licensePlate": "B-DR 1"}
    assert mine["me"]["vehicles"]["totalCount"] == 0  # no longer in their garage
    assert mine["vehicles"] == {"totalCount": 0, "nodes": []}  # nor in their list
    assert codes(await call(api, world, "driver1", "updateVehicle",
                            {"id": van, "make": "Mine"}, "vehicle { id }")
                 ) == [("id", "NOT_FOUND")]
    # A driver who never charged with it reads none of it.
    other = await api.gql("query($v: ID!) { node(id: $v) { id } }", {"v": van},
                          as_user=world.users["driver_a"].id)
    assert other["node"] is None


async def test_prices_are_written_as_amounts_are_whatever_was_typed(api: Api,
                                                                     world: World) -> None:
    """A price reads with its currency's minor digits at least, as every amount does
    (`Money.amount`, a cost's lines), and more only where it has them; a rate without
    trailing zeros. They were echoed as typed: "0.5900" on one station and "0.59" on the
    next, a session fee of "2" beside the "2.00" it bills (QA s26)."""
    station = gid("station", world.stations["A-001"].id)
    shown = ("tariff { pricePerKwh pricePerMinute sessionFee taxRate idlePricePerMinute "
             "idleFeeCap energyBands { pricePerKwh } }")
    typed = {"stationId": station, "currency": "EUR", "pricePerKwh": "0.5900",
             "pricePerMinute": "0.0005", "sessionFee": "2", "taxRate": "0.190",
             "idlePricePerMinute": "0.1", "idleFeeCap": "1E+1", "timeZone": "Europe/Berlin",
             "energyBands": [{"days": ["MON"], "start": "08:00", "end": "12:00",
                              "pricePerKwh": "0.300000"}]}
    made = await call(api, world, "op_a", "setTariff", typed, shown)
    assert made["tariff"] == {"pricePerKwh": "0.59", "pricePerMinute": "0.0005",
                              "sessionFee": "2.00", "taxRate": "0.19",
                              "idlePricePerMinute": "0.10", "idleFeeCap": "10.00",
                              "energyBands": [{"pricePerKwh": "0.30"}]}
    yen = await call(api, world, "op_a", "setTariff",
                     {"stationId": station, "currency": "JPY", "pricePerKwh": "30.00",
                      "sessionFee": "0", "taxRate": "0"},
                     "tariff { pricePerKwh sessionFee taxRate }")
    assert yen["tariff"] == {"pricePerKwh": "30", "sessionFee": "0", "taxRate": "0"}
