"""Issue 12 item 1, delivery: a diagnostic setting's storage archive loses nothing and duplicates nothing.

Pulls run continuously while the test stops Azurite for a minute and starts it again on the same port and data,
then kills the server with SIGKILL mid-shipping and starts it again. In the end every Pull the audit log holds
since the setting was created is in the archive exactly once (by `recordId`), and the archive holds them in the
log's order. What makes it so: the sink's cursor is in the database and moves only after an append was answered;
an append whose answer was lost (Azurite or the server gone mid-request) is found again by `recordId` in the blob's
tail before anything is appended, and every append names the offset the blob must end at.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from azurite import Azurite, azurite_bin, start_azurite
from conftest import Arm, build_image, sp_create

REPO_CAT = "ContainerRegistryRepositoryEvents"
CONTAINER = f"insights-logs-{REPO_CAT.lower()}"


def restart_azurite(az: Azurite) -> None:
    """Azurite again on the same port, with the same data."""
    log = open(az.workdir / "azurite.log", "ab")
    az.proc = subprocess.Popen([azurite_bin(), "--blobHost", "127.0.0.1", "--blobPort", str(az.port), "--location",
                                str(az.workdir / "data"), "--skipApiVersionCheck", "--disableTelemetry", "--loose"],
                               stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", az.port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline and az.proc.poll() is None, "Azurite did not come back"
            time.sleep(0.1)


@pytest.fixture
def own_azurite():
    workdir = Path(tempfile.mkdtemp(prefix="moat-azurite-delivery-"))
    az = start_azurite(workdir)
    try:
        yield az
    finally:
        az.proc.kill()
        az.proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def archive_lines(az: Azurite) -> list[dict]:
    """Every record of the archive, blob by blob in name (hour) order, line by line."""
    r = az.request("GET", f"/{CONTAINER}", {"restype": "container", "comp": "list"})
    if r.status_code == 404:
        return []
    assert r.status_code == 200, r.text
    out = []
    for b in sorted(az.list_blobs(CONTAINER), key=lambda b: b["name"]):
        data = az.get_blob(CONTAINER, b["name"]).decode()
        assert data == "" or data.endswith("\n"), f"{b['name']}: a partial line"
        out += [json.loads(line) for line in data.splitlines()]
    return out


class Puller(threading.Thread):
    """Pulls a manifest in a loop until stopped; errors (the server down) are counted, not raised."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.stop_flag = threading.Event()
        self.ok = 0
        self.errors = 0
        self.marks: list[tuple[str, str]] = []

    def mark(self, what: str):
        self.marks.append((what, time.strftime("%H:%M:%S", time.gmtime())))

    def run(self):
        c = self.server.client()
        while not self.stop_flag.is_set():
            try:
                r = c.get_manifest("delivery/app", "v1")
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.errors += 1
                    c.reset()
            except Exception:
                self.errors += 1
                c.reset()
                time.sleep(0.2)
            time.sleep(0.02)


def test_storage_outage_and_kill9_lose_nothing_and_duplicate_nothing(moat_factory, own_azurite, tmp_path):
    az = own_azurite
    server = moat_factory(extra_args=["--sink-interval-ms", "200"])
    keyfile = tmp_path / "key"
    keyfile.write_text(az.key)
    server.moat("storage-account", "add", "--name", az.account, "--blob-endpoint", az.endpoint + "/",
                "--key-file", str(keyfile))
    sp = sp_create(server, "delivery", "Owner")
    arm = Arm(server, sp, api_version="2021-05-01-preview")
    r = arm.request("GET", f"/subscriptions/{arm.subscription}/providers/Microsoft.ContainerRegistry/registries",
                    api_version="2023-07-01")
    [reg] = [x for x in r.json()["value"] if x["name"] == "default"]
    sa = (f"/subscriptions/{arm.subscription}/resourceGroups/st/providers/Microsoft.Storage/storageAccounts/"
          f"{az.account}")
    r = arm.request("PUT", f"{reg['id']}/providers/Microsoft.Insights/diagnosticSettings/archive",
                    {"properties": {"storageAccountId": sa, "logs": [{"category": REPO_CAT, "enabled": True}]}})
    assert r.status_code == 200, r.text
    c = server.client()
    assert c.push_image("delivery/app", build_image(n_layers=1, seed="delivery"), tag="v1").status_code == 201

    puller = Puller(server)
    puller.start()
    try:
        time.sleep(3)
        assert archive_lines(az), "nothing archived before the outage"
        puller.mark("azurite stopping")
        # Storage gone for a minute under load: the records wait in the log. (SIGTERM: Azurite keeps what it
        # acknowledged only when it can save its metadata; a SIGKILLed Azurite forgets its last appends.)
        az.proc.terminate()
        az.proc.wait(30)
        time.sleep(60)
        restart_azurite(az)
        puller.mark("azurite back")
        time.sleep(4)
        puller.mark("kill -9")
        # The server killed mid-shipping, and started again on the same data.
        server.kill9()
        time.sleep(1)
        server.start()
        time.sleep(4)
    finally:
        puller.stop_flag.set()
        puller.join(30)
    assert puller.ok > 100, (puller.ok, puller.errors)

    pulls = [e for e in server.audit(operation="Pull") if e["Repository"] == "delivery/app"]
    deadline = time.monotonic() + 150
    while True:
        lines = [x for x in archive_lines(az) if x["operationName"] == "Pull"]
        if len(lines) >= len(pulls) or time.monotonic() > deadline:
            break
        time.sleep(1)
    ids = [x["recordId"] for x in lines]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate record(s)"
    missing = sorted({e["TimeGenerated"] for e in pulls} - {x["time"] for x in lines})
    assert len(lines) == len(pulls), (len(lines), len(pulls), missing[:20], puller.marks)
    seqs = [int(i.rsplit("/", 1)[1]) for i in ids]
    assert seqs == sorted(seqs), "the archive is out of the log's order"
    # The pull times the log holds are the archive's, one for one.
    assert sorted(x["time"] for x in lines) == sorted(e["TimeGenerated"] for e in pulls)
