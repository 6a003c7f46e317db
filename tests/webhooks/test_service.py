"""The domain's webhook rules: who may keep one, which URLs are refused (server-side
request forgery), what is audited (never the secret), and the limits."""

from __future__ import annotations

import pytest

from domain import entities as d
from domain.errors import DomainError
from domain.policy import SYSTEM, Viewer
from domain.query import Eq, all_of
from domain.services.webhooks import MAX_WEBHOOKS_PER_OWNER, webhook_url
from tests.webhooks.conftest import World

REFUSED = {
    "http://127.0.0.1/hooks": "FORBIDDEN_ADDRESS",
    "http://127.1/hooks": "FORBIDDEN_ADDRESS",
    "http://2130706433/hooks": "FORBIDDEN_ADDRESS",
    "http://0x7f.0.0.1/hooks": "FORBIDDEN_ADDRESS",
    "http://[::1]/hooks": "FORBIDDEN_ADDRESS",
    "http://[::ffff:127.0.0.1]/hooks": "FORBIDDEN_ADDRESS",
    # IPv6 that carries an internal IPv4 address (NAT64, 6to4, IPv4-compatible and
    # -translated), and site-local: Python counts most of them as global.
    "http://[64:ff9b::a9fe:a9fe]/hooks": "FORBIDDEN_ADDRESS",
    "http://[64:ff9b:1::a00:5]/hooks": "FORBIDDEN_ADDRESS",
    "http://[2002:a9fe:a9fe::1]/hooks": "FORBIDDEN_ADDRESS",
    "http://[::7f00:1]/hooks": "FORBIDDEN_ADDRESS",
    "http://[::ffff:0:a00:5]/hooks": "FORBIDDEN_ADDRESS",
    "http://[fec0::1]/hooks": "FORBIDDEN_ADDRESS",
    "http://[fd00::1]/hooks": "FORBIDDEN_ADDRESS",
    "http://10.1.2.3/hooks": "FORBIDDEN_ADDRESS",
    "http://192.168.0.10:8080/hooks": "FORBIDDEN_ADDRESS",
    "http://169.254.169.254/latest/meta-data": "FORBIDDEN_ADDRESS",
    "http://100.64.0.1/hooks": "FORBIDDEN_ADDRESS",
    "http://0.0.0.0/hooks": "FORBIDDEN_ADDRESS",
    "http://224.0.0.1/hooks": "FORBIDDEN_ADDRESS",
    "http://localhost:8000/hooks": "FORBIDDEN_ADDRESS",
    "http://api.localhost/hooks": "FORBIDDEN_ADDRESS",
    "http://printer.local/hooks": "FORBIDDEN_ADDRESS",
    "https://user:secret@hooks.example.com/in": "INVALID",
    "https://token@hooks.example.com/in": "INVALID",
    "ftp://hooks.example.com/in": "UNSUPPORTED",
    "file:///etc/passwd": "UNSUPPORTED",
    "gopher://hooks.example.com": "UNSUPPORTED",
    "hooks.example.com/in": "UNSUPPORTED",
    "https:///in": "INVALID",
    "https://hooks.example.com:99999/in": "INVALID",
    # Port 0 was taken for no port and posted to 80 (QA s24).
    "https://hooks.example.com:0/in": "INVALID",
    "http://8.8.8.8:00/in": "INVALID",
    "https://hooks.example.com/in#frag": "INVALID",
    "https://hooks.example.com/a b": "INVALID",
    "": "REQUIRED",
}


@pytest.mark.parametrize("url", sorted(REFUSED))
def test_urls_that_could_reach_inside_or_leak_are_refused(url: str) -> None:
    with pytest.raises(DomainError) as refused:
        webhook_url(url, allow_private=False)
    assert (refused.value.field, refused.value.code) == ("url", REFUSED[url])
    if REFUSED[url] == "FORBIDDEN_ADDRESS":
        # QA (onboarding): the refusal did not say the deployment can allow such a
        # receiver, nor how.
        assert "CHARGEGRAPH_WEBHOOKS_ALLOW_PRIVATE=true" in refused.value.message


@pytest.mark.parametrize("url", ["https://hooks.example.com/in?src=cg",
                                 "http://8.8.8.8:8080/in", "https://[2606:4700::1111]/in",
                                 "HTTPS://Hooks.Example.com", "http://[64:ff9b::808:808]/in",
                                 "http://[2002:808:808::1]/in"])
def test_public_http_and_https_urls_are_taken(url: str) -> None:
    assert webhook_url(f"  {url} ", allow_private=False) == url


def test_private_addresses_are_taken_when_the_deployment_allows_them() -> None:
    assert webhook_url("http://127.0.0.1:9999/hooks", allow_private=True) \
        == "http://127.0.0.1:9999/hooks"
    with pytest.raises(DomainError):  # credentials and schemes stay refused
        webhook_url("http://a:b@127.0.0.1/", allow_private=True)
    with pytest.raises(DomainError):  # and port 0 (QA s24: posted to 80)
        webhook_url("http://127.0.0.1:0/hook", allow_private=True)


async def test_drivers_and_the_system_keep_no_webhooks(world: World) -> None:
    for viewer in (world.viewer("driver"), SYSTEM):
        with pytest.raises(DomainError) as refused:
            await world.services.webhooks.create_webhook(
                viewer, url="https://hooks.example.com", events=["session.ended"])
        assert refused.value.code == "FORBIDDEN"


async def test_an_operators_webhook_is_their_companys(world: World) -> None:
    hooks = world.services.webhooks
    created = await hooks.create_webhook(world.viewer("op"), url="https://hooks.example.com",
                                         events=["session.ended", "fault.reported",
                                                 "session.ended"])
    webhook = created.webhook
    assert webhook.company_id == world.companies["volt"].id
    assert webhook.owner_id == world.users["op"].id
    assert webhook.events == ["session.ended", "fault.reported"]  # canonical, once each
    assert created.secret.startswith("whsec_") and len(created.secret) > 40
    # A colleague manages it; another company's operator does not even find it.
    await hooks.update_webhook(world.viewer("op2"), webhook.id, description="billing")
    with pytest.raises(DomainError) as hidden:
        await hooks.update_webhook(world.viewer("op_other"), webhook.id, active=False)
    assert hidden.value.code == "NOT_FOUND"
    async def listed(who: str) -> list[str]:  # as the `webhooks` query reads them
        return [w.id for w in await world.store.find_all(
            d.Webhook, world.services.policy.scope(world.viewer(who), "webhook"))]
    assert await listed("op_other") == []
    assert await listed("admin") == [webhook.id]
    assert await listed("driver") == []
    # Its history is its company's to read: who created it, who changed it.
    for who, seen in (("op", 2), ("op2", 2), ("op_other", 0)):
        viewer = world.viewer(who)
        entries = await world.store.find_all(d.AuditEntry, all_of(
            world.services.policy.scope(viewer, "audit_entry"), Eq("entity_id", webhook.id)))
        assert len(entries) == seen, who
    # An operator of no company keeps their own, and reads their history too.
    solo = await world.services.accounts.create_user(
        SYSTEM, email="solo@example.com", password="password-123", name="solo",
        role=d.Role.OPERATOR)
    own = await hooks.create_webhook(Viewer.of(solo), url="https://hooks.example.com/solo",
                                     events=["session.ended"])
    entries = await world.store.find_all(d.AuditEntry, all_of(
        world.services.policy.scope(Viewer.of(solo), "audit_entry"),
        Eq("entity_id", own.webhook.id)))
    assert [e.action for e in entries] == [d.AuditAction.CREATE]


async def test_every_change_is_audited_without_the_secret(world: World) -> None:
    hooks = world.services.webhooks
    created = await hooks.create_webhook(world.viewer("admin"),
                                         url="https://hooks.example.com",
                                         events=["command.completed"])
    webhook = created.webhook
    assert webhook.company_id is None  # an admin's: sees everything
    await hooks.update_webhook(world.viewer("admin"), webhook.id,
                               url="https://hooks.example.org/v2")
    await hooks.remove_webhook(world.viewer("admin"), webhook.id)

    audit = await world.store.find_all(d.AuditEntry, Eq("entity_id", webhook.id))
    assert [a.action for a in sorted(audit, key=lambda a: a.at)] == [
        d.AuditAction.CREATE, d.AuditAction.UPDATE, d.AuditAction.DELETE]
    assert all(a.actor == world.users["admin"].id for a in audit)
    for entry in audit:
        for image in (entry.before, entry.after):
            assert image is None or "secret" not in image
    assert created.secret not in repr([(a.before, a.after) for a in audit])
    assert await world.store.get_many(d.Webhook, [webhook.id]) == [None]


async def test_bad_input_names_its_field(world: World) -> None:
    hooks = world.services.webhooks
    hooks.allow_private = False  # the default (CHARGEGRAPH_WEBHOOKS_ALLOW_PRIVATE unset)
    op = world.viewer("op")
    for kwargs, field, code in (
            ({"url": "http://10.0.0.1/in", "events": ["session.ended"]}, "url",
             "FORBIDDEN_ADDRESS"),
            ({"url": "https://h.example.com", "events": []}, "events", "REQUIRED"),
            ({"url": "https://h.example.com", "events": ["session.updated"]}, "events",
             "INVALID"),
            ({"url": "https://h.example.com", "events": ["fault.reported"],
              "description": "x" * 201}, "description", "TOO_LONG")):
        with pytest.raises(DomainError) as refused:
            await hooks.create_webhook(op, **kwargs)  # type: ignore[arg-type]
        assert (refused.value.field, refused.value.code) == (field, code)


async def test_a_company_keeps_a_bounded_number(world: World) -> None:
    hooks = world.services.webhooks
    for n in range(MAX_WEBHOOKS_PER_OWNER):
        owner = world.viewer("op" if n % 2 else "op2")
        await hooks.create_webhook(owner, url=f"https://h{n}.example.com",
                                   events=["fault.reported"])
    with pytest.raises(DomainError) as refused:
        await hooks.create_webhook(world.viewer("op"), url="https://more.example.com",
                                   events=["fault.reported"])
    assert refused.value.code == "LIMIT_REACHED"
    # Another company's count is its own.
    await hooks.create_webhook(world.viewer("op_other"), url="https://o.example.com",
                               events=["fault.reported"])
