"""Finding 3 of issue 9 (and two lows of finding 9): the data directory is the server's alone.

The data directory is 0700 and every file in it 0600, so a local user reads nothing (checked as `nobody`); the
server refuses a directory or key file that others can read and says how to fix it; signing keys live in key
files (one per purpose), not in the database, and registry admin passwords are sealed at rest; `moat keys rotate`
keeps tokens issued before the rotation valid while new ones name the new key; the generated admin password is
never printed; with --insecure-http the management API and the token service answer loopback clients only.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from conftest import (Arm, Client, MoatServer, build_image, get_token, moat_bin, parse_json_lines, repo_scope,
                      sp_create)
from netns import netns_factory  # noqa: F401  (fixture)


def walk(root: Path):
    """Every directory and file under root (root included)."""
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            yield Path(dirpath) / n


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def jwt_header(token: str) -> dict:
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def exercise(s: MoatServer) -> tuple[Arm, list[str]]:
    """Writes something into every part of the data directory: a pushed image (blobs, uploads), an SP, the
    default registry's admin user with its passwords. Returns the Owner's ARM session and the admin passwords."""
    c = Client(s)
    c.push_image("sec/app", build_image(seed="secrets"), tag="v1")
    arm = Arm(s, sp_create(s, "sec-owner", "Owner"))
    r = arm.patch_registry("default", {"properties": {"adminUserEnabled": True}}, rg="moat")
    assert r.status_code == 200, r.text
    r = arm.request("POST", arm.registry_path("default", "moat") + "/listCredentials")
    assert r.status_code == 200, r.text
    passwords = [p["value"] for p in r.json()["passwords"]]
    assert len(passwords) == 2 and all(len(p) >= 32 for p in passwords)
    return arm, passwords


@pytest.fixture
def open_parent():
    """A parent directory others may traverse (pytest's own temp dirs are 0700, which would hide the data
    directory from `nobody` whatever its mode)."""
    d = Path(tempfile.mkdtemp(prefix="moat-sec-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


@pytest.fixture
def server(open_parent, moat_factory):
    s = MoatServer(open_parent / "w", https=True)
    os.makedirs(s.workdir)
    os.chmod(s.workdir, 0o755)
    try:
        yield s.start()
    finally:
        s.close()


def test_data_dir_is_0700_and_every_file_0600(server):
    exercise(server)
    entries = list(walk(server.data_dir))
    assert any("keys" in p.parts for p in entries) and any(p.name == "moat.db" for p in entries)
    wrong = [(oct(mode(p)), str(p)) for p in entries
             if (p.is_dir() and mode(p) != 0o700) or (p.is_file() and mode(p) != 0o600)]
    assert not wrong, wrong
    purposes = sorted(p.name for p in (server.data_dir / "keys").iterdir())
    assert purposes == ["audit", "data-links", "entra-tokens", "registry-tokens", "secrets", "transfer"]


def test_an_unprivileged_user_reads_nothing(server):
    exercise(server)
    as_nobody = ["runuser", "-u", "nobody", "--"]
    # The parent is open: what stops `nobody` is the data directory itself.
    assert subprocess.run(as_nobody + ["ls", str(server.workdir)], capture_output=True).returncode == 0
    r = subprocess.run(as_nobody + ["ls", str(server.data_dir)], capture_output=True, text=True)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    for p in walk(server.data_dir):
        if p.is_file():
            r = subprocess.run(as_nobody + ["cat", str(p)], capture_output=True)
            assert r.returncode != 0 and not r.stdout, f"nobody read {p}"
    # Even with the data directory opened by mistake (it will not start then), the files stay closed.
    os.chmod(server.data_dir, 0o755)
    try:
        for p in walk(server.data_dir / "keys"):
            r = subprocess.run(as_nobody + ["cat", str(p)] if p.is_file() else as_nobody + ["ls", str(p)],
                               capture_output=True)
            assert r.returncode != 0 and not r.stdout, f"nobody read {p}"
        r = subprocess.run(as_nobody + ["cat", str(server.data_dir / "moat.db")], capture_output=True)
        assert r.returncode != 0 and not r.stdout
    finally:
        os.chmod(server.data_dir, 0o700)


def serve_refused(s: MoatServer, fix: str) -> str:
    """Runs `moat serve` on s's data directory; it must exit non-zero, naming the fix."""
    p = subprocess.run(s.command(), capture_output=True, text=True, timeout=30, env=s.process_env())
    assert p.returncode != 0, p.stderr
    assert fix in p.stderr, p.stderr
    return p.stderr


@pytest.mark.parametrize("dir_mode", [0o755, 0o750, 0o705, 0o711])
def test_serve_refuses_a_data_dir_others_can_enter(moat_factory, dir_mode):
    s = moat_factory()
    s.stop()
    os.chmod(s.data_dir, dir_mode)
    err = serve_refused(s, f"run chmod 700 {s.data_dir}")
    assert f'data directory "{s.data_dir}" has invalid permissions ({dir_mode:04o})' in err
    # Offline commands open the same directory: same rule.
    p = s.moat("registry", "list", check=False)
    assert p.returncode != 0 and "run chmod 700" in p.stderr
    os.chmod(s.data_dir, 0o700)
    s.start()


@pytest.mark.parametrize("purpose", ["registry-tokens", "entra-tokens", "data-links", "secrets"])
def test_serve_refuses_a_key_file_others_can_read(moat_factory, purpose):
    s = moat_factory()
    s.stop()
    key = next((s.data_dir / "keys" / purpose).glob("*.key"))
    os.chmod(key, 0o644)
    err = serve_refused(s, f"run chmod 600 {key}")
    assert "(0644): it must be 0600" in err
    os.chmod(key, 0o600)
    os.chmod(key.parent, 0o755)
    serve_refused(s, f"run chmod 700 {key.parent}")
    os.chmod(key.parent, 0o700)
    s.start()


@pytest.mark.parametrize("rel", ["tls/ca-key.pem", "admin-password"])
def test_serve_refuses_other_secret_files_others_can_read(moat_factory, rel):
    s = moat_factory(admin_password=None)
    s.stop()
    os.chmod(s.data_dir / rel, 0o640)
    serve_refused(s, f"run chmod 600 {s.data_dir / rel}")
    os.chmod(s.data_dir / rel, 0o600)
    s.start()


def test_a_data_dir_owned_by_another_user_is_refused(moat_factory):
    s = moat_factory()
    s.stop()
    os.chown(s.data_dir, 65534, 65534)
    try:
        serve_refused(s, f"is owned by uid 65534")
    finally:
        os.chown(s.data_dir, 0, 0)


def test_the_database_holds_no_key_and_no_admin_password(server):
    arm, passwords = exercise(server)
    server.stop()
    db = sqlite3.connect(server.data_dir / "moat.db")
    settings = dict(db.execute("SELECT key, value FROM settings"))
    assert "token_secret" not in settings
    stored = [v for (v,) in db.execute("SELECT value FROM registry_credentials")]
    db.close()
    assert len(stored) == 2 and all(v.startswith("moat-sealed:v1:") for v in stored), stored
    keys = [k.read_text().strip() for k in (server.data_dir / "keys").rglob("*.key")]
    assert len(keys) == 6  # one per purpose: registry-tokens, entra-tokens, data-links, secrets, transfer, audit
    # Byte-level: no secret anywhere in the database files, in any encoding the server might use.
    blob = b"".join(p.read_bytes() for p in server.data_dir.glob("moat.db*"))
    for secret in passwords + keys:
        for form in (secret.encode(), secret.upper().encode(), base64.b64encode(secret.encode())):
            assert form not in blob, "a secret is in the database"
    # A sealed password still logs in after a restart.
    server.start()
    get_token(server.base_url, server.login_server, [repo_scope("sec/app", "pull")], "default", passwords[0],
              verify=server.verify)


def test_upgrade_moves_the_old_secret_out_and_seals_plaintext_passwords(server):
    arm, _ = exercise(server)
    server.stop()
    db = sqlite3.connect(server.data_dir / "moat.db")
    with db:
        db.execute("INSERT INTO settings(key, value) VALUES ('token_secret', 'aa' )")
        db.execute("UPDATE registry_credentials SET value = 'plaintext-from-before-0123456789' WHERE name = 'password'")
    db.close()
    server.start()
    db = sqlite3.connect(server.data_dir / "moat.db")
    assert db.execute("SELECT COUNT(*) FROM settings WHERE key = 'token_secret'").fetchone()[0] == 0
    stored = dict(db.execute("SELECT name, value FROM registry_credentials"))
    db.close()
    assert stored["password"].startswith("moat-sealed:v1:") and "plaintext" not in stored["password"]
    # The password the operator already handed out keeps working.
    get_token(server.base_url, server.login_server, [repo_scope("sec/app", "pull")], "default",
              "plaintext-from-before-0123456789", verify=server.verify)
    r = arm.request("POST", arm.registry_path("default", "moat") + "/listCredentials")
    assert {"name": "password", "value": "plaintext-from-before-0123456789"} in r.json()["passwords"]


def keys_of(s: MoatServer) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for k in parse_json_lines(s.moat("keys", "list").stdout):
        out.setdefault(k["purpose"], []).append(k)
    return out


def wait_for(pred, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_keys_rotate_keeps_issued_tokens_valid_and_signs_new_ones_with_the_new_kid(moat):
    s = moat
    arm, passwords = exercise(s)
    before = keys_of(s)
    assert all(len(v) == 1 and v[0]["status"] == "current" for v in before.values()), before
    c = Client(s)
    scope = repo_scope("sec/app", "pull")
    old = c.token(scope)
    assert jwt_header(old)["kid"] == before["registry-tokens"][0]["kid"]
    assert jwt_header(arm.token)["kid"] == before["entra-tokens"][0]["kid"]

    rotated = {}
    for purpose in ("registry-tokens", "entra-tokens", "data-links", "secrets"):
        out = json.loads(s.moat("keys", "rotate", "--purpose", purpose).stdout)
        assert out["purpose"] == purpose and out["kid"] != before[purpose][0]["kid"]
        rotated[purpose] = out["kid"]
    assert out["resealed"] == 2
    after = keys_of(s)
    for purpose, kid in rotated.items():
        assert [(k["kid"], k["status"]) for k in after[purpose]] == [
            (before[purpose][0]["kid"], "retired"), (kid, "current")]
    s.proc.send_signal(signal.SIGHUP)  # the server also re-reads the key files every few seconds

    # New tokens name the new key...
    new = wait_for(lambda: (t := get_token(s.base_url, s.login_server, [scope], "admin", s.admin_password,
                                           verify=s.verify)) and jwt_header(t)["kid"] == rotated["registry-tokens"]
                   and t, "a token signed with the new registry key")
    sp = sp_create(s, "sec-after", "Owner")
    wait_for(lambda: jwt_header(Arm(s, sp).token)["kid"] == rotated["entra-tokens"], "an Entra token with the new kid")
    # ...and what was issued before the rotation still works until it expires.
    for token in (old, new):
        r = c.session.get(f"{s.base_url}/v2/sec/app/manifests/v1", headers={
            "Authorization": "Bearer " + token, "Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=30)
        assert r.status_code == 200, r.text
    r = arm.request("GET", arm.registry_path("default", "moat"))
    assert r.status_code == 200, r.text
    # The admin passwords survived the re-sealing under the new secrets key.
    r = arm.request("POST", arm.registry_path("default", "moat") + "/listCredentials")
    assert [p["value"] for p in r.json()["passwords"]] == passwords
    db = sqlite3.connect(s.data_dir / "moat.db")
    stored = [v for (v,) in db.execute("SELECT value FROM registry_credentials")]
    db.close()
    assert all(v.startswith(f"moat-sealed:v1:{rotated['secrets']}:") for v in stored), stored
    # A forged token with a made-up kid, or none, is refused.
    head, body, sig = old.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    r = c.session.get(f"{s.base_url}/v2/sec/app/manifests/v1",
                      headers={"Authorization": f"Bearer {forged}.{body}.{sig}"}, timeout=30)
    assert r.status_code == 401


def test_rotate_refuses_an_unknown_purpose(moat):
    p = moat.moat("keys", "rotate", "--purpose", "everything", check=False)
    assert p.returncode != 0 and "registry-tokens, entra-tokens, data-links, secrets, transfer or audit" in p.stderr


def test_the_generated_admin_password_is_not_printed(moat_factory):
    s = moat_factory(admin_password=None)
    password = s.admin_password
    assert mode(s.data_dir / "admin-password") == 0o600
    log = s.log_path.read_text()
    assert password not in log
    assert str(s.data_dir / "admin-password") in log
    Client(s).token(repo_scope("x/y", "pull"))


def test_insecure_http_management_answers_loopback_only(moat_factory, netns_factory, tmp_path):
    host = netns_factory("sec")
    cfg = tmp_path / "moat.toml"
    s = moat_factory(https=False, start=False)
    cfg.write_text(f'listeners = ["{host.host_ip}:{s.port}"]\n')
    s.extra_args += ["--config", str(cfg)]
    s.start()
    sp = sp_create(s, "sec-http", "Owner")
    # From this host (loopback) the token service and ARM answer.
    token = requests.post(f"{s.base_url}/{sp['tenant']}/oauth2/v2.0/token", timeout=30, data={
        "client_id": sp["appId"], "client_secret": sp["password"], "grant_type": "client_credentials",
        "scope": "https://management.azure.com/.default"})
    assert token.status_code == 200, token.text
    # From another host over plain HTTP: refused before any secret is looked at, every route of the plane.
    remote = f"http://{host.host_ip}:{s.port}"
    for method, path, data in [
        ("POST", f"/{sp['tenant']}/oauth2/v2.0/token",
         f"client_id={sp['appId']}&client_secret={sp['password']}&grant_type=client_credentials"),
        ("GET", f"/{sp['tenant']}/v2.0/.well-known/openid-configuration", None),
        ("GET", f"/{sp['tenant']}/.well-known/openid-configuration", None),
        ("GET", "/subscriptions?api-version=2022-12-01", None),
        ("GET", "/subscriptions/x/resourceGroups?api-version=2022-12-01", None),
    ]:
        cmd = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, remote + path]
        if data:
            cmd += ["--data", data]
        out = host.run(cmd).stdout
        body, code = out.rsplit("\n", 1)
        assert code == "403", (path, out)
        assert json.loads(body)["error"]["code"] == "InsecureTransportRefused", body
    # The data plane still answers the remote client (plain HTTP is allowed there).
    out = host.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", remote + "/v2/"]).stdout
    assert out == "401"
