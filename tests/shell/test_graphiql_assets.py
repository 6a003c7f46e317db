"""GraphiQL without its CDN: the page's files fetched from an npm registry (a real HTTP
server on loopback standing in for one), checked against the page's hashes, and served by
the service itself."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient
from typer.testing import CliRunner

import chargegraph.graphiql_assets as assets_module
from chargegraph.app import create_app
from chargegraph.cli import app as cli
from chargegraph.errors import ConfigError
from chargegraph.graphiql_assets import (
    ASSETS_MOUNT,
    Asset,
    AssetError,
    assets_of,
    fetch,
    page_assets,
    problems_in,
)
from chargegraph.security import Argon2Hasher
from chargegraph.settings import Settings
from graph.http import IDE_CDN, ide_page

BROWSER = {"accept": "text/html"}
FILES = {("left-pad", "1.3.0", "index.min.js"): b"function leftPad(){}\n",
         ("@scope/widget", "2.0.1", "dist/style.css"): b".widget{color:red}\n"}


def sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def page(files: dict[tuple[str, str, str], bytes]) -> str:
    tags = [f'<script\n  crossorigin\n  src="{IDE_CDN}{name}@{version}/{path}"\n'
            f'  integrity="{sri(data)}"\n></script>'
            for (name, version, path), data in files.items()]
    return "<html><head>" + "\n".join(tags) + "</head></html>"


def tarball(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class Registry:
    """An npm registry's two routes: a version's document and its tarball."""

    def __init__(self, packages: dict[tuple[str, str], dict[str, bytes]]) -> None:
        self.packages = packages
        self.requests: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.requests.append(self.path)
                body, kind = registry.answer(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("content-type", kind)
                self.end_headers()
                self.wfile.write(body or b"not found")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, path: str) -> tuple[bytes | None, str]:
        for (name, version), files in self.packages.items():
            encoded = name.replace("/", "%2F")
            if path == f"/{encoded}/{version}":
                tarball_url = f"{self.url}/tarballs/{encoded}-{version}.tgz"
                return (json.dumps({"name": name, "version": version,
                                    "dist": {"tarball": tarball_url}}).encode(),
                        "application/json")
            if path == f"/tarballs/{encoded}-{version}.tgz":
                return tarball(files), "application/octet-stream"
        return None, "text/plain"


@pytest.fixture
def registry() -> Iterator[Registry]:
    served = Registry({(name, version): {path: data}
                       for (name, version, path), data in FILES.items()})
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


def test_the_real_page_pins_every_file_it_loads() -> None:
    assets = page_assets()
    assert {a.package for a in assets} >= {"react", "react-dom", "graphiql",
                                           "@graphiql/plugin-explorer"}
    assert all(a.version[0].isdigit() and a.algorithm.startswith("sha") for a in assets)
    assert ide_page(None).count(IDE_CDN) == len(assets)
    local = ide_page("/graphiql-assets")
    assert IDE_CDN not in local
    assert all(f'"/graphiql-assets/{a.relative}"' in local for a in assets)


def test_a_cdn_file_without_an_integrity_hash_is_refused() -> None:
    with pytest.raises(AssetError, match="integrity"):
        assets_of(f'<script src="{IDE_CDN}react@18.2.0/umd/react.js"></script>')
    with pytest.raises(AssetError, match="refusing"):
        assets_of(f'<script src="{IDE_CDN}react@1/../../etc/passwd" '
                  f'integrity="{sri(b"")}"></script>')


def test_fetch_writes_every_file_in_the_cdn_layout(registry: Registry, tmp_path: Path) -> None:
    assets = assets_of(page(FILES))
    written = fetch(tmp_path / "out", assets, registry.url)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == [
        "@scope/widget@2.0.1/dist/style.css", "left-pad@1.3.0/index.min.js"]
    assert (tmp_path / "out/left-pad@1.3.0/index.min.js").read_bytes() == FILES[
        ("left-pad", "1.3.0", "index.min.js")]
    assert problems_in(tmp_path / "out", assets) == []
    # The scoped name travels encoded, as npm clients send it; nothing is left staged.
    assert "/@scope%2Fwidget/2.0.1" in registry.requests
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


def test_a_file_that_is_not_the_pinned_one_writes_nothing(registry: Registry,
                                                          tmp_path: Path) -> None:
    altered = dict(FILES)
    altered[("@scope/widget", "2.0.1", "dist/style.css")] = b".widget{color:blue}\n"
    assets = assets_of(page(altered))  # the page pins another file than the registry has
    with pytest.raises(AssetError, match="integrity"):
        fetch(tmp_path / "out", assets, registry.url)
    assert not (tmp_path / "out/left-pad@1.3.0/index.min.js").exists()
    missing = assets_of(page({("left-pad", "1.3.0", "other.js"): b"x"}))
    with pytest.raises(AssetError, match=r"has no other\.js"):
        fetch(tmp_path / "out", missing, registry.url)
    unknown = assets_of(page({("nope", "1.0.0", "a.js"): b"x"}))
    with pytest.raises(AssetError, match=r"cannot fetch nope@1\.0\.0"):
        fetch(tmp_path / "out", unknown, registry.url)


def test_the_command_fetches_the_pages_files(registry: Registry, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets_module, "page_assets", lambda: assets_of(page(FILES)))
    runner = CliRunner()
    done = runner.invoke(cli, ["graphiql-assets", str(tmp_path / "g"), "--registry",
                               registry.url])
    assert done.exit_code == 0, done.output
    assert "CHARGEGRAPH_GRAPHIQL_ASSETS=" in done.output
    assert (tmp_path / "g/@scope/widget@2.0.1/dist/style.css").is_file()
    failed = runner.invoke(cli, ["graphiql-assets", str(tmp_path / "h"), "--registry",
                                 registry.url + "/missing"])
    assert failed.exit_code == 1 and "error: cannot fetch" in failed.output


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"database_url": f"sqlite:///{tmp_path}/app.db",
                                 "ocpp_enabled": False, **overrides}
    return Settings(**values)  # type: ignore[arg-type]


def write_folder(folder: Path, assets: list[Asset],
                 files: dict[tuple[str, str, str], bytes]) -> None:
    for (name, version, path), data in files.items():
        target = folder / f"{name}@{version}/{path}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def test_the_service_serves_a_fetched_folder(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assets = assets_of(page(FILES))
    monkeypatch.setattr(assets_module, "page_assets", lambda: assets)
    folder = tmp_path / "assets"
    write_folder(folder, assets, FILES)
    app = create_app(settings_for(tmp_path, graphiql_assets=str(folder)),
                     hasher=Argon2Hasher.fast())
    with TestClient(app) as client:
        html = client.get("/graphql", headers=BROWSER).text
        assert IDE_CDN not in html and f'"{ASSETS_MOUNT}/graphiql@' in html
        file = client.get(f"{ASSETS_MOUNT}/@scope/widget@2.0.1/dist/style.css")
        assert file.status_code == 200 and file.content == b".widget{color:red}\n"
        assert file.headers["content-type"].startswith("text/css")
        assert "immutable" in file.headers["cache-control"]
        assert client.get(f"{ASSETS_MOUNT}/../app.db").status_code == 404


def test_a_folder_that_would_leave_the_page_blank_stops_the_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assets = assets_of(page(FILES))
    monkeypatch.setattr(assets_module, "page_assets", lambda: assets)
    folder = tmp_path / "assets"
    write_folder(folder, assets, {**FILES, ("left-pad", "1.3.0", "index.min.js"): b"evil"})
    with pytest.raises(ConfigError, match=r"left-pad@1\.3\.0/index\.min\.js does not match.*"
                                          r"chargegraph graphiql-assets"):
        create_app(settings_for(tmp_path, graphiql_assets=str(folder)))
    with pytest.raises(ConfigError, match="is missing"):
        create_app(settings_for(tmp_path, graphiql_assets=str(tmp_path / "empty")))


def test_a_mirror_url_is_where_the_page_loads_from(tmp_path: Path) -> None:
    mirror = "https://cdn.internal.example/unpkg"
    app = create_app(settings_for(tmp_path, graphiql_assets=mirror), hasher=Argon2Hasher.fast())
    with TestClient(app) as client:
        html = client.get("/graphql", headers=BROWSER).text
        assert IDE_CDN not in html and f'"{mirror}/react@' in html
        assert client.get(f"{ASSETS_MOUNT}/x.js").status_code == 404
    with pytest.raises(ValidationError, match="http"):
        settings_for(tmp_path, graphiql_assets="ftp://mirror/unpkg")
