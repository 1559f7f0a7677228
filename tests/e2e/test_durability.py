"""Durability: uploads survive restarts, acknowledged writes survive kill -9, torn uploads leave nothing."""
import http.client
import os
import ssl
import threading
import time
import urllib.parse

from conftest import assert_oci_error, build_image, sha256


def _with_q(loc, q):
    return loc + ("&" if "?" in loc else "?") + q


def test_chunked_upload_resumes_after_restart(moat):
    c = moat.client()
    repo = "durable/chunked"
    data = os.urandom(3 * 1024 * 1024 + 123)
    parts = [data[:1024 * 1024], data[1024 * 1024:2 * 1024 * 1024], data[2 * 1024 * 1024:]]
    r = c.start_upload(repo)
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    off = 0
    for p in parts[:2]:
        r = c.request("PATCH", loc, repo=repo, data=p, headers={
            "Content-Type": "application/octet-stream", "Content-Range": f"{off}-{off + len(p) - 1}"})
        assert r.status_code == 202, f"{r.status_code} {r.text}"
        off += len(p)
        assert r.headers["Range"] == f"0-{off - 1}"
        loc = r.headers["Location"]

    moat.restart()
    c.reset()

    s = c.request("GET", loc, repo=repo)
    assert s.status_code == 204, f"upload status after restart: {s.status_code} {s.text}"
    assert s.headers.get("Range") == f"0-{off - 1}", s.headers
    new_loc = s.headers.get("Location")
    assert new_loc, "upload status must carry the session Location"
    assert urllib.parse.urlparse(c.url(new_loc)).path == urllib.parse.urlparse(c.url(loc)).path

    r = c.request("PATCH", new_loc, repo=repo, data=parts[2], headers={
        "Content-Type": "application/octet-stream", "Content-Range": f"{off}-{off + len(parts[2]) - 1}"})
    assert r.status_code == 202, f"{r.status_code} {r.text}"
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    r = c.request("PUT", _with_q(r.headers["Location"], f"digest={sha256(data)}"), repo=repo)
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    g = c.get_blob(repo, sha256(data))
    assert g.status_code == 200
    assert g.content == data


def test_upload_survives_kill9_between_chunks(moat):
    c = moat.client()
    repo = "durable/chunked-kill"
    data = os.urandom(600_000)
    r = c.start_upload(repo)
    loc = r.headers["Location"]
    r = c.request("PATCH", loc, repo=repo, data=data[:400_000], headers={
        "Content-Type": "application/octet-stream", "Content-Range": "0-399999"})
    assert r.status_code == 202
    loc = r.headers["Location"]
    moat.kill9()
    moat.start()
    c.reset()
    s = c.request("GET", loc, repo=repo)
    assert s.status_code == 204, f"{s.status_code} {s.text}"
    assert s.headers.get("Range") == "0-399999"
    r = c.request("PUT", _with_q(s.headers.get("Location", loc), f"digest={sha256(data)}"), repo=repo,
                  data=data[400_000:], headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    assert c.get_blob(repo, sha256(data)).content == data


def test_blob_put_acknowledged_survives_kill9(moat):
    c = moat.client()
    repo = "durable/blob"
    data = os.urandom(2 * 1024 * 1024)
    dg = c.push_blob(repo, data)  # asserts the 201
    moat.kill9()
    moat.start()
    c.reset()
    h = c.head_blob(repo, dg)
    assert h.status_code == 200, h.status_code
    assert int(h.headers["Content-Length"]) == len(data)
    g = c.get_blob(repo, dg)
    assert g.status_code == 200
    assert sha256(g.content) == dg


def test_manifest_put_acknowledged_survives_kill9(moat):
    c = moat.client()
    repo = "durable/manifest"
    img = build_image(3)
    r = c.push_image(repo, img, "v1")
    assert r.status_code == 201
    moat.kill9()
    moat.start()
    c.reset()
    for ref in ("v1", img.manifest_digest):
        g = c.get_manifest(repo, ref)
        assert g.status_code == 200, f"{ref}: {g.status_code} {g.text}"
        assert g.content == img.manifest_bytes
        assert g.headers["Docker-Content-Digest"] == img.manifest_digest
    for dg, data in img.blobs.items():
        g = c.get_blob(repo, dg)
        assert g.status_code == 200 and g.content == data
    assert "v1" in c.tags(repo)


def test_many_acknowledged_writes_then_kill9(moat):
    """Every write acknowledged before the kill is there after it (not just the last one)."""
    c = moat.client()
    repo = "durable/many"
    imgs = [build_image(1, seed=f"many-{i}") for i in range(8)]
    for i, img in enumerate(imgs):
        c.push_image(repo, img, f"t{i}")
    moat.kill9()
    moat.start()
    c.reset()
    assert sorted(c.tags(repo)) == sorted(f"t{i}" for i in range(8))
    for i, img in enumerate(imgs):
        assert c.get_manifest(repo, f"t{i}").content == img.manifest_bytes


def _raw_connection(moat):
    if moat.https:
        ctx = ssl.create_default_context(cafile=str(moat.ca_path))
        return http.client.HTTPSConnection("127.0.0.1", moat.port, context=ctx, timeout=60)
    return http.client.HTTPConnection("127.0.0.1", moat.port, timeout=60)


def test_kill9_mid_streaming_upload_leaves_no_blob(moat):
    c = moat.client()
    repo = "durable/torn"
    size = 64 * 1024 * 1024
    data = os.urandom(size)
    dg = sha256(data)

    r = c.start_upload(repo)
    assert r.status_code == 202
    loc = urllib.parse.urlparse(c.url(r.headers["Location"]))
    path = loc.path + "?" + (loc.query + "&" if loc.query else "") + f"digest={dg}"
    token = c.token(f"repository:{repo}:pull,push,delete")

    conn = _raw_connection(moat)
    conn.putrequest("PUT", path, skip_host=True)
    conn.putheader("Host", moat.login_server)
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    sent = 0
    half = size // 2
    step = 256 * 1024
    while sent < half:
        conn.send(data[sent:sent + step])
        sent += step
    time.sleep(0.3)  # let the server take in what was sent
    moat.kill9()
    try:
        conn.close()
    except Exception:
        pass

    moat.start()
    c.reset()
    h = c.head_blob(repo, dg)
    assert h.status_code == 404, f"a torn upload must not produce a blob: HEAD -> {h.status_code}"
    assert_oci_error(c.get_blob(repo, dg), "BLOB_UNKNOWN", 404)

    # the whole body, uploaded properly afterwards, makes a correct blob
    c.push_blob(repo, data, dg)
    g = c.get_blob(repo, dg)
    assert g.status_code == 200
    assert len(g.content) == size and sha256(g.content) == dg


def test_kill9_mid_monolithic_post_leaves_no_blob(moat_http):
    """Same over plain HTTP with the single-request POST ?digest= form."""
    moat = moat_http
    c = moat.client()
    repo = "durable/torn-post"
    size = 48 * 1024 * 1024
    data = os.urandom(size)
    dg = sha256(data)
    token = c.token(f"repository:{repo}:pull,push,delete")

    conn = _raw_connection(moat)
    conn.putrequest("POST", f"/v2/{repo}/blobs/uploads/?digest={dg}", skip_host=True)
    conn.putheader("Host", moat.login_server)
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    killed = threading.Event()

    def send():
        try:
            for off in range(0, size * 3 // 4, 256 * 1024):
                conn.send(data[off:off + 256 * 1024])
        except OSError:
            pass
        finally:
            killed.wait(30)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    time.sleep(0.5)
    moat.kill9()
    killed.set()
    t.join(30)
    conn.close()
    moat.start()
    c.reset()
    assert c.head_blob(repo, dg).status_code == 404
    assert_oci_error(c.get_blob(repo, dg), "BLOB_UNKNOWN", 404)


def test_graceful_restart_keeps_everything(moat):
    c = moat.client()
    repo = "durable/restart"
    img = build_image(2)
    c.push_image(repo, img, "a")
    pw = moat.admin_password
    ca_before = moat.ca_path.read_bytes()
    moat.restart()
    c.reset()
    assert moat.ca_path.read_bytes() == ca_before, "the CA must be kept across restarts"
    assert moat.admin_password == pw
    assert c.get_manifest(repo, "a").content == img.manifest_bytes
