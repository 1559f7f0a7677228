"""Authentication and authorization: challenges, the token endpoint, the admin password, anonymous access."""
import base64
import json
import os
import stat

import requests

from conftest import assert_oci_error, build_image, get_token, parse_challenge, repo_scope


def _jwt_claims(token: str) -> dict:
    parts = token.split(".")
    assert len(parts) == 3, "token should be a JWT"
    pad = "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(parts[1] + pad))


def test_v2_without_credentials_is_challenged(moat):
    r = requests.get(moat.base_url + "/v2/", verify=moat.verify, timeout=30)
    assert_oci_error(r, "UNAUTHORIZED", 401)
    scheme, p = parse_challenge(r.headers["WWW-Authenticate"])
    assert scheme == "Bearer"
    assert p["realm"] == f"{moat.base_url}/oauth2/token"
    assert p["service"] == moat.login_server
    assert r.headers.get("Docker-Distribution-Api-Version") == "registry/2.0"


def test_token_endpoint(moat):
    r = requests.get(moat.base_url + "/oauth2/token",
                     params={"service": moat.login_server, "scope": "repository:auth/x:pull,push"},
                     auth=("admin", moat.admin_password), verify=moat.verify, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["access_token"] == body["token"]
    assert isinstance(body.get("expires_in"), int) and body["expires_in"] > 0
    claims = _jwt_claims(body["token"])
    assert claims.get("aud") == moat.login_server
    grants = claims.get("access") or []
    assert any(g.get("name") == "auth/x" and set(g.get("actions", [])) >= {"pull", "push"} for g in grants), grants
    # the token works
    c = moat.client()
    r = c.session.get(moat.base_url + "/v2/", headers={"Authorization": "Bearer " + body["token"]}, timeout=30)
    assert r.status_code == 200


def test_token_with_several_scopes(moat):
    tok = get_token(moat.base_url, moat.login_server, [repo_scope("auth/one", "pull,push"), repo_scope("auth/two", "pull")],
                    "admin", moat.admin_password, verify=moat.verify)
    grants = {g["name"]: set(g["actions"]) for g in _jwt_claims(tok)["access"] if g.get("type") == "repository"}
    assert grants.get("auth/one", set()) >= {"pull", "push"}, grants
    assert grants.get("auth/two", set()) >= {"pull"}, grants


def test_wrong_password_is_401(moat):
    r = requests.get(moat.base_url + "/oauth2/token",
                     params={"service": moat.login_server, "scope": "repository:auth/x:pull"},
                     auth=("admin", "wrong-password"), verify=moat.verify, timeout=30)
    assert_oci_error(r, "UNAUTHORIZED", 401)
    r = requests.get(moat.base_url + "/oauth2/token",
                     params={"service": moat.login_server, "scope": "repository:auth/x:pull"},
                     auth=("nosuchuser", moat.admin_password), verify=moat.verify, timeout=30)
    assert_oci_error(r, "UNAUTHORIZED", 401)
    failures = [e for e in moat.audit(operation="Login") if e.get("ResultType") != "Success"]
    assert failures, "failed logins should be audited"


def test_successful_login_is_audited(moat):
    moat.token(repo_scope("auth/audited", "pull"))
    ev = [e for e in moat.audit(operation="Login") if e.get("ResultType") == "Success"]
    assert ev, "a Login event"
    assert ev[-1].get("Identity") == "admin"
    assert ev[-1].get("LoginServer") == moat.login_server


def test_admin_password_file_when_not_set(moat_factory):
    s = moat_factory(https=True, admin_password=None)
    p = s.data_dir / "admin-password"
    assert p.exists(), "admin password must be written to <data dir>/admin-password"
    mode = stat.S_IMODE(os.stat(p).st_mode)
    assert mode == 0o600, oct(mode)
    pw = p.read_text().strip()
    assert len(pw) >= 16, "generated password looks too short"
    tok = get_token(s.base_url, s.login_server, [repo_scope("auth/pw")], "admin", pw, verify=s.verify)
    assert tok
    # the password is kept across restarts
    s.restart()
    assert p.read_text().strip() == pw
    get_token(s.base_url, s.login_server, [repo_scope("auth/pw")], "admin", pw, verify=s.verify)


def test_admin_password_from_env(moat):
    assert moat.admin_password.startswith("pw-")
    r = requests.get(moat.base_url + "/oauth2/token", params={"service": moat.login_server},
                     auth=("admin", moat.admin_password + "x"), verify=moat.verify, timeout=30)
    assert_oci_error(r, "UNAUTHORIZED", 401)
    get_token(moat.base_url, moat.login_server, [repo_scope("auth/env")], "admin", moat.admin_password,
              verify=moat.verify)


def test_token_for_one_registry_refused_on_another(moat_factory):
    s = moat_factory(https=False)
    s.stop()
    host = s.create_registry("secondreg")
    s.start()
    d = s.client()
    o = s.client(host=host)
    d.push_blob("auth/r", b"x")
    o.push_blob("auth/r", b"x")
    # a token issued for the default registry, presented to the other
    tok = d.token(repo_scope("auth/r"))
    r = o.request("GET", "/v2/auth/r/tags/list", auth=False, headers={"Authorization": f"Bearer {tok}"})
    assert_oci_error(r, "UNAUTHORIZED", 401)
    r = o.request("GET", "/v2/", auth=False, headers={"Authorization": f"Bearer {tok}"})
    assert_oci_error(r, "UNAUTHORIZED", 401)
    # asking the other registry's endpoint for a token with the default's service is not honoured either
    r = o.session.get(s.base_url + "/oauth2/token", params={"service": s.login_server, "scope": repo_scope("auth/r")},
                      auth=("admin", s.admin_password), headers={"Host": host}, timeout=30)
    if r.status_code == 200:
        t2 = r.json()["token"]
        r2 = d.request("GET", "/v2/auth/r/tags/list", auth=False, headers={"Authorization": f"Bearer {t2}"})
        assert_oci_error(r2, "UNAUTHORIZED", 401)
    else:
        assert r.status_code in (400, 401, 403), r.status_code


def test_anonymous_pull_refused_by_default(moat):
    c = moat.client()
    img = build_image(1)
    c.push_image("auth/anon", img, "t")
    for path in ("/v2/auth/anon/manifests/t", f"/v2/auth/anon/blobs/{img.layer_digests[0]}",
                 "/v2/auth/anon/tags/list"):
        r = c.request("GET", path, auth=False)
        assert_oci_error(r, "UNAUTHORIZED", 401)
    # an anonymous token (no basic auth) must not grant pull
    r = c.session.get(moat.base_url + "/oauth2/token",
                      params={"service": moat.login_server, "scope": "repository:auth/anon:pull"}, timeout=30)
    if r.status_code == 200:
        tok = r.json()["token"]
        g = c.request("GET", "/v2/auth/anon/manifests/t", auth=False, headers={"Authorization": f"Bearer {tok}"})
        assert g.status_code in (401, 403), g.status_code
        assert_oci_error(g, {"UNAUTHORIZED", "DENIED"})
    else:
        assert_oci_error(r, "UNAUTHORIZED", 401)
    denied = [e for e in moat.audit(repository="auth/anon") if e.get("ResultType") == "Denied"]
    assert denied, "refused pulls should be audited as Denied"


def test_tampered_token_refused(moat):
    c = moat.client()
    c.push_blob("auth/tamper", b"x")
    tok = c.token(repo_scope("auth/tamper", "pull"))
    h, p, sig = tok.split(".")
    claims = _jwt_claims(tok)
    claims["access"] = [{"type": "repository", "name": "auth/tamper", "actions": ["pull", "push", "delete"]}]
    p2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    forged = f"{h}.{p2}.{sig}"
    r = c.request("POST", "/v2/auth/tamper/blobs/uploads/", auth=False, headers={"Authorization": f"Bearer {forged}"})
    assert_oci_error(r, "UNAUTHORIZED", 401)
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    r = c.request("POST", "/v2/auth/tamper/blobs/uploads/", auth=False,
                  headers={"Authorization": f"Bearer {none_alg}.{p2}."})
    assert_oci_error(r, "UNAUTHORIZED", 401)


def test_basic_auth_header_on_v2_is_not_a_bypass(moat):
    """Basic credentials sent straight to /v2/<repo> must either work as the admin or be refused; a wrong
    password must never get through."""
    c = moat.client()
    c.push_blob("auth/basic", b"x")
    r = c.session.get(moat.base_url + "/v2/auth/basic/tags/list", auth=("admin", "wrong"), timeout=30)
    assert_oci_error(r, "UNAUTHORIZED", 401)
