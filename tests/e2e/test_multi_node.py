"""Several stateless `moat serve` nodes on one PostgreSQL and one Azurite container (issue 13): any request can
land on any node.

- skopeo pushes through A and pulls through B: the same digests.
- A chunked upload goes POST + PATCH on A, PATCH on B, PUT on C; another continues on B after A is `kill -9`ed
  mid-upload.
- A tag moved through A is served by B and C (their manifest caches follow the change epochs), and a policy
  change made through A (public network access disabled) is enforced by C within one second.
- A remote import accepted by A, which is then killed, is finished by another node once A's job lease runs out.

Each node has its own data directory holding a copy of the first node's keys (the recipe in the README's
"Running several nodes"): tokens, sealed secrets and the audit key are the same on every node.
"""
from __future__ import annotations

import os
import secrets
import shutil
import time

import pytest
import requests

from conftest import Arm, build_image, free_port, read_oci_layout_manifest, require_tool, run, sha256, sp_create, write_oci_layout
from test_postgres import pg_url  # noqa: F401  (fixture: a fresh database on the test cluster, FAILS without one)
from test_import import fake_registry  # noqa: F401,E402  (fixture: a slow source registry)

OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def cluster(moat_factory, azurite, pg_url):
    db_url = pg_url
    container = f"multi{secrets.randbelow(10**9)}"
    azurite.create_container(container)
    env = {"MOAT_DATABASE_URL": db_url, "MOAT_STORAGE_URL": f"az://{container}",
           "AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": f"http://127.0.0.1:{azurite.port}"}
    password = "pw-" + secrets.token_urlsafe(18)
    # One public address for all (as behind a load balancer): the login servers and tokens' audience every node
    # agrees on. Each node still listens on its own port.
    port_a = free_port()
    env["MOAT_PUBLIC_ADDRESS"] = f"127.0.0.1:{port_a}"
    a = moat_factory(https=False, env=env, admin_password=password, port=port_a)
    nodes = [a]
    for _ in range(2):
        n = moat_factory(https=False, env=env, admin_password=password, start=False)
        # The node's own data directory, with the first node's keys (everything but the serve lock).
        shutil.copytree(a.data_dir, n.data_dir, ignore=shutil.ignore_patterns("serve.lock", "serve.reloaded", "*.sock"))
        n.start()
        nodes.append(n)
    for n in nodes:
        plain = n.moat
        n.moat = (lambda p: lambda *args, env=None, **kw: p(*args, env={**{"MOAT_DATABASE_URL": db_url}, **(env or {})},
                                                              **kw))(plain)
    return nodes


def test_push_on_one_node_pull_on_another_with_skopeo(cluster, tmp_path):
    a, b, _ = cluster
    img = build_image(n_layers=2, layer_size=256 * 1024, seed="multi")
    src = write_oci_layout(tmp_path / "src", img, "latest")
    creds = f"admin:{a.admin_password}"
    skopeo = require_tool("skopeo")
    run([skopeo, "copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", creds,
         f"oci:{src}:latest", f"docker://{a.login_server}/multi/app:1"], timeout=180)
    back = tmp_path / "back"
    run([skopeo, "copy", "--src-tls-verify=false", "--src-creds", creds,
         f"docker://{b.login_server}/multi/app:1", f"oci:{back}:latest"], timeout=180)
    dg, data = read_oci_layout_manifest(back, "latest")
    assert dg == img.manifest_digest and data == img.manifest_bytes
    for ldg, blob in img.layers:
        assert (back / "blobs" / "sha256" / ldg.split(":", 1)[1]).read_bytes() == blob


def test_a_chunked_upload_moves_across_nodes_and_survives_a_kill9(cluster):
    a, b, c = cluster
    ca, cb, cc = a.client(), b.client(), c.client()
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = sha256(data)
    one, two = len(data) // 3, 2 * len(data) // 3

    r = ca.start_upload("multi/chunks")
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    r = ca.request("PATCH", loc, repo="multi/chunks", data=data[:one],
                   headers={**OCTET, "Content-Range": f"0-{one - 1}"})
    assert r.status_code == 202 and r.headers["Range"] == f"0-{one - 1}", (r.status_code, r.text)
    r = cb.request("PATCH", r.headers["Location"], repo="multi/chunks", data=data[one:two],
                   headers={**OCTET, "Content-Range": f"{one}-{two - 1}"})
    assert r.status_code == 202 and r.headers["Range"] == f"0-{two - 1}", (r.status_code, r.text)
    # Every node reports the same progress.
    r = cc.request("GET", r.headers["Location"], repo="multi/chunks")
    assert r.status_code == 204 and r.headers["Range"] == f"0-{two - 1}", (r.status_code, r.text)
    loc = r.headers["Location"]
    sep = "&" if "?" in loc else "?"
    r = cc.request("PUT", f"{loc}{sep}digest={digest}", repo="multi/chunks", data=data[two:], headers=OCTET)
    assert r.status_code == 201, r.text
    for cl in (ca, cb, cc):
        got = cl.get_blob("multi/chunks", digest)
        assert got.status_code == 200 and got.content == data

    # Node A dies mid-upload (kill -9 after its PATCH was acknowledged): the client carries on through B.
    data2 = os.urandom(2 * 1024 * 1024 + 5)
    digest2 = sha256(data2)
    half = len(data2) // 2
    r = ca.start_upload("multi/chunks")
    loc = r.headers["Location"]
    r = ca.request("PATCH", loc, repo="multi/chunks", data=data2[:half],
                   headers={**OCTET, "Content-Range": f"0-{half - 1}"})
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    a.kill9()
    r = cb.request("PATCH", loc, repo="multi/chunks", data=data2[half:],
                   headers={**OCTET, "Content-Range": f"{half}-{len(data2) - 1}"})
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    sep = "&" if "?" in loc else "?"
    r = cb.request("PUT", f"{loc}{sep}digest={digest2}", repo="multi/chunks", headers=OCTET)
    assert r.status_code == 201, r.text
    assert cc.get_blob("multi/chunks", digest2).content == data2


def test_a_tag_moved_and_a_policy_changed_on_one_node_hold_on_the_others(cluster):
    a, b, c = cluster
    ca, cb, cc = a.client(), b.client(), c.client()
    first, second = build_image(n_layers=1, seed="tag-one"), build_image(n_layers=1, seed="tag-two")
    ca.push_image("multi/tagged", first, tag="v1")
    # B and C have the tag cached ...
    for cl in (cb, cc):
        assert cl.get_manifest("multi/tagged", "v1").headers["Docker-Content-Digest"] == first.manifest_digest
    # ... and serve the move made through A at their next poll of the change epochs.
    ca.push_image("multi/tagged", second, tag="v1")
    moved = time.monotonic()
    for cl in (cb, cc):
        while cl.get_manifest("multi/tagged", "v1").headers["Docker-Content-Digest"] != second.manifest_digest:
            assert time.monotonic() - moved < 1.0, "a tag moved on A is still served stale by another node"
            time.sleep(0.02)

    # Public network access disabled through A's management API: C refuses everyone public within one second.
    sp = sp_create(a, "multi-owner", "Owner")
    arm = Arm(a, sp)
    default = arm.registry_path("default", rg="moat")
    r = arm.request("PATCH", default, {"properties": {"publicNetworkAccess": "Disabled"}})
    assert r.status_code == 200, r.text
    changed = time.monotonic()
    for node in (c, b):
        while True:
            r = requests.get(f"{node.base_url}/v2/", timeout=10)
            if r.status_code == 403:
                break
            assert r.status_code == 401, r.text
            assert time.monotonic() - changed < 1.0, f"{node.login_server} still lets the public in after the change on A"
            time.sleep(0.05)
        assert r.json()["errors"][0]["code"] == "DENIED", r.text


def test_an_import_whose_node_dies_is_finished_by_another(cluster, fake_registry):
    """A remote importImage accepted by A; A is killed with SIGKILL while the largest layer downloads. Its job's
    lease runs out and another node claims the job and finishes it: the operation's Location answers on B."""
    a, b, c = cluster
    img = build_image(6, layer_size=2 * 1024 * 1024, seed="multi-import")
    fake = fake_registry(img, mode="slow")
    fake.slow_step = 0.6  # the largest layer takes ~12 s: A dies while it downloads
    sp = sp_create(a, "multi-importer", "Owner")
    arm_a = Arm(a, sp)
    r = arm_a.request("POST", arm_a.registry_path("default", "moat") + "/importImage", {
        "source": {"registryUri": f"http://{fake.host}", "sourceImage": "fake/app:1"},
        "targetTags": ["imported/app:1"]})
    assert r.status_code == 202, r.text
    path = "/" + r.headers["Location"].split("/", 3)[3]
    deadline = time.monotonic() + 60
    while fake.victim not in {p.split("/blobs/", 1)[1].split("?")[0] for m, p, _ in fake.seen if "/blobs/" in p}:
        assert time.monotonic() < deadline, "the import never asked for its largest layer"
        time.sleep(0.05)
    a.kill9()

    arm_b = Arm(b, sp)
    deadline = time.monotonic() + 120  # the dead node's lease (30 s) runs out first
    while True:
        p = arm_b.session.get(b.base_url + path, headers={"Authorization": "Bearer " + arm_b.token}, timeout=30)
        if p.status_code != 202:
            break
        assert time.monotonic() < deadline, f"no node finished the import: {p.text[:300]}"
        time.sleep(0.5)
    assert p.status_code == 200 and p.json()["status"] == "Succeeded", f"{p.status_code} {p.text[:300]}"
    got = c.client().get_manifest("imported/app", "1")
    assert got.status_code == 200 and got.headers["Docker-Content-Digest"] == img.manifest_digest
