"""Blobs in Azure Blob Storage: `moat serve` with MOAT_STORAGE_URL=az://<container> on a real Azurite.

skopeo pushes and pulls the same digests and the bytes are in the container (markers under blobs/, objects under
data/), not in the data directory; a chunked upload goes PATCH, PATCH (after a kill -9, on a process that never
saw the first chunk), PUT; a 1 GiB blob goes up and back down with the server's memory flat; a blob acknowledged
with 201 survives a kill -9; an abandoned upload and an unreferenced blob are swept by `moat gc`; storage down at
start is a non-zero exit naming it, and down while serving a 503 with Retry-After, after which the server
recovers by itself.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from azurite import start_azurite
from conftest import build_image, moat_bin, read_oci_layout_manifest, require_tool, run, sha256, write_oci_layout

OCTET = {"Content-Type": "application/octet-stream"}


def storage_env(az, container: str) -> dict:
    return {"MOAT_STORAGE_URL": f"az://{container}", "AZURE_STORAGE_USE_EMULATOR": "true",
            "AZURITE_BLOB_STORAGE_URL": f"http://127.0.0.1:{az.port}"}


def names(az, container: str) -> list[str]:
    return [b["name"] for b in az.list_blobs(container)]


def stored(az, container: str, digest: str) -> bool:
    hexd = digest.split(":", 1)[1]
    return any(n.startswith(f"blobs/sha256/{hexd}/") for n in names(az, container))


def upload_id(location: str) -> str:
    return location.rstrip("/").split("/")[-1].split("?")[0]


@pytest.fixture
def az_moat(azurite, moat_factory):
    """A plain-HTTP Moat whose blobs live in a fresh Azurite container."""
    container = f"moat{random.randrange(10**9)}"
    azurite.create_container(container)
    s = moat_factory(https=False, env=storage_env(azurite, container))
    s.container = container
    return s


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """The server's peak resident memory while a block runs."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.1)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def test_skopeo_push_and_pull_through_azure_blob_storage(azurite, moat_factory, tmp_path):
    container = "moat-skopeo"
    azurite.create_container(container)
    s = moat_factory(https=True, env=storage_env(azurite, container))
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(s.ca_path, certs / "ca.crt")
    creds = f"admin:{s.admin_password}"
    skopeo = require_tool("skopeo")
    img = build_image(n_layers=3, layer_size=300 * 1024, seed="objstore")
    src = write_oci_layout(tmp_path / "src", img, "latest")
    ref = f"docker://{s.login_server}/objstore/hello:1"
    run([skopeo, "copy", "--preserve-digests", "--dest-cert-dir", str(certs), "--dest-creds", creds,
         f"oci:{src}:latest", ref], timeout=180)
    back = tmp_path / "back"
    run([skopeo, "copy", "--src-cert-dir", str(certs), "--src-creds", creds, ref, f"oci:{back}:latest"],
        timeout=180)
    digest, data = read_oci_layout_manifest(back, "latest")
    assert digest == img.manifest_digest and data == img.manifest_bytes
    for d, blob in img.layers:
        assert (back / "blobs" / "sha256" / d.split(":", 1)[1]).read_bytes() == blob
        # The bytes are in the container, under their digest's marker, and not in the data directory.
        assert stored(azurite, container, d), names(azurite, container)
    local = s.data_dir / "storage" / "blobs"
    assert not local.exists() or not any(p.is_file() for p in local.rglob("*"))


def test_chunked_upload_continues_on_a_process_that_never_saw_the_first_chunk(az_moat, azurite):
    s, c = az_moat, az_moat.client()
    rnd = random.Random(11)
    data = rnd.randbytes(12 * 1024 * 1024 + 333)
    cut = 5 * 1024 * 1024 + 17
    r = c.start_upload("objstore/chunked")
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    r = c.request("PATCH", loc, repo="objstore/chunked", data=data[:cut],
                  headers={**OCTET, "Content-Range": f"0-{cut - 1}"})
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == f"0-{cut - 1}"

    # The process that took chunk 1 is gone without a word; the next one knows the upload only from its row.
    s.kill9()
    s.start()
    c = s.client()
    r = c.request("GET", loc, repo="objstore/chunked")
    assert r.status_code == 204 and r.headers["Range"] == f"0-{cut - 1}", (r.status_code, r.headers)
    # A chunk that starts anywhere else is refused with where to go on from.
    r = c.request("PATCH", loc, repo="objstore/chunked", data=b"zz",
                  headers={**OCTET, "Content-Range": f"{cut + 5}-{cut + 6}"})
    assert r.status_code == 416, r.text
    mid = 9 * 1024 * 1024
    r = c.request("PATCH", loc, repo="objstore/chunked", data=data[cut:mid],
                  headers={**OCTET, "Content-Range": f"{cut}-{mid - 1}"})
    assert r.status_code == 202, r.text
    digest = sha256(data)
    r = c.request("PUT", f"{loc}{'&' if '?' in loc else '?'}digest={digest}", repo="objstore/chunked",
                  data=data[mid:], headers=OCTET)
    assert r.status_code == 201, r.text
    g = c.get_blob("objstore/chunked", digest)
    assert g.status_code == 200 and g.content == data
    g = c.get_blob("objstore/chunked", digest, headers={"Range": "bytes=1000-1999"})
    assert g.status_code == 206 and g.content == data[1000:2000]
    assert stored(azurite, s.container, digest)


def test_a_1gib_blob_goes_up_and_down_with_memory_flat(az_moat):
    s, c = az_moat, az_moat.client()
    size, block = 1 << 30, 1 << 20
    seed = random.Random(5).randbytes(block)

    def chunks():
        for i in range(size // block):
            yield i.to_bytes(8, "big") + seed[8:]

    h = hashlib.sha256()
    for ch in chunks():
        h.update(ch)
    digest = "sha256:" + h.hexdigest()
    baseline = rss_kib(s.proc.pid)
    r = c.start_upload("objstore/big")
    loc = r.headers["Location"]
    t0 = time.monotonic()
    with RssSampler(s.proc.pid) as up:
        r = c.request("PUT", f"{loc}{'&' if '?' in loc else '?'}digest={digest}", repo="objstore/big",
                      data=chunks(), headers=OCTET)
    push_s = time.monotonic() - t0
    assert r.status_code == 201, r.text
    t0 = time.monotonic()
    got = hashlib.sha256()
    n = 0
    with RssSampler(s.proc.pid) as down:
        g = c.get_blob("objstore/big", digest, stream=True)
        assert g.status_code == 200, g.text
        for part in g.iter_content(1 << 20):
            got.update(part)
            n += len(part)
    pull_s = time.monotonic() - t0
    assert n == size and "sha256:" + got.hexdigest() == digest
    print(f"1 GiB via Azurite: push {push_s:.1f} s ({size / push_s / 2**20:.0f} MiB/s), pull {pull_s:.1f} s "
          f"({size / pull_s / 2**20:.0f} MiB/s); RSS baseline {baseline // 1024} MiB, peak push "
          f"{up.peak // 1024} MiB, peak pull {down.peak // 1024} MiB")
    # A few blocks in flight and a small read queue, whatever the blob's size.
    assert up.peak - baseline < 200 * 1024, (baseline, up.peak)
    assert down.peak - baseline < 200 * 1024, (baseline, down.peak)


def test_a_blob_acknowledged_with_201_survives_kill9(az_moat):
    s, c = az_moat, az_moat.client()
    data = random.Random(3).randbytes(3 * 1024 * 1024)
    digest = c.push_blob("objstore/durable", data)
    s.kill9()
    s.start()
    g = s.client().get_blob("objstore/durable", digest)
    assert g.status_code == 200 and g.content == data


def test_an_abandoned_upload_and_an_unreferenced_blob_are_swept_by_gc(az_moat, azurite):
    s, c = az_moat, az_moat.client()
    orphan = random.Random(8).randbytes(200 * 1024)
    d = c.push_blob("objstore/gc", orphan)
    r = c.start_upload("objstore/gc")
    loc = r.headers["Location"]
    r = c.request("PATCH", loc, repo="objstore/gc", data=b"x" * 300_000,
                  headers={**OCTET, "Content-Range": "0-299999"})
    assert r.status_code == 202, r.text
    uid = upload_id(loc)
    assert f"data/{uid}" in names(azurite, s.container)
    assert stored(azurite, s.container, d)

    out = s.moat("gc", "-o", "json", "--grace", "0", "--upload-ttl-secs", "0", timeout=120).stdout
    assert '"upload"' in out and d in out, out
    left = names(azurite, s.container)
    assert f"data/{uid}" not in left, left
    assert not stored(azurite, s.container, d), left
    assert left == [], left
    assert c.request("GET", loc, repo="objstore/gc").status_code == 404


def test_storage_down_at_start_is_a_nonzero_exit_naming_it(tmp_path):
    dead = 1
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOAT_")}
    env.update({"MOAT_ADMIN_PASSWORD": "x" * 16, "MOAT_STORAGE_URL": "az://nowhere",
                "AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": f"http://127.0.0.1:{dead}"})
    data = tmp_path / "data"
    p = subprocess.run([moat_bin(), "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0",
                        "--insecure-http"], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode != 0
    assert "az://nowhere" in p.stderr + p.stdout, p.stderr[-2000:]


def test_storage_down_while_serving_is_503_with_retry_after_then_recovers(moat_factory, tmp_path):
    az = start_azurite(tmp_path)
    try:
        az.create_container("flaky")
        s = moat_factory(https=False, env=storage_env(az, "flaky"))
        c = s.client()
        data = random.Random(4).randbytes(500 * 1024)
        d = c.push_blob("objstore/flaky", data)
        # Stopped as an operator would (Azurite saves its metadata on SIGINT; SIGKILL would lose the container).
        az.proc.send_signal(signal.SIGINT)
        az.proc.wait(30)
        g = c.get_blob("objstore/flaky", d)
        assert g.status_code == 503, (g.status_code, g.text[:300])
        assert g.json()["errors"][0]["code"] == "UNAVAILABLE"
        assert int(g.headers["Retry-After"]) > 0
        r = c.start_upload("objstore/flaky")
        assert r.status_code == 503 and "Retry-After" in r.headers, (r.status_code, r.text[:300])
        # Azurite comes back on the same port with the same data: the server goes on by itself.
        log = open(tmp_path / "azurite2.log", "wb")
        az.proc = subprocess.Popen([az.proc.args[0], "--blobHost", "127.0.0.1", "--blobPort", str(az.port),
                                    "--location", str(tmp_path / "data"), "--skipApiVersionCheck",
                                    "--disableTelemetry", "--loose"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            g = c.get_blob("objstore/flaky", d)
            if g.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert g.status_code == 200 and g.content == data
        d2 = c.push_blob("objstore/flaky", b"after" * 30_000)
        assert c.get_blob("objstore/flaky", d2).content == b"after" * 30_000
    finally:
        az.proc.kill()
        az.proc.wait(10)
