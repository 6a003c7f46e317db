"""GraphiQL for sites that cannot reach its CDN.

The page Strawberry ships loads React, GraphiQL and its explorer plugin from unpkg.com,
each pinned to a version and an integrity hash (subresource integrity). Behind a firewall
that blocks the CDN (or with none at all) the page stays blank. ``chargegraph
graphiql-assets FOLDER`` fetches exactly those files from an npm registry (npm's own, or a
mirror the site runs), checks every one against the page's hash and writes them in the
CDN's layout (``react@18.2.0/umd/react.production.min.js``); with
``CHARGEGRAPH_GRAPHIQL_ASSETS=FOLDER`` the service then serves them itself under
``ASSETS_MOUNT`` and the page points there. The browser still checks the hashes.

From the npm registry rather than unpkg: the registry is what sites mirror (Artifactory,
Verdaccio, Nexus), and unpkg is only a view of it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import httpx
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from chargegraph.errors import ConfigError
from chargegraph.settings import Settings
from graph.http import IDE_CDN, ide_page

#: Where the service serves a fetched folder.
ASSETS_MOUNT = "/graphiql-assets"
NPM_REGISTRY = "https://registry.npmjs.org"

_TAG = re.compile(r"<(?:script|link)\b[^>]*>", re.IGNORECASE | re.DOTALL)
_URL = re.compile(r'\b(?:src|href)="' + re.escape(IDE_CDN) + r'(?P<spec>[^"]+)"')
_INTEGRITY = re.compile(r'\bintegrity="(?P<algorithm>sha256|sha384|sha512)-(?P<digest>[^"]+)"')
#: ``name@version/path``, the name possibly scoped (``@graphiql/plugin-explorer``).
_SPEC = re.compile(r"^(?P<package>(?:@[^/@]+/)?[^/@]+)@(?P<version>[^/]+)/(?P<path>.+)$")


class AssetError(Exception):
    """A file could not be fetched or is not the one the page expects."""


@dataclass(frozen=True)
class Asset:
    """One file of the GraphiQL page, as the page names and hashes it."""

    package: str
    version: str
    path: str
    algorithm: str
    digest: str

    @property
    def relative(self) -> str:
        """Its place under the CDN, and so in a fetched folder."""
        return f"{self.package}@{self.version}/{self.path}"

    def matches(self, data: bytes) -> bool:
        actual = base64.b64encode(hashlib.new(self.algorithm, data).digest()).decode()
        return actual == self.digest


def assets_of(html: str) -> list[Asset]:
    """Every CDN file ``html`` loads. One without an integrity hash is refused: a mirror
    could then serve anything, and nothing would tell."""
    assets: list[Asset] = []
    for tag in _TAG.findall(html):
        url = _URL.search(tag)
        if url is None:
            continue
        spec = _SPEC.match(url.group("spec"))
        integrity = _INTEGRITY.search(tag)
        if spec is None or integrity is None:
            raise AssetError(f"the GraphiQL page loads {IDE_CDN}{url.group('spec')} "
                             "without a pinned version and an integrity hash")
        path = PurePosixPath(spec.group("path"))
        if path.is_absolute() or ".." in path.parts:
            raise AssetError(f"refusing the asset path {spec.group('path')!r}")
        assets.append(Asset(spec.group("package"), spec.group("version"), str(path),
                            integrity.group("algorithm"), integrity.group("digest")))
    return assets


def page_assets() -> list[Asset]:
    """The files of the GraphiQL page this version of the service shows."""
    return assets_of(ide_page(None))


def problems_in(folder: Path, assets: Iterable[Asset]) -> list[str]:
    """What is missing from or altered in ``folder`` (empty: the page will load)."""
    found: list[str] = []
    for asset in assets:
        file = folder / asset.relative
        if not file.is_file():
            found.append(f"{asset.relative} is missing")
        elif not asset.matches(file.read_bytes()):
            found.append(f"{asset.relative} does not match the page's integrity hash")
    return found


def fetch(folder: Path, assets: list[Asset], registry: str = NPM_REGISTRY, *,
          client: httpx.Client | None = None) -> list[Path]:
    """Fetch ``assets`` into ``folder`` from the npm ``registry``: each package's tarball
    once, every file checked against its hash. All or nothing: the files are assembled
    beside ``folder`` and moved in only when every one is right. Returns the files written."""
    own = client is None
    http = client or httpx.Client(timeout=60, follow_redirects=True)
    try:
        tarballs: dict[tuple[str, str], tarfile.TarFile] = {}
        contents: dict[str, bytes] = {}
        for asset in assets:
            key = (asset.package, asset.version)
            if key not in tarballs:
                tarballs[key] = _tarball(http, registry, asset.package, asset.version)
            contents[asset.relative] = _member(tarballs[key], asset)
    finally:
        if own:
            http.close()
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(dir=folder, prefix=".fetching-") as staging:
        for relative, data in contents.items():
            staged = Path(staging) / relative
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.write_bytes(data)
        for relative in contents:
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(Path(staging) / relative, target)
            written.append(target)
    return written


def _tarball(http: httpx.Client, registry: str, package: str, version: str
             ) -> tarfile.TarFile:
    # The version's document names its tarball: mirrors put tarballs at URLs of their own.
    base = registry.rstrip("/")
    meta_url = f"{base}/{quote(package, safe='@')}/{quote(version)}"
    try:
        meta = http.get(meta_url)
        meta.raise_for_status()
        tarball_url = meta.json()["dist"]["tarball"]
        tarball = http.get(tarball_url)
        tarball.raise_for_status()
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
        raise AssetError(f"cannot fetch {package}@{version} from {registry}: {error}"
                         ) from None
    try:
        return tarfile.open(fileobj=io.BytesIO(tarball.content), mode="r:gz")
    except tarfile.TarError as error:
        raise AssetError(f"{package}@{version} from {registry} is not a tarball: {error}"
                         ) from None


def _member(tarball: tarfile.TarFile, asset: Asset) -> bytes:
    # npm packs everything under one top folder, ``package/`` for nearly every package.
    names = [member for member in tarball.getmembers() if member.isfile()
             and PurePosixPath(member.name).parts[1:] == PurePosixPath(asset.path).parts]
    if not names:
        raise AssetError(f"{asset.package}@{asset.version} has no {asset.path}")
    extracted = tarball.extractfile(names[0])
    data = extracted.read() if extracted is not None else b""
    if not asset.matches(data):
        raise AssetError(f"{asset.relative} does not match the page's integrity hash: "
                         "the registry served another file")
    return data


class _VersionedFiles(StaticFiles):
    """The folder's files. Every path names its package's version and the page pins its
    hash, so a browser may keep them (the service's default is ``no-store``)."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = "public, max-age=31536000, immutable"
        return response


def graphiql_assets_route(settings: Settings) -> tuple[Mount | None, str | None]:
    """The route serving ``CHARGEGRAPH_GRAPHIQL_ASSETS``'s folder and the URL the page
    loads its files from: (None, None) for the CDN, (None, url) for a mirror. A folder
    that would leave the page blank (missing or altered files) is a ConfigError."""
    if not settings.graphiql or settings.graphiql_assets is None:
        return None, None
    folder = settings.graphiql_assets_folder
    if folder is None:
        return None, settings.graphiql_assets
    found = problems_in(folder, page_assets())
    if found:
        raise ConfigError(f"CHARGEGRAPH_GRAPHIQL_ASSETS={folder}: {'; '.join(found[:3])}"
                          f"{' …' if len(found) > 3 else ''}; run `chargegraph "
                          f"graphiql-assets {folder}` where the npm registry is reachable")
    return Mount(ASSETS_MOUNT, app=_VersionedFiles(directory=folder)), ASSETS_MOUNT + "/"
