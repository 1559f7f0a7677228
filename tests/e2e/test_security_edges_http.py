"""Issue 9, finding 8 and the HTTP lows of finding 9: the edge every request passes.

- one rule for forwarding headers: behind a trusted proxy the client is the first hop no trusted party vouches for,
  and a client cannot choose its own address with the header the proxy does not write;
- every error on /v2 is OCI JSON, oversized heads and bodies included (HTTP/1 and HTTP/2), and the management
  paths answer the same refusals in ARM's envelope; an internal error is 500 UNKNOWN;
- Range values the server does not support are ignored (200, whole blob), not refused;
- HEAD of blobs and manifests is audited like GET;
- an absolute-form target's authority wins over Host, and duplicate Host headers are refused.

Requests a library would normalise (duplicate Host, absolute form, oversized heads) go over raw TLS sockets; HTTP/2
goes through curl, which is installed where the e2e suite runs.
"""
from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import time
import uuid

import pytest

from conftest import (Arm, RawResponse, assert_arm_error, assert_oci_error, build_image, raw_request, repo_scope,
                      sha256, sp_create)
from test_network import assert_denied, patch_default, pull_from, session_from, token_from


# ------------------------------------------------------------------------------------------------ raw HTTP

class Raw:
    """An HTTP/1.1 response read off a raw socket: status, headers (lower-case names) and body."""

    def __init__(self, data: bytes):
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), f"not an HTTP/1.1 response: {data[:200]!r}"
        self.status = int(lines[0].split(" ", 2)[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        if "content-length" in self.headers:
            body = body[:int(self.headers["content-length"])]
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"{self.status} {self.headers} {self.body[:300]!r}"


def raw(server, request: bytes, timeout: float = 30) -> Raw:
    """Sends `request` as is over a new TLS connection and reads the answer until the server closes."""
    ctx = ssl.create_default_context(cafile=str(server.ca_path))
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            try:
                tls.sendall(request)
            except (OSError, ssl.SSLError):
                pass  # answered before the whole request was sent; the answer is waiting
            data = b""
            while True:
                try:
                    chunk = tls.recv(65536)
                except (ssl.SSLError, ConnectionResetError):
                    break
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data:
                    r = Raw(data)
                    if len(r.body) >= int(r.headers.get("content-length", "-1")):
                        return r
    return Raw(data)


def get(path: str, host: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *headers, "Connection: close", "", ""]
    return "\r\n".join(lines).encode()


def assert_oci(r: Raw, status: int, code: str | None = None):
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), r
    errors = r.json()["errors"]
    assert errors and all(isinstance(e.get("message"), str) and e["message"] for e in errors), r
    if code:
        assert errors[0]["code"] == code, r


def assert_arm(r: Raw, status: int, code: str | None = None):
    assert r.status == status, r
    err = r.json()["error"]
    assert isinstance(err["code"], str) and isinstance(err["message"], str) and err["message"], r
    if code:
        assert err["code"] == code, r


def curl_h2(server, path: str, *args: str, data: bytes | None = None, tmp_path=None) -> tuple[int, bytes]:
    """One request over HTTP/2 (ALPN) with curl; returns (status, body) and checks HTTP/2 was used."""
    curl = shutil.which("curl")
    assert curl, "curl is required for the HTTP/2 tests"
    cmd = [curl, "-sS", "--http2", "--cacert", str(server.ca_path), "-o", "-", "-w", "\n%{http_code} %{http_version}",
           *args, f"https://127.0.0.1:{server.port}{path}"]
    if data is not None:
        body_file = tmp_path / f"body-{uuid.uuid4().hex}"
        body_file.write_bytes(data)
        cmd += ["--data-binary", f"@{body_file}"]
    p = subprocess.run(cmd, capture_output=True, timeout=60)
    out, _, trailer = p.stdout.rpartition(b"\n")
    status, version = trailer.decode().split()
    assert version == "2", f"curl did not speak HTTP/2: {p.stdout[-300:]!r} {p.stderr!r}"
    return int(status), out


# ------------------------------------------------------------------------------------------------ forwarding

PROXY = "127.0.0.4"
ALLOWED = "203.0.113.9"


def test_a_client_behind_a_trusted_proxy_cannot_choose_its_address(moat_factory):
    moat = moat_factory(extra_args=["--trusted-proxy", PROXY])
    c = moat.client()
    digest = c.push_blob("net/app", b"only 203.0.113.9 may read this")
    arm = Arm(moat, sp_create(moat, "fwdowner", "Owner"))
    r = patch_default(arm, {"networkRuleSet": {"defaultAction": "Deny",
                                               "ipRules": [{"action": "Allow", "value": ALLOWED}]}})
    assert r.status_code == 200, r.text

    # The attack: the proxy writes Forwarded with the real client; the client adds X-Forwarded-For naming the allowed
    # address (or the other way round). Refused, never read as the allowed address.
    conflicts = ({"Forwarded": "for=198.51.100.7", "X-Forwarded-For": ALLOWED},
                 {"Forwarded": 'for="[2001:db8::7]:4711"', "X-Forwarded-For": ALLOWED},
                 {"Forwarded": "for=unknown", "X-Forwarded-For": ALLOWED})
    for h in conflicts:
        r = token_from(PROXY, moat, headers=h)
        assert_oci_error(r, "UNSUPPORTED", 400)
        assert "Forwarded" in r.json()["errors"][0]["message"] and "X-Forwarded-For" in r.text, r.text
        r = session_from(PROXY, moat).get(f"{moat.base_url}/v2/net/app/blobs/{digest}", headers=h, timeout=30)
        assert_oci_error(r, "UNSUPPORTED", 400)
    # The proxy appended the real client (198.51.100.7); the client wrote the allowed address in front of it, or
    # in the header the proxy does not write. Never taken as the client's.
    for h in ({"Forwarded": f"for={ALLOWED}, for=198.51.100.7"},
              {"X-Forwarded-For": f"{ALLOWED}, 198.51.100.7"},
              {"Forwarded": f"for={ALLOWED}", "X-Forwarded-For": f"{ALLOWED}, 198.51.100.7"}):
        r = pull_from(PROXY, moat, digest, headers=h)
        if "Forwarded" in h and "X-Forwarded-For" in h:
            assert_oci_error(r, "UNSUPPORTED", 400)
        else:
            assert_denied(r, "198.51.100.7")
    # A proxy that does not disclose the client: nobody can say who it is.
    for h in ({"Forwarded": "for=unknown"}, {"Forwarded": "for=_hidden"}, {"X-Forwarded-For": "unknown"},
              {"Forwarded": f'for="{ALLOWED}, for=198.51.100.7'}):
        assert_oci_error(token_from(PROXY, moat, headers=h), "UNSUPPORTED", 400)
    # The management plane answers in its own envelope (the Entra token endpoint here).
    r = session_from(PROXY, moat).post(f"{moat.base_url}/{arm.sp['tenant']}/oauth2/v2.0/token",
                                       data={"grant_type": "client_credentials"}, headers=conflicts[0], timeout=30)
    assert_arm_error(r, 400, "ClientAddressUnknown")
    # The proxy's own entry names the allowed client: believed, whichever header carries it, in every spelling.
    for h in ({"Forwarded": f"for={ALLOWED}"}, {"Forwarded": f'for="{ALLOWED}:4711";proto=https'},
              {"Forwarded": f"for=198.51.100.7, for={ALLOWED}"}, {"X-Forwarded-For": ALLOWED},
              {"X-Forwarded-For": f"198.51.100.7, {ALLOWED}"}, {"X-Forwarded-For": f"{ALLOWED}:4711"},
              {"X-Forwarded-For": f"{ALLOWED}, {PROXY}"}, {"Forwarded": f"for={ALLOWED}", "X-Forwarded-For": ALLOWED}):
        assert pull_from(PROXY, moat, digest, headers=h).status_code == 200, h
    # An untrusted peer's headers are not read at all.
    assert_denied(pull_from("127.0.0.3", moat, digest, headers={"X-Forwarded-For": ALLOWED}), "127.0.0.3")


# ------------------------------------------------------------------------------------------------ oversized

def test_oversized_heads_are_answered_in_the_planes_format(moat, tmp_path):
    host = moat.login_server
    big = "a" * (64 * 1024)
    # HTTP/1: a 64 KiB header, a 20 KiB target; many headers adding up.
    assert_oci(raw(moat, get("/v2/", host, f"X-Big: {big}")), 431, "UNSUPPORTED")
    assert_oci(raw(moat, get("/v2/" + "a" * (20 * 1024) + "/manifests/latest", host)), 414, "UNSUPPORTED")
    assert_oci(raw(moat, get("/v2/", host, *[f"X-Pad-{i}: {'b' * 400}" for i in range(90)])), 431)
    assert_oci(raw(moat, get("/oauth2/token?scope=" + "s" * (20 * 1024), host)), 414)
    r = raw(moat, get("/v2/", host, f"X-Big: {big}", method="HEAD"))
    assert r.status == 431 and r.headers["content-type"].startswith("application/json"), r
    # The management plane: ARM's envelope.
    assert_arm(raw(moat, get("/subscriptions?api-version=2022-12-01", host, f"X-Big: {big}")), 431,
               "RequestHeaderFieldsTooLarge")
    assert_arm(raw(moat, get("/subscriptions/" + "s" * (20 * 1024), host)), 414, "RequestUriTooLong")
    # Just under the bounds: served as usual.
    r = raw(moat, get("/v2/", host, f"X-Big: {'a' * (24 * 1024)}"))
    assert_oci(r, 401, "UNAUTHORIZED")
    # HTTP/2: the same answers.
    status, body = curl_h2(moat, "/v2/", "-H", f"X-Big: {'a' * (40 * 1024)}")
    assert status == 431 and json.loads(body)["errors"][0]["code"] == "UNSUPPORTED", (status, body[:300])
    status, body = curl_h2(moat, "/v2/" + "a" * (20 * 1024) + "/tags/list")
    assert status == 414 and json.loads(body)["errors"][0]["code"] == "UNSUPPORTED", (status, body[:300])


def test_oversized_bodies_are_413_oci_json_over_http1_and_http2(moat, tmp_path):
    c = moat.client()
    token = c.token(repo_scope("big/app"))
    # A manifest over the 4 MiB limit (HTTP/1).
    r = raw_request(moat, "PUT", "/v2/big/app/manifests/v1",
                    {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                    b"{" + b" " * (4 * 1024 * 1024 + 16) + b"}")
    assert_oci_error(r, "SIZE_INVALID", 413)
    status, body = curl_h2(moat, "/v2/big/app/manifests/v1", "-X", "PUT", "-H", f"Authorization: Bearer {token}",
                           "-H", "Content-Type: application/vnd.oci.image.manifest.v1+json",
                           data=b"{" + b" " * (4 * 1024 * 1024 + 16) + b"}", tmp_path=tmp_path)
    assert status == 413 and json.loads(body)["errors"][0]["code"] == "SIZE_INVALID", (status, body[:300])
    # A token request whose form is over its 64 KiB limit, HTTP/1 and HTTP/2.
    form = b"grant_type=password&service=" + moat.login_server.encode() + b"&pad=" + b"x" * (128 * 1024)
    r = raw_request(moat, "POST", "/oauth2/token", {"Content-Type": "application/x-www-form-urlencoded"}, form)
    assert_oci_error(r, "SIZE_INVALID", 413)
    status, body = curl_h2(moat, "/oauth2/token", "-H", "Content-Type: application/x-www-form-urlencoded",
                           data=form, tmp_path=tmp_path)
    assert status == 413 and json.loads(body)["errors"][0]["code"] == "SIZE_INVALID", (status, body[:300])


def test_internal_errors_are_500_unknown(moat):
    c = moat.client()
    r = c.start_upload("broken/app")
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    upload_id = r.headers["Docker-Upload-UUID"]
    # The upload's file disappears under the server (a failing disk): the server's fault, not the request's.
    (moat.data_dir / "storage" / "uploads" / upload_id).unlink()
    r = c.request("PATCH", loc, repo="broken/app", data=b"0123456789",
                  headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 500, f"{r.status_code} {r.text[:300]}"
    assert r.json()["errors"][0]["code"] == "UNKNOWN", r.text
    assert "Retry-After" not in r.headers


# ------------------------------------------------------------------------------------------------ Range

def test_unsupported_range_values_are_ignored(moat):
    c = moat.client()
    small = b"0123456789"
    large = bytes(range(256)) * 400  # past the inline size: served from the blob file
    for data in (small, large):
        digest = c.push_blob("range/app", data)
        size = len(data)

        def fetch(value):
            return c.request("GET", f"/v2/range/app/blobs/{digest}", repo="range/app", headers={"Range": value})

        for value, want in (("bytes=0-3", data[0:4]), ("bytes=-4", data[-4:]), (f"bytes={size - 2}-", data[-2:]),
                            ("bytes=2-2", data[2:3]), (f"bytes=5-{size * 10}", data[5:])):
            r = fetch(value)
            assert r.status_code == 206, (value, r.status_code, r.text[:200])
            assert r.content == want, value
            start = size - len(want) if value.startswith("bytes=-") else int(value[6:].split("-")[0])
            assert r.headers["Content-Range"] == f"bytes {start}-{start + len(want) - 1}/{size}", value
        for value in ("bytes=0-1,3-4", "items=0-3", "bytes=abc", "bytes=5-1", "bytes=", "bytes 0-3"):
            r = fetch(value)
            assert r.status_code == 200, (value, r.status_code, r.text[:200])
            assert r.content == data, value
            assert "Content-Range" not in r.headers, value
        r = fetch(f"bytes={size * 10}-")
        assert_oci_error(r, "BLOB_UPLOAD_INVALID", 416)
        assert r.headers["Content-Range"] == f"bytes */{size}"
    digest = sha256(small)
    r = c.request("GET", f"/v2/range/app/blobs/{digest}", repo="range/app", headers={"Range": "bytes=100-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */10", r.text


# ------------------------------------------------------------------------------------------------ HEAD audited

def test_head_of_blobs_and_manifests_is_audited_like_get(moat):
    c = moat.client()
    img = build_image(n_layers=1)
    c.push_image("audit/app", img, tag="v1")
    layer = img.layer_digests[0]
    cases = [("HEAD", f"/v2/audit/app/manifests/v1", img.manifest_digest, "v1"),
             ("HEAD", f"/v2/audit/app/manifests/{img.manifest_digest}", img.manifest_digest, None),
             ("HEAD", f"/v2/audit/app/blobs/{layer}", layer, None),
             ("GET", f"/v2/audit/app/blobs/{layer}", layer, None)]
    ids = {}
    for method, path, digest, tag in cases:
        cid = str(uuid.uuid4())
        r = c.request(method, path, repo="audit/app", headers={"x-ms-correlation-request-id": cid,
                                                                "Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200, (method, path, r.status_code)
        ids[cid] = (method, digest, tag)
    # A HEAD without the right token is refused and recorded, as a GET is.
    other = moat.client()
    other.token(repo_scope("other/app", "pull"))
    denied = str(uuid.uuid4())
    r = c.session.head(f"{moat.base_url}/v2/audit/app/blobs/{layer}", timeout=30,
                       headers={"x-ms-correlation-request-id": denied,
                                "Authorization": "Bearer " + other.token(repo_scope("other/app", "pull"))})
    assert r.status_code == 401
    events = {e.get("CorrelationId"): e for e in moat.audit(repository="audit/app")}
    for cid, (method, digest, tag) in ids.items():
        e = events.get(cid)
        assert e, f"{method} {digest}: no audit row"
        assert e["OperationName"] == "Pull" and e["ResultType"] == "Success" and e["ResultDescription"] == "200", e
        assert e["Digest"] == digest and e.get("Tag") == tag and e["CallerIpAddress"] == "127.0.0.1", e
        assert e["Size"] and e["Size"] > 0, e
    assert events[denied]["OperationName"] == "Pull" and events[denied]["ResultType"] == "Denied", events[denied]


# ------------------------------------------------------------------------------------------------ Host

def test_absolute_form_wins_and_duplicate_host_is_refused(moat):
    other = moat.create_registry("other")
    here = moat.login_server

    def service(r: Raw) -> str:
        assert r.status == 401, r
        return r.headers["www-authenticate"].split('service="', 1)[1].split('"', 1)[0]

    assert service(raw(moat, get("/v2/", here))) == here
    deadline = time.monotonic() + 10  # the server reloads its registries within a second
    while service(raw(moat, get("/v2/", other))) != other:
        assert time.monotonic() < deadline, "the new registry is not served"
        time.sleep(0.2)
    # Absolute form: the target's authority, whatever Host says (and in whatever case and with user info).
    assert service(raw(moat, get(f"https://{other}/v2/", here))) == other
    assert service(raw(moat, get(f"https://{here}/v2/", other))) == here
    assert service(raw(moat, get(f"https://user@{other.upper()}/v2/", here))) == other
    # Two Host lines, different or equal: refused in the plane's format.
    for hosts in ((here, other), (other, here), (here, here)):
        req = "\r\n".join([f"GET /v2/ HTTP/1.1", f"Host: {hosts[0]}", f"Host: {hosts[1]}", "Connection: close",
                           "", ""]).encode()
        assert_oci(raw(moat, req), 400, "UNSUPPORTED")
        req = "\r\n".join(["GET /subscriptions?api-version=2022-12-01 HTTP/1.1", f"Host: {hosts[0]}",
                           f"Host: {hosts[1]}", "Connection: close", "", ""]).encode()
        assert_arm(raw(moat, req), 400, "InvalidHostHeader")
    # An invalid Host value is refused too.
    assert_oci(raw(moat, get("/v2/", "a b")), 400)
