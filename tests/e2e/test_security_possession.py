"""Proof of possession (issue 9, finding 1; DESIGN principle 6): a blob is linked into a registry only from bytes
that arrived and were hashed, by a mount inside one registry, or on the gate's permit. The attack: an attacker who
can write to one registry and knows a protected registry's layer digests serves a made-up manifest naming them
from a registry of his own and imports it into his registry, hoping the server links the bytes it already holds.

Checked here with the real binary, importImage over ARM and `moat acr import`, and a fake remote registry in
Python (http.server on 127.0.0.1) whose blob GETs answer 404 or wrong bytes:
- the target ends with nothing: no tag, no manifest, every digest `HEAD` is 404 `BLOB_UNKNOWN`;
- the error is the same whether the digests are held by the protected registry, were deleted from its repository
  (bytes still on disk), or exist nowhere: the import is no existence oracle;
- a remote import downloads every blob the target registry does not link already (blobs held only by another
  registry included), and only those.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import threading
import time

import pytest

from conftest import (OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, Arm, assert_arm_error, make_layer,
                      protect_registry, sha256, sp_create)
from test_moat_acr import Cli, assert_error

LAYER = 100 * 1024  # above the 64 KiB kept in the metadata store: files under storage/blobs
DIGEST = re.compile(r"sha(256|512):[0-9a-f]+")


def random_image(n_layers: int = 2) -> tuple[dict[str, bytes], bytes, bytes]:
    """(blobs by digest, config, manifest) of an OCI image with incompressible layers."""
    blobs, layers = {}, []
    for i in range(n_layers):
        gz, _ = make_layer({f"secret{i}.bin": os.urandom(LAYER)})
        blobs[sha256(gz)] = gz
        layers.append((sha256(gz), len(gz)))
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": os.urandom(8).hex()}).encode()
    blobs[sha256(config)] = config
    manifest = made_up_manifest((sha256(config), len(config)), layers)
    return blobs, config, manifest


def made_up_manifest(config: tuple[str, int], layers: list[tuple[str, int]]) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config[0], "size": config[1]},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": d, "size": n} for d, n in layers],
    }).encode()


class FakeRemote:
    """A registry serving one manifest under `repo:tag` (and its digest). Blob GETs answer from `blobs`; a digest
    not there gets 404 (`blob_mode="404"`) or random bytes of the size the manifest claims (`"wrong"`). Every blob
    GET is counted in `blob_gets` by digest."""

    def __init__(self, repo: str, tag: str, manifest: bytes, blobs: dict[str, bytes] | None = None,
                 blob_mode: str = "404"):
        self.repo, self.tag, self.manifest = repo, tag, manifest
        self.blobs, self.blob_mode = dict(blobs or {}), blob_mode
        parsed = json.loads(manifest)
        self.sizes = {d["digest"]: d["size"] for d in [parsed["config"], *parsed["layers"]]}
        self.blob_gets: dict[str, int] = {}
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, status: int, body: bytes, ctype: str = "application/json", extra=None, head=False):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def do_HEAD(self):
                self.do_GET(head=True)

            def do_GET(self, head=False):
                path = self.path.split("?", 1)[0]
                if path in ("/v2", "/v2/"):
                    return self.send(200, b"{}", head=head)
                m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", path)
                if not m or m.group(1) != fake.repo:
                    return self.send(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}', head=head)
                kind, ref = m.group(2), m.group(3)
                if kind == "manifests":
                    if ref not in (fake.tag, sha256(fake.manifest)):
                        return self.send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}',
                                         head=head)
                    return self.send(200, fake.manifest, OCI_MANIFEST,
                                     {"Docker-Content-Digest": sha256(fake.manifest)}, head)
                if not head:
                    fake.blob_gets[ref] = fake.blob_gets.get(ref, 0) + 1
                data = fake.blobs.get(ref)
                if data is None and fake.blob_mode == "wrong" and ref in fake.sizes:
                    data = os.urandom(fake.sizes[ref])
                if data is None:
                    return self.send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}', head=head)
                return self.send(200, data, "application/octet-stream", head=head)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, client_address: None
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fakes():
    made = []

    def make(*a, **kw) -> FakeRemote:
        f = FakeRemote(*a, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


class Env:
    """One HTTPS server, an Owner SP with an ARM session and a logged-in `moat` CLI."""

    def __init__(self, server, tmp_path):
        self.server = server
        self.owner = sp_create(server, "possession-owner", "Owner")
        self.arm = Arm(server, self.owner)
        self.cli = Cli(server, tmp_path / "cli")
        self.cli.login(self.owner)

    def create(self, name: str) -> None:
        r = self.arm.put_registry(name, {"location": "local", "sku": {"name": "Premium"},
                                         "properties": {"adminUserEnabled": False}})
        assert r.status_code in (200, 201), f"PUT registry {name}: {r.status_code} {r.text[:300]}"

    def client(self, name: str):
        return self.server.client(host=f"{name}.localhost:{self.server.port}")

    def import_arm(self, target: str, uri: str, image: str, tag: str):
        """importImage over raw ARM, polled to its end: the final response."""
        body = {"source": {"registryUri": f"http://{uri}", "sourceImage": image}, "targetTags": [tag]}
        r = self.arm.request("POST", self.arm.registry_path(target) + "/importImage", body)
        loc = r.headers.get("Location")
        for _ in range(600):
            if r.status_code != 202:
                return r
            loc = r.headers.get("Location") or loc
            time.sleep(0.1)
            r = self.arm.session.get(loc, headers={"Authorization": "Bearer " + self.arm.token}, timeout=60)
        raise AssertionError(f"the import never finished: {r.text[:300]}")

    def import_cli(self, target: str, uri: str, image: str, tag: str):
        return self.cli("acr", "import", "-n", target, "--source", f"http://{uri}/{image}", "-t", tag,
                        rc=None, timeout=120)


def assert_target_empty(client, repo: str, tag: str, digests) -> None:
    """No tag, no manifest, no blob linked: every digest is 404 BLOB_UNKNOWN."""
    r = client.get_manifest(repo, tag)
    assert r.status_code == 404, f"the failed import left a tag: {r.status_code} {r.text[:200]}"
    for dg in digests:
        r = client.head_blob(repo, dg)
        assert r.status_code == 404, f"{dg} is linked into {repo}: {r.status_code}"
        r = client.get_blob(repo, dg)
        assert r.status_code == 404 and "BLOB_UNKNOWN" in r.text, f"{dg}: {r.status_code} {r.text[:200]}"


def normalized(text: str) -> str:
    """An error with its digests and addresses blanked: what an attacker compares between two imports."""
    text = DIGEST.sub("<digest>", text)
    return re.sub(r"127\.0\.0\.1:\d+", "<remote>", text)


@pytest.fixture
def protected(moat, tmp_path):
    """`victim` holds image `app:1` and exports disabled; `victim/tmp` held a second image's blobs, deleted from
    their repository (their bytes stay on disk); `attacker` is an open registry."""
    env = Env(moat, tmp_path)
    env.create("victim")
    env.create("attacker")
    vc = env.client("victim")
    blobs, config, manifest = random_image()
    for dg, data in blobs.items():
        vc.push_blob("app", data, dg)
    r = vc.put_manifest("app", "1", manifest)
    assert r.status_code == 201, r.text
    deleted, _, _ = random_image()
    for dg, data in deleted.items():
        vc.push_blob("tmp", data, dg)
        r = vc.request("DELETE", f"/v2/tmp/blobs/{dg}", repo="tmp")
        assert r.status_code == 202, f"DELETE blob: {r.status_code} {r.text[:200]}"
        assert vc.head_blob("tmp", dg).status_code == 404
    protect_registry(env.arm, "victim")
    env.held = {dg: len(b) for dg, b in blobs.items()}
    env.deleted = {dg: len(b) for dg, b in deleted.items()}
    return env


def forged(sizes: dict[str, int]) -> bytes:
    """A made-up manifest naming these digests (the last one as the config)."""
    items = list(sizes.items())
    return made_up_manifest(items[-1], items[:-1])


@pytest.mark.parametrize("blob_mode", ["404", "wrong"])
def test_made_up_manifest_naming_protected_digests_links_nothing(protected, fakes, blob_mode):
    """The attack of issue 9 over ARM: the importer downloads every blob it would link; the remote does not have
    the bytes (404) or sends others (wrong digest), so the import fails, the same way for digests the protected
    registry holds, ones deleted from its repository, and ones no registry ever had."""
    env = protected
    ac = env.client("attacker")
    nowhere = {sha256(os.urandom(32)): n for n in env.held.values()}
    answers = {}
    for case, sizes in [("held", env.held), ("deleted", env.deleted), ("nowhere", nowhere)]:
        fake = fakes("evil/app", "1", forged(sizes), blob_mode=blob_mode)
        r = env.import_arm("attacker", fake.host, "evil/app:1", f"loot-{case}:1")
        assert_arm_error(r, 400, "InvalidParameters")
        assert fake.blob_gets, f"{case}: the importer linked without downloading: {r.text[:300]}"
        assert set(fake.blob_gets) <= set(sizes), fake.blob_gets
        assert_target_empty(ac, f"loot-{case}", "1", sizes)
        answers[case] = (r.status_code, normalized(r.json()["error"]["code"]),
                         normalized(r.json()["error"]["message"]).replace(f"loot-{case}", "<target>"))
    assert answers["held"] == answers["deleted"] == answers["nowhere"], answers
    events = env.server.audit(operation="Import", registry="attacker")
    assert events and all(e.get("ResultType") != "Success" for e in events), events


def test_made_up_manifest_with_moat_acr_import(protected, fakes):
    """The same attack through `moat acr import`: it fails, and the attacker's registry holds nothing."""
    env = protected
    fake = fakes("evil/app", "1", forged(env.held), blob_mode="wrong")
    p = env.import_cli("attacker", fake.host, "evil/app:1", "loot:1")
    assert_error(p, 1, "InvalidParameters")
    assert fake.blob_gets, "the importer linked without downloading"
    assert_target_empty(env.client("attacker"), "loot", "1", env.held)


def test_only_blobs_linked_in_the_target_registry_are_not_downloaded(moat, tmp_path, fakes):
    """A remote image of three blobs: one linked already in the target registry (another repository), one held
    only by another registry of the server, one new. The first is not downloaded; the other two are, and the
    import links all three."""
    env = Env(moat, tmp_path)
    env.create("target")
    env.create("other")
    blobs, config, manifest = random_image(2)
    in_target, in_other = [d for d in blobs if blobs[d] != config]
    env.client("target").push_blob("base", blobs[in_target], in_target)
    env.client("other").push_blob("base", blobs[in_other], in_other)
    fake = fakes("real/app", "1", manifest, blobs=blobs)
    r = env.import_arm("target", fake.host, "real/app:1", "app:1")
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    assert in_target not in fake.blob_gets, f"a blob the target links was downloaded again: {fake.blob_gets}"
    assert fake.blob_gets.get(in_other) == 1, f"a blob held only by another registry was not downloaded: {fake.blob_gets}"
    assert fake.blob_gets.get(sha256(config)) == 1, fake.blob_gets
    tc = env.client("target")
    for dg, data in blobs.items():
        r = tc.get_blob("app", dg)
        assert r.status_code == 200 and r.content == data, f"{dg}: {r.status_code}"
