"""Isolation: blobs are visible only in the repository they were pushed to, and never across registries."""
import pytest
import requests

from conftest import Client, assert_oci_error, build_image, get_token, repo_scope, sha256

REG = "isolated"


@pytest.fixture(params=["http", "https"])
def server_with_second_registry(request, moat_factory):
    """A server (HTTP or HTTPS) with a second registry `isolated` created while it is stopped."""
    s = moat_factory(https=request.param == "https")
    s.stop()
    s.create_registry(REG)
    s.start()
    return s


def other_client(s) -> Client:
    return s.client(host=f"{REG}.localhost:{s.port}")


def test_blob_invisible_from_other_repository(moat):
    c = moat.client()
    data = b"only in A " * 50
    dg = c.push_blob("iso/a", data)
    assert c.head_blob("iso/a", dg).status_code == 200
    # B exists too (has other content), and still cannot see A's blob
    c.push_blob("iso/b", b"b's own blob")
    h = c.head_blob("iso/b", dg)
    assert h.status_code == 404, h.status_code
    assert_oci_error(c.get_blob("iso/b", dg), "BLOB_UNKNOWN", 404)
    # nor can a repository that has never been pushed to
    assert_oci_error(c.get_blob("iso/never", dg), "BLOB_UNKNOWN", 404)
    # ranges neither
    r = c.get_blob("iso/b", dg, headers={"Range": "bytes=0-9"})
    assert_oci_error(r, "BLOB_UNKNOWN", 404)


def test_manifest_invisible_from_other_repository(moat):
    c = moat.client()
    img = build_image(1)
    c.push_image("iso/ma", img, "t")
    assert_oci_error(c.get_manifest("iso/mb", img.manifest_digest), "MANIFEST_UNKNOWN", 404)
    c.push_blob("iso/mb", b"x")
    assert_oci_error(c.get_manifest("iso/mb", img.manifest_digest), "MANIFEST_UNKNOWN", 404)
    assert_oci_error(c.get_manifest("iso/mb", "t"), "MANIFEST_UNKNOWN", 404)


def test_second_registry_answers_its_host(server_with_second_registry):
    s = server_with_second_registry
    o = other_client(s)
    r = o.request("GET", "/v2/", scopes=[repo_scope("x/y", "pull")])
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    # its challenge names its own login server
    r = o.request("GET", "/v2/", auth=False)
    assert r.status_code == 401
    assert f'service="{o.host}"' in r.headers.get("WWW-Authenticate", ""), r.headers


def test_blob_invisible_from_other_registry(server_with_second_registry):
    s = server_with_second_registry
    d = s.client()
    o = other_client(s)
    data = b"default registry content " * 10
    dg = d.push_blob("iso/shared-name", data)
    img = build_image(1)
    d.push_image("iso/shared-name", img, "t")
    assert d.head_blob("iso/shared-name", dg).status_code == 200

    # same repository name in the other registry: nothing
    h = o.head_blob("iso/shared-name", dg)
    assert h.status_code == 404, h.status_code
    assert_oci_error(o.get_blob("iso/shared-name", dg), "BLOB_UNKNOWN", 404)
    assert_oci_error(o.get_manifest("iso/shared-name", img.manifest_digest), "MANIFEST_UNKNOWN", 404)
    assert_oci_error(o.get_manifest("iso/shared-name", "t"), "MANIFEST_UNKNOWN", 404)
    # even once that repository exists there
    o.push_blob("iso/shared-name", b"other registry content")
    o.push_image("iso/shared-name", build_image(1), "own")
    assert o.head_blob("iso/shared-name", dg).status_code == 404
    assert_oci_error(o.get_blob("iso/shared-name", dg), "BLOB_UNKNOWN", 404)
    assert_oci_error(o.get_manifest("iso/shared-name", "t"), "MANIFEST_UNKNOWN", 404)
    assert o.tags("iso/shared-name") == ["own"]
    # catalogs are separate
    r = o.request("GET", "/v2/_catalog", scopes=["registry:catalog:*"])
    assert r.status_code == 200
    assert r.json()["repositories"] == ["iso/shared-name"]

    # and the other way round
    odata = b"only in the other registry"
    odg = o.push_blob("iso/other-only", odata)
    assert_oci_error(d.get_blob("iso/other-only", odg), "BLOB_UNKNOWN", 404)
    assert d.head_blob("iso/shared-name", odg).status_code == 404


def test_mount_across_registries_is_refused(server_with_second_registry):
    s = server_with_second_registry
    d = s.client()
    o = other_client(s)
    data = b"may not cross"
    dg = d.push_blob("iso/src", data)
    o.push_blob("iso/src", b"the other registry's own iso/src")
    scopes = [repo_scope("iso/dst", "pull,push"), repo_scope("iso/src", "pull")]
    r = o.request("POST", f"/v2/iso/dst/blobs/uploads/?mount={dg}&from=iso/src", scopes=scopes)
    assert r.status_code != 201, "a blob of one registry was mounted into another"
    assert r.status_code in (202, 401, 403, 404), f"{r.status_code} {r.text}"
    assert o.head_blob("iso/dst", dg).status_code == 404


def test_token_of_one_registry_refused_on_other(server_with_second_registry):
    s = server_with_second_registry
    d = s.client()
    o = other_client(s)
    d.push_blob("iso/tok", b"x")
    o.push_blob("iso/tok", b"x")
    default_token = d.token(repo_scope("iso/tok"))
    r = o.request("GET", "/v2/iso/tok/tags/list", auth=False,
                  headers={"Authorization": f"Bearer {default_token}"})
    assert_oci_error(r, "UNAUTHORIZED", 401)
    other_token = o.token(repo_scope("iso/tok"))
    r = d.request("GET", "/v2/iso/tok/tags/list", auth=False, headers={"Authorization": f"Bearer {other_token}"})
    assert_oci_error(r, "UNAUTHORIZED", 401)


def test_registry_created_while_running(moat_http):
    """`moat registry create` against the data dir of a running server; the server serves it (after at most a
    restart, which this test allows)."""
    s = moat_http
    host = s.create_registry("liveregistry")
    r = requests.get(s.base_url + "/v2/", headers={"Host": host}, timeout=30)
    if f'service="{host}"' not in r.headers.get("WWW-Authenticate", ""):
        s.restart()
    tok = get_token(s.base_url, host, [repo_scope("live/x")], "admin", s.admin_password, host=host)
    c = s.client(host=host)
    dg = c.push_blob("live/x", b"live")
    assert c.head_blob("live/x", dg).status_code == 200
    assert s.client().head_blob("live/x", dg).status_code == 404
    assert tok


def test_upload_session_not_usable_from_other_registry(server_with_second_registry):
    s = server_with_second_registry
    d = s.client()
    o = other_client(s)
    o.push_blob("iso/up", b"exists there")
    r = d.start_upload("iso/up")
    loc = r.headers["Location"]
    r = o.request("PATCH", loc, repo="iso/up", data=b"intruder", headers={"Content-Type": "application/octet-stream"})
    assert_oci_error(r, "BLOB_UPLOAD_UNKNOWN", 404)
    r = o.request("GET", loc, repo="iso/up")
    assert_oci_error(r, "BLOB_UPLOAD_UNKNOWN", 404)
    # still usable where it was started
    data = b"legit"
    r = d.request("PUT", loc + ("&" if "?" in loc else "?") + f"digest={sha256(data)}", repo="iso/up", data=data)
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    assert o.head_blob("iso/up", sha256(data)).status_code == 404
