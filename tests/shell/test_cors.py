"""CHARGEGRAPH_CORS_ORIGINS: a browser app on another origin (a dev server on
http://localhost:3000) may call /graphql; without the setting no CORS header is sent."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient
from typer.testing import CliRunner

from chargegraph.app import create_app
from chargegraph.cli import app as cli
from chargegraph.headers import SECURITY_HEADERS
from chargegraph.security import Argon2Hasher
from chargegraph.settings import Settings
from domain.entities import Role
from domain.policy import SYSTEM

APP = "http://localhost:3000"
STRANGER = "https://evil.example"
QUERY = {"query": "{ __typename }"}


def preflight(client: TestClient, origin: str, headers: str = "authorization,content-type"
              ) -> httpx.Response:
    return client.options("/graphql", headers={
        "origin": origin, "access-control-request-method": "POST",
        "access-control-request-headers": headers})


def client_for(tmp_path: Path, origins: str) -> TestClient:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/cors.db",  # type: ignore[arg-type]
                        jwt_secret="c" * 40, ocpp_enabled=False, cors_origins=origins)
    return TestClient(create_app(settings, hasher=Argon2Hasher.fast()))


def test_an_allowed_origin_passes_the_preflight_and_reads_the_answer(tmp_path: Path) -> None:
    with client_for(tmp_path, f"{APP},https://dashboard.example") as client:
        allowed = preflight(client, APP)
        assert allowed.status_code == 200
        headers = allowed.headers
        assert headers["access-control-allow-origin"] == APP
        assert set(headers["access-control-allow-methods"].split(", ")) == {
            "GET", "POST", "OPTIONS"}
        assert {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")
                } >= {"authorization", "content-type"}
        assert "access-control-allow-credentials" not in headers
        answer = client.post("/graphql", json=QUERY, headers={"origin": APP})
        assert answer.status_code == 200 and answer.json() == {"data": {"__typename": "Query"}}
        assert answer.headers["access-control-allow-origin"] == APP
        assert "origin" in answer.headers["vary"].lower()  # caches keep origins apart
        # The security headers stay on every answer, the preflight's too.
        assert headers["x-content-type-options"] == "nosniff"


def test_another_origin_is_refused_and_its_answers_stay_unreadable(tmp_path: Path) -> None:
    with client_for(tmp_path, APP) as client:
        refused = preflight(client, STRANGER)
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        # A simple request still runs (CORS is the browser's rule), but the browser keeps
        # the answer from the page: no Access-Control-Allow-Origin.
        answer = client.post("/graphql", json=QUERY, headers={"origin": STRANGER})
        assert "access-control-allow-origin" not in answer.headers
        # A header the API does not take is refused in the preflight.
        assert preflight(client, APP, "x-custom").status_code == 400


def test_any_origin_without_credentials(tmp_path: Path) -> None:
    with client_for(tmp_path, "*") as client:
        allowed = preflight(client, STRANGER)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in allowed.headers
        answer = client.post("/graphql", json=QUERY, headers={"origin": STRANGER})
        assert answer.headers["access-control-allow-origin"] == "*"


def test_without_the_setting_there_is_no_cors(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARGEGRAPH_CORS_ORIGINS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert Settings().cors_origins == ""
    with client_for(tmp_path, "") as client:
        refused = preflight(client, APP)
        assert refused.status_code == 405
        assert "access-control-allow-origin" not in refused.headers
        answer = client.post("/graphql", json=QUERY, headers={"origin": APP})
        assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize(("given", "kept"), [
    (f" {APP}/ , HTTPS://Dashboard.Example:443", f"{APP},https://dashboard.example"),
    ("http://[::1]:3000,http://localhost:3000,http://localhost:3000",
     "http://[::1]:3000,http://localhost:3000"),
    ("https://bücher.example", "https://xn--bcher-kva.example"),
    (" * ", "*"),
    ("", ""),
])
def test_origins_are_kept_as_browsers_send_them(given: str, kept: str) -> None:
    """CORSMiddleware compares the Origin header with each entry as text: a trailing
    slash, capitals or a default port would never match."""
    assert Settings(cors_origins=given).cors_origins == kept


@pytest.mark.parametrize(("given", "line"), [
    ("localhost:3000", "'localhost:3000' is not an origin: use scheme://host[:port], e.g. "
                       "http://localhost:3000 (got 'localhost:3000')"),
    (f"{APP},https://app.example/path", "'https://app.example/path' is not an origin: use "
                                        "scheme://host[:port], e.g. http://localhost:3000 "
                                        f"(got '{APP},https://app.example/path')"),
    (f"*,{APP}", f"* (any origin) stands alone, not in a list (got '*,{APP}')"),
])
def test_a_wrong_origin_is_one_configuration_line(given: str, line: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARGEGRAPH_CORS_ORIGINS", given)
    refused = CliRunner().invoke(cli, ["serve"])
    assert refused.exit_code == 2
    assert refused.stderr == f"configuration error: CHARGEGRAPH_CORS_ORIGINS: {line}\n"


@pytest.mark.parametrize("wrong", ["null", "ftp://app.example", "http://*.example.com",
                                   "http://user:pw@app.example", "http://app.example:99999",
                                   "http://app.example?x=1", "file:///index.html"])
def test_what_is_no_origin_is_refused(wrong: str) -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        Settings(cors_origins=wrong)


def test_the_csv_exports_take_the_same_origins(tmp_path: Path) -> None:
    with client_for(tmp_path, APP) as client:
        allowed = client.options("/export/sessions.csv", headers={
            "origin": APP, "access-control-request-method": "GET",
            "access-control-request-headers": "authorization"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == APP
        answer = client.get("/export/sessions.csv", headers={"origin": APP})
        assert answer.status_code == 401  # no token: but the page may read why
        assert answer.headers["access-control-allow-origin"] == APP
        # An OPTIONS that is no preflight exports nothing.
        assert client.options("/export/sessions.csv").status_code == 405
        assert client.post("/export/sessions.csv").status_code == 405


EXPORTS = ["/export/me.json", "/export/users/x.json", "/export/sessions.csv",
           "/export/energy.csv"]


def export_preflight(client: TestClient, path: str, method: str) -> httpx.Response:
    return client.options(path, headers={
        "origin": APP, "access-control-request-method": method,
        "access-control-request-headers": "authorization"})


@pytest.mark.parametrize("path", EXPORTS)
def test_a_page_may_send_the_head_an_export_takes(tmp_path: Path, path: str) -> None:
    """A page's HEAD with its bearer token is preflighted (Authorization is no
    safelisted header): the preflight allowed /graphql's methods, not HEAD, so it was
    400 and the browser never sent the HEAD the export answers (review r26-api2)."""
    with client_for(tmp_path, APP) as client:
        answer = export_preflight(client, path, "HEAD")
        assert answer.status_code == 200, (answer.status_code, answer.text)
        assert set(answer.headers["access-control-allow-methods"].split(", ")) == {
            "GET", "HEAD", "OPTIONS"}
        head = client.head(path, headers={"origin": APP})
        assert head.status_code == 401  # no token: the export's own answer
        assert head.headers["access-control-allow-origin"] == APP


@pytest.mark.parametrize("path", EXPORTS)
def test_the_export_preflight_offers_no_method_the_export_refuses(tmp_path: Path,
                                                                   path: str) -> None:
    """The preflight of an export allowed POST (/graphql's methods), which the export
    then answered 405 METHOD_NOT_ALLOWED (review r26-api2): refused at the preflight."""
    with client_for(tmp_path, APP) as client:
        for method in ("POST", "PUT", "DELETE"):
            answer = export_preflight(client, path, method)
            assert answer.status_code == 400, method
            offered = {m.strip() for m in
                       answer.headers.get("access-control-allow-methods", "").split(",")}
            assert method not in offered
        # /graphql keeps its own: POST, not HEAD.
        assert preflight(client, APP).status_code == 200
        assert client.options("/graphql", headers={
            "origin": APP, "access-control-request-method": "HEAD"}).status_code == 400


@pytest.mark.parametrize("origins", ["", APP])
def test_other_methods_on_graphql_are_refused_as_the_api_refuses(tmp_path: Path,
                                                                 origins: str) -> None:
    """QA s21: PUT, DELETE and a plain OPTIONS got the router's text/plain 405, whose
    Allow offered a HEAD that was then refused too."""
    with client_for(tmp_path, origins) as client:
        for method in ("PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"):
            refused = client.request(method, "/graphql")
            assert refused.status_code == 405, method
            assert refused.headers["allow"] == "GET, POST", method
            if method != "HEAD":
                assert refused.headers["content-type"].startswith("application/json")
                assert refused.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize("origins", ["", APP])
def test_the_method_on_graphql_is_checked_before_the_accept_header(tmp_path: Path,
                                                                   origins: str) -> None:
    """QA s31: a HEAD or DELETE with ``Accept: text/html`` (a browser's) was told 406, as
    if another media type would do, not 405 with the methods that would. A preflight
    asked with that Accept is still the middleware's."""
    with client_for(tmp_path, origins) as client:
        for accept in ("text/html", "text/plain", "image/png"):
            for method in ("HEAD", "DELETE", "PUT", "PATCH", "OPTIONS"):
                refused = client.request(method, "/graphql", headers={"accept": accept})
                assert refused.status_code == 405, (method, accept)
                assert refused.headers["allow"] == "GET, POST", (method, accept)
                if method != "HEAD":
                    assert refused.json()["errors"][0]["extensions"]["code"] == \
                        "BAD_REQUEST"
            # POST is still told its Accept fits nothing (a GET asking for HTML gets
            # GraphiQL's page).
            assert client.post("/graphql", json=QUERY, headers={
                "accept": accept}).status_code == 406, accept
        if origins:
            asked = client.options("/graphql", headers={
                "origin": APP, "accept": "text/html", "access-control-request-method": "POST"})
            assert asked.status_code == 200
            assert asked.headers["access-control-allow-origin"] == APP


@pytest.mark.parametrize("origins", ["", APP])
@pytest.mark.parametrize("path", ["/export/sessions.csv", "/export/energy.csv",
                                  "/export/me.json", "/export/users/x.json"])
def test_other_methods_on_the_exports_are_refused_as_readme_says(
        tmp_path: Path, origins: str, path: str) -> None:
    """README: a method other than GET (or HEAD) on an export is a 405 with the API's
    error body, `METHOD_NOT_ALLOWED`; the routes took GET only, so the router answered
    first, in plain text, and no client ever read that code (QA s26)."""
    with client_for(tmp_path, origins) as client:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            refused = client.request(method, path)
            assert refused.status_code == 405, method
            assert refused.headers["allow"] == "GET, HEAD", method
            assert refused.headers["content-type"].startswith("application/json"), (
                method, refused.text)
            assert refused.json()["errors"][0]["code"] == "METHOD_NOT_ALLOWED", method
        # GET and HEAD still reach the export: without a token, its 401.
        assert client.get(path).status_code == 401
        assert client.head(path).status_code == 401


#: What a page reads of any answer without being told (the CORS-safelisted response
#: headers), and what is said to the browser, not to the page.
SAFELISTED = {"cache-control", "content-language", "content-length", "content-type",
              "expires", "last-modified", "pragma"}
FOR_THE_BROWSER = {name.decode() for name, _ in SECURITY_HEADERS} | {
    "vary", "date", "server", "transfer-encoding", "connection"}


def test_a_page_reads_the_headers_our_answers_carry(tmp_path: Path) -> None:
    """QA: no Access-Control-Expose-Headers, so a dashboard's fetch() could not read an
    export's file name (Content-Disposition), nor a 401's WWW-Authenticate or a 405's
    Allow. Every header the answers carry is exposed, but for the safelisted ones and
    those for the browser itself."""
    with client_for(tmp_path, APP) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        client.portal.call(lambda: services.accounts.create_user(  # type: ignore[union-attr]
            SYSTEM, email="admin@example.com", password="password-123", name="Admin",
            role=Role.ADMIN))
        login = client.post("/graphql", headers={"origin": APP}, json={"query": """mutation {
            login(email: "admin@example.com", password: "password-123") { token } }"""})
        token = login.json()["data"]["login"]["token"]
        export = client.get("/export/sessions.csv", headers={
            "origin": APP, "authorization": f"Bearer {token}"})
        assert export.status_code == 200
        assert export.headers["content-disposition"].startswith("attachment; filename=")
        # The 429 of an eleventh copy of one person's data within the hour: a page must
        # read its Retry-After to say when to try again (QA s26).
        mine = [client.get("/export/me.json", headers={
            "origin": APP, "authorization": f"Bearer {token}"}) for _ in range(11)]
        answers = [login, export,
                   client.get("/export/sessions.csv", headers={"origin": APP}),  # 401
                   client.post("/graphql", headers={"origin": APP, "authorization": "Bearer x"},
                               json=QUERY),  # 401
                   client.get("/graphql", params={"query": "mutation { logout }"},
                              headers={"origin": APP}),  # 405
                   client.post("/export/me.json", headers={"origin": APP}),  # 405
                   mine[-1]]  # 429
        assert [a.status_code for a in answers] == [200, 200, 401, 401, 405, 405, 429]
        assert answers[-1].json()["errors"][0]["code"] == "TOO_MANY_REQUESTS"
        for answer in answers:
            assert answer.headers["access-control-allow-origin"] == APP
            exposed = {h.strip().lower() for h in
                       answer.headers["access-control-expose-headers"].split(",")}
            carried = {h for h in answer.headers if not h.startswith("access-control-")}
            assert carried - SAFELISTED - FOR_THE_BROWSER <= exposed, answer.request.url
        assert {"content-disposition", "www-authenticate", "allow", "retry-after"} <= exposed
