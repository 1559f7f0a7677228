"""Moat with its metadata in PostgreSQL (MOAT_DATABASE_URL=postgres://…): skopeo pushes and pulls the same digests,
the export-policy rule is enforced, a restart keeps everything, a `kill -9` after a 201 keeps the push, and a
database that is down at start stops `serve` with a message naming it.

Needs the throwaway PostgreSQL cluster `scripts/test` starts (MOAT_TEST_POSTGRES_URL); FAILS without it.
"""
import os
import secrets
import shutil
import subprocess

import pytest

from conftest import (Arm, build_image, create_private_endpoint,
                      free_port, moat_bin, read_oci_layout_manifest, require_tool, run, sp_create,
                      write_oci_layout)

PG_ENV = "MOAT_TEST_POSTGRES_URL"


def psql(url: str, sql: str) -> str:
    p = run([require_tool("psql"), url, "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql])
    return p.stdout.strip()


def with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    root = base.rsplit("/", 1)[0] if base.count("/") > 2 else base
    return f"{root}/{name}" + (f"?{query}" if query else "")


@pytest.fixture
def pg_url() -> str:
    server = os.environ.get(PG_ENV)
    if not server:
        pytest.fail(f"this test needs PostgreSQL: run it through scripts/test, which starts a throwaway cluster "
                    f"and sets {PG_ENV}")
    name = "e2e_" + secrets.token_hex(6)
    psql(server, f"CREATE DATABASE {name}")
    return with_database(server, name)


@pytest.fixture
def pg_moat(moat_factory, pg_url):
    s = moat_factory(env={"MOAT_DATABASE_URL": pg_url})
    plain = s.moat
    # Operator commands (`moat sp create`, …) reach the same database.
    s.moat = lambda *a, env=None, **kw: plain(*a, env={"MOAT_DATABASE_URL": pg_url, **(env or {})}, **kw)
    s.pg_url = pg_url
    return s


def skopeo(*args, timeout=180):
    return run([require_tool("skopeo"), *args], timeout=timeout)


def test_push_pull_policy_and_restart_on_postgres(pg_moat, tmp_path):
    m = pg_moat
    assert not (m.data_dir / "moat.db").exists(), "metadata went to SQLite"
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(m.ca_path, certs / "ca.crt")
    creds = f"admin:{m.admin_password}"
    img = build_image(n_layers=3, layer_size=64 * 1024)
    src = write_oci_layout(tmp_path / "src", img, "latest")
    ref = f"docker://{m.login_server}/pg/hello"
    skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(certs), "--dest-creds", creds,
           f"oci:{src}:latest", f"{ref}:1")
    back = tmp_path / "back"
    skopeo("copy", "--src-cert-dir", str(certs), "--src-creds", creds, f"{ref}:1", f"oci:{back}:latest")
    dg, data = read_oci_layout_manifest(back, "latest")
    assert dg == img.manifest_digest and data == img.manifest_bytes
    for ldg, blob in img.layers:
        assert (back / "blobs" / "sha256" / ldg.split(":", 1)[1]).read_bytes() == blob
    # The rows are PostgreSQL's.
    assert psql(m.pg_url, f"SELECT COUNT(*) FROM manifests WHERE digest = '{img.manifest_digest}'") == "1"

    # The export-policy rule, through the management API: exports disabled (Premium, no public access, an
    # approved private endpoint), then enabling public access is refused in the same transaction as the check.
    sp = sp_create(m, "pgadmin", "Contributor")
    arm = Arm(m, sp)
    r = arm.put_registry("pgreg", {"location": "westeurope", "sku": {"name": "Premium"},
                                   "properties": {"adminUserEnabled": False}})
    assert r.status_code in (200, 201), r.text[:500]
    create_private_endpoint(arm, "pgreg")
    r = arm.patch_registry("pgreg", {"properties": {"publicNetworkAccess": "Disabled",
                                                    "policies": {"exportPolicy": {"status": "disabled"}}}})
    assert r.status_code == 200, r.text[:500]
    r = arm.patch_registry("pgreg", {"properties": {"publicNetworkAccess": "Enabled"}})
    assert r.status_code == 400, r.text[:500]
    assert "exports disabled" in r.json()["error"]["message"], r.text[:500]

    m.restart()
    arm = Arm(m, sp)
    reg = arm.get_registry("pgreg").json()
    assert reg["properties"]["policies"]["exportPolicy"]["status"] == "disabled"
    assert reg["properties"]["publicNetworkAccess"] == "Disabled"
    c = m.client()
    g = c.get_manifest("pg/hello", "1")
    assert g.status_code == 200 and g.headers["Docker-Content-Digest"] == img.manifest_digest
    assert c.tags("pg/hello") == ["1"]


def test_an_acknowledged_push_survives_kill9(pg_moat):
    c = pg_moat.client()
    data = os.urandom(300_000)
    dg = c.push_blob("pg/durable", data)  # asserts the 201
    small = os.urandom(1000)
    small_dg = c.push_blob("pg/durable", small)
    pg_moat.kill9()
    pg_moat.start()
    c.reset()
    assert c.get_blob("pg/durable", dg).content == data
    assert c.get_blob("pg/durable", small_dg).content == small


def test_a_database_down_at_start_is_named_and_serve_exits(tmp_path):
    port = free_port()  # nothing listens there
    url = f"postgres://moat:secret-pw@127.0.0.1:{port}/moat"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOAT_")}
    env["MOAT_DATABASE_URL"] = url
    p = subprocess.run([moat_bin(), "serve", "--data-dir", str(tmp_path / "data"), "--listen",
                        f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=60, env=env)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert f"127.0.0.1:{port}" in out and "PostgreSQL" in out, out
    assert "secret-pw" not in out, "the password was printed"
