"""A real Azurite (the Azure Storage emulator, installed by scripts/test into .tools/azurite) for the transfer tests.

`azurite` (session fixture) starts azurite-blob on a free loopback port with its data in a temporary directory and
kills it at the end. It gives the well-known development account and key, the account's blob endpoint
(path style: http://127.0.0.1:<port>/devstoreaccount1), and helpers to make a container, sign an account SAS, and
list or read blobs with the account key (hand-rolled Shared Key, so the fixture needs no Azure SDK).
A test that uses it FAILS when Azurite is missing: run scripts/test once.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import xml.etree.ElementTree as ET
from email.utils import formatdate
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
VERSION = "2021-08-06"


def azurite_bin() -> str:
    path = os.environ.get("MOAT_AZURITE") or str(ROOT / ".tools/azurite/node_modules/.bin/azurite-blob")
    if not Path(path).exists():
        pytest.fail(f"Azurite is not installed at {path}: run scripts/test once (it installs azurite@3.35.0 "
                    "into .tools/azurite)")
    return path


class Azurite:
    def __init__(self, port: int, workdir: Path, proc: subprocess.Popen):
        self.port = port
        self.workdir = workdir
        self.proc = proc
        self.account = ACCOUNT
        self.key = KEY
        self.endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"

    def container_uri(self, container: str) -> str:
        return f"{self.endpoint}/{container}"

    # -- Shared Key requests
    def request(self, method: str, path: str, query: dict | None = None, headers: dict | None = None,
                body: bytes = b"") -> requests.Response:
        """`path` is below the account (`/container[/blob]`); signed with the account key."""
        query = dict(query or {})
        headers = dict(headers or {})
        headers["x-ms-date"] = formatdate(usegmt=True)
        headers["x-ms-version"] = VERSION
        std = ["Content-Encoding", "Content-Language", "Content-Length", "Content-MD5", "Content-Type", "Date",
               "If-Modified-Since", "If-Match", "If-None-Match", "If-Unmodified-Since", "Range"]
        lower = {k.lower(): v for k, v in headers.items()}
        lines = [method]
        for h in std:
            if h == "Content-Length":
                lines.append(str(len(body)) if body else "")
            else:
                lines.append(lower.get(h.lower(), ""))
        ms = sorted((k, v.strip()) for k, v in lower.items() if k.startswith("x-ms-"))
        quoted = urllib.parse.quote(path)
        to_sign = "\n".join(lines) + "\n" + "".join(f"{k}:{v}\n" for k, v in ms)
        to_sign += f"/{ACCOUNT}/{ACCOUNT}{quoted}"
        for k in sorted(query):
            to_sign += f"\n{k.lower()}:{query[k]}"
        sig = base64.b64encode(hmac.new(base64.b64decode(KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
        headers["Authorization"] = f"SharedKey {ACCOUNT}:{sig}"
        url = f"http://127.0.0.1:{self.port}/{ACCOUNT}{quoted}"
        return requests.request(method, url, params=query, headers=headers, data=body, timeout=60)

    def create_container(self, name: str) -> str:
        r = self.request("PUT", f"/{name}", {"restype": "container"})
        assert r.status_code in (201, 409), r.text
        return self.container_uri(name)

    def list_blobs(self, container: str) -> list[dict]:
        """Every blob: name, size, content_md5, metadata, last_modified."""
        r = self.request("GET", f"/{container}", {"restype": "container", "comp": "list", "include": "metadata"})
        assert r.status_code == 200, r.text
        out = []
        for b in ET.fromstring(r.content).iter("Blob"):
            props = b.find("Properties")
            meta = b.find("Metadata")
            out.append({
                "name": b.findtext("Name"),
                "size": int(props.findtext("Content-Length")),
                "content_md5": props.findtext("Content-MD5") or None,
                "last_modified": props.findtext("Last-Modified"),
                "metadata": {m.tag: m.text or "" for m in meta} if meta is not None else {},
            })
        return out

    def get_blob(self, container: str, name: str) -> bytes:
        r = self.request("GET", f"/{container}/{name}")
        assert r.status_code == 200, r.text
        return r.content

    def put_blob(self, container: str, name: str, data: bytes, metadata: dict | None = None) -> None:
        headers = {"x-ms-blob-type": "BlockBlob",
                   "x-ms-blob-content-md5": base64.b64encode(hashlib.md5(data).digest()).decode()}
        for k, v in (metadata or {}).items():
            headers[f"x-ms-meta-{k}"] = v
        r = self.request("PUT", f"/{container}/{name}", headers=headers, body=data)
        assert r.status_code == 201, r.text

    def account_sas(self, permissions: str = "racwdl", hours: float = 24, key: str | None = None) -> str:
        """An account SAS for the blob service (`az storage account generate-sas --services b
        --resource-types sco`), with the leading '?', as ACR's docs store it in Key Vault."""
        expiry = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=hours)) \
            .strftime("%Y-%m-%dT%H:%M:%SZ")
        to_sign = f"{ACCOUNT}\n{permissions}\nb\nsco\n\n{expiry}\n\nhttps,http\n{VERSION}\n\n"
        sig = base64.b64encode(hmac.new(base64.b64decode(key or KEY), to_sign.encode(), hashlib.sha256)
                               .digest()).decode()
        return "?" + urllib.parse.urlencode({"sv": VERSION, "ss": "b", "srt": "sco", "sp": permissions,
                                             "se": expiry, "spr": "https,http", "sig": sig})


def start_azurite(workdir: Path) -> Azurite:
    binary = azurite_bin()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    log = open(workdir / "azurite.log", "wb")
    proc = subprocess.Popen([binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                             str(workdir / "data"), "--skipApiVersionCheck", "--disableTelemetry", "--loose"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"Azurite did not start on {port}:\n{(workdir / 'azurite.log').read_text()[-2000:]}")
            time.sleep(0.1)
    return Azurite(port, workdir, proc)


@pytest.fixture(scope="session")
def azurite():
    workdir = Path(tempfile.mkdtemp(prefix="moat-azurite-"))
    az = start_azurite(workdir)
    try:
        yield az
    finally:
        az.proc.kill()
        az.proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
