"""The `moat` command line: serve options and env twins, TLS, registries, anonymous pull, and the audit trail."""
import datetime
import json
import os
import signal
import subprocess
import time

import requests

from conftest import (MoatServer, assert_oci_error, build_image, free_port, get_token, moat_bin, repo_scope, run,
                      sha256)


def _wait_http(url, verify=True, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return requests.get(url, verify=verify, timeout=2)
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError(f"{url} not reachable")


def test_listening_message_and_sigterm(moat):
    assert "moat listening on" in moat.log_path.read_text(), moat.log_tail()
    moat.proc.send_signal(signal.SIGTERM)
    try:
        moat.proc.wait(15)
    except subprocess.TimeoutExpired:
        raise AssertionError("moat did not exit within 15 s of SIGTERM")
    assert moat.proc.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM), moat.proc.returncode


def test_env_twins(tmp_path):
    """MOAT_DATA_DIR, MOAT_LISTEN, MOAT_ADMIN_PASSWORD configure `moat serve` without flags."""
    port = free_port()
    data = tmp_path / "envdata"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOAT_")}
    env.update(MOAT_DATA_DIR=str(data), MOAT_LISTEN=f"127.0.0.1:{port}", MOAT_ADMIN_PASSWORD="env-secret-123")
    log = open(tmp_path / "log", "wb")
    p = subprocess.Popen([moat_bin(), "serve", "--insecure-http"], env=env, stdout=log, stderr=subprocess.STDOUT,
                         cwd=str(tmp_path), start_new_session=True)
    try:
        r = _wait_http(f"http://127.0.0.1:{port}/v2/")
        assert r.status_code == 401
        assert (data / "moat.db").exists() or any(data.iterdir()), "data must go to MOAT_DATA_DIR"
        assert not (tmp_path / "moat-data").exists(), "the default ./moat-data must not be used"
        tok = get_token(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", [repo_scope("env/x")], "admin",
                        "env-secret-123")
        assert tok
    finally:
        p.terminate()
        p.wait(15)
        log.close()


def test_default_data_dir_is_cwd_moat_data(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOAT_")}
    log = open(tmp_path / "log", "wb")
    p = subprocess.Popen([moat_bin(), "serve", "--insecure-http", "--listen", f"127.0.0.1:{port}"], env=env,
                         stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path), start_new_session=True)
    try:
        r = _wait_http(f"http://127.0.0.1:{port}/v2/")
        assert r.status_code == 401
        assert (tmp_path / "moat-data").is_dir()
        pw = tmp_path / "moat-data" / "admin-password"
        assert pw.exists() and (pw.stat().st_mode & 0o777) == 0o600
    finally:
        p.terminate()
        p.wait(15)
        log.close()


def test_own_tls_certificate(moat_factory, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=moat-e2e", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], timeout=60)
    s = moat_factory(https=True, extra_args=["--tls-cert", str(cert), "--tls-key", str(key)], tls_ca=str(cert))
    r = requests.get(s.base_url + "/v2/", verify=str(cert), timeout=30)
    assert r.status_code == 401
    tok = get_token(s.base_url, s.login_server, [repo_scope("tls/own")], "admin", s.admin_password, verify=str(cert))
    r = requests.get(s.base_url + "/v2/", headers={"Authorization": f"Bearer {tok}"}, verify=str(cert), timeout=30)
    assert r.status_code == 200


def test_https_leaf_for_each_registry_host(moat_factory):
    """The local CA issues a leaf for the SNI name of each registry (checked by name, not IP)."""
    s = moat_factory(https=True)
    s.stop()
    host = s.create_registry("sniregistry")
    s.start()
    c = s.client(host=host)  # SNI sniregistry.localhost, certificate checked against that name
    r = c.request("GET", "/v2/", scopes=[repo_scope("sni/x", "pull")])
    assert r.status_code == 200


def test_registry_list_and_domain(moat_factory):
    s = moat_factory(https=False, start=False, extra_args=["--domain", "example.test"])
    s.start()
    s.stop()
    s.moat("registry", "create", "domainreg", "--listen", s.login_server, "--domain", "example.test")
    s.start()
    out = s.moat("registry", "list").stdout
    assert "default" in out and "domainreg" in out, out
    assert f"domainreg.example.test:{s.port}" in out, out
    host = f"domainreg.example.test:{s.port}"
    c = s.client(host=host)
    dg = c.push_blob("dom/x", b"domain registry")
    assert c.head_blob("dom/x", dg).status_code == 200
    assert s.client().head_blob("dom/x", dg).status_code == 404
    # a name that matches no registry lands on default
    r = requests.get(s.base_url + "/v2/", headers={"Host": f"unknown.example.test:{s.port}"}, timeout=30)
    assert r.status_code == 401
    assert f'service="{s.login_server}"' in r.headers.get("WWW-Authenticate", ""), r.headers


def test_registry_create_rejects_bad_names(moat):
    for bad in ("ab", "has-dash", "UPPER_score", "x" * 60):
        p = moat.moat("registry", "create", bad, "--listen", moat.login_server, check=False)
        assert p.returncode != 0, f"registry name {bad!r} should be refused"
    p = moat.moat("registry", "create", "dupregistry", "--listen", moat.login_server)
    p = moat.moat("registry", "create", "dupregistry", "--listen", moat.login_server, check=False)
    assert p.returncode != 0, "creating a registry twice should fail"


def test_anonymous_pull_registry(moat_factory):
    s = moat_factory(https=False)
    s.stop()
    s.moat("registry", "create", "anonregistry", "--anonymous-pull", "--listen", s.login_server)
    s.start()
    host = f"anonregistry.localhost:{s.port}"
    c = s.client(host=host)
    img = build_image(1)
    c.push_image("anon/pub", img, "1")

    def anon_get(path, token=None):
        h = {"Host": host}
        if token:
            h["Authorization"] = f"Bearer {token}"
        return requests.get(s.base_url + path, headers=h, timeout=30)

    r = anon_get("/v2/anon/pub/manifests/1")
    if r.status_code == 401:
        # the Docker flow: an anonymous token from the realm, then the pull
        t = requests.get(s.base_url + "/oauth2/token", params={"service": host, "scope": "repository:anon/pub:pull"},
                         headers={"Host": host}, timeout=30)
        assert t.status_code == 200, f"anonymous token on an anonymous-pull registry: {t.status_code} {t.text}"
        r = anon_get("/v2/anon/pub/manifests/1", t.json()["token"])
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    assert r.content == img.manifest_bytes
    # anonymous push is still refused
    t = requests.get(s.base_url + "/oauth2/token", params={"service": host, "scope": "repository:anon/pub:pull,push"},
                     headers={"Host": host}, timeout=30)
    tok = t.json().get("token") if t.status_code == 200 else None
    h = {"Host": host}
    if tok:
        h["Authorization"] = f"Bearer {tok}"
    r = requests.post(s.base_url + "/v2/anon/pub/blobs/uploads/", headers=h, timeout=30)
    assert r.status_code in (401, 403), r.status_code
    # and the default registry stays closed
    s.client().push_image("anon/pub", img, "1")
    r = requests.get(s.base_url + "/v2/anon/pub/manifests/1", timeout=30)
    assert_oci_error(r, "UNAUTHORIZED", 401)


def test_audit_trail_fields_and_filters(moat):
    c = moat.client()
    t0 = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=2)
    img = build_image(1)
    c.push_image("audit/app", img, "v1")
    g = c.get_manifest("audit/app", "v1")
    assert g.status_code == 200
    assert c.get_blob("audit/app", img.layer_digests[0]).status_code == 200
    c.request("DELETE", "/v2/audit/app/manifests/v1", repo="audit/app")
    # an authenticated caller whose token lacks the repository: a denial (a bare 401 challenge need not be one)
    r = c.request("GET", "/v2/audit/other/manifests/x", scopes=[repo_scope("audit/app", "pull")])
    assert r.status_code in (401, 403)

    events = moat.audit()
    for e in events:
        for field in ("TimeGenerated", "Category", "OperationName", "Registry", "LoginServer", "ResultType",
                      "ResultDescription"):
            assert field in e, f"{field} missing in {e}"
    push = [e for e in moat.audit(operation="Push", repository="audit/app") if e.get("Digest") == img.manifest_digest]
    assert len(push) == 1, push
    p = push[0]
    assert p["Tag"] == "v1" and p["Digest"] == img.manifest_digest
    assert p["Identity"] == "admin" and p["CallerIpAddress"] == "127.0.0.1"
    assert p["Registry"] == "default" and p["LoginServer"] == moat.login_server
    assert p["Category"] == "ContainerRegistryRepositoryEvents"
    assert p["ResultType"] == "Success"
    assert p.get("MediaType") == img.media_type

    pulls = moat.audit(operation="Pull", repository="audit/app")
    assert any(e.get("Digest") == img.manifest_digest for e in pulls), pulls
    assert all(e["OperationName"] == "Pull" for e in pulls)
    assert moat.audit(operation="Untag", repository="audit/app"), "DELETE of a tag is an Untag"
    assert all(e.get("Repository") == "audit/app" for e in moat.audit(repository="audit/app"))
    denied = [e for e in moat.audit(repository="audit/other") if e["ResultType"] == "Denied"]
    assert denied, "a pull refused for lack of permission is recorded as Denied"
    assert moat.audit(registry="default")
    # a registry that never existed is a typo: refused, naming the registries there are
    p = moat.moat("audit", "--registry", "nosuchregistry", check=False)
    assert p.returncode == 1 and "no registry 'nosuchregistry'" in p.stderr and "default" in p.stderr, p.stderr

    # time filters
    future = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    assert moat.audit(since=future) == []
    # pulls are audited in batches, so a later read may hold more events than `events`, never fewer
    since = {e["CorrelationId"] for e in moat.audit(since=t0.strftime("%Y-%m-%dT%H:%M:%SZ"))}
    assert {e["CorrelationId"] for e in events} <= since
    assert moat.audit(until=t0.strftime("%Y-%m-%dT%H:%M:%SZ")) == []

    # table output mentions the push
    out = moat.moat("audit", "--output", "table", "--repository", "audit/app").stdout
    assert "Push" in out and "audit/app" in out, out


def _tree_size(path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def test_idle_uploads_expire_with_their_bytes(moat_factory):
    s = moat_factory(https=False, extra_args=["--upload-ttl-secs", "2"])
    c = s.client()
    repo = "ttl/x"
    r = c.start_upload(repo)
    loc = r.headers["Location"]
    before = _tree_size(s.data_dir)
    r = c.request("PATCH", loc, repo=repo, data=os.urandom(8 * 1024 * 1024),
                  headers={"Content-Type": "application/octet-stream", "Content-Range": f"0-{8 * 1024 * 1024 - 1}"})
    assert r.status_code == 202
    assert _tree_size(s.data_dir) >= before + 8 * 1024 * 1024 - 4096, "partial bytes should be on disk"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = c.request("GET", loc, repo=repo)
        if st.status_code == 404:
            break
        time.sleep(0.5)
    assert_oci_error(c.request("GET", loc, repo=repo), "BLOB_UPLOAD_UNKNOWN", 404)
    time.sleep(0.5)
    assert _tree_size(s.data_dir) < before + 1024 * 1024, "the expired upload's bytes must be removed"
