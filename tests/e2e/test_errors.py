"""Table-driven raw HTTP checks of the OCI error codes: status, JSON body shape, and no 5xx."""
import json
import os
import uuid

import pytest
import requests

from conftest import (OCI_MANIFEST, assert_oci_error, build_image, parse_challenge, raw_request, repo_scope,
                      sha256)

REPO = "errors/repo"


def _upload(c, repo=REPO):
    r = c.start_upload(repo)
    assert r.status_code == 202, r.text
    return r.headers["Location"]


def _with_q(loc, q):
    return loc + ("&" if "?" in loc else "?") + q


# Each case: (id, function(client, server) -> response, expected statuses, expected codes)

def case_name_invalid_upload(c, s):
    return c.request("POST", "/v2/Bad_Upper/Repo/blobs/uploads/", scopes=[repo_scope(REPO)])


def case_name_invalid_manifest(c, s):
    return c.request("GET", "/v2/bad..name/manifests/latest", scopes=[repo_scope(REPO)])


def case_name_invalid_tags(c, s):
    return c.request("GET", "/v2/-leading-dash/tags/list", scopes=[repo_scope(REPO)])


def case_digest_wrong(c, s):
    loc = _upload(c)
    wrong = sha256(b"something else")
    return c.request("PUT", _with_q(loc, f"digest={wrong}"), repo=REPO, data=b"the actual bytes")


def case_digest_malformed(c, s):
    loc = _upload(c)
    return c.request("PUT", _with_q(loc, "digest=sha256:xyz"), repo=REPO, data=b"abc")


def case_digest_missing_on_put(c, s):
    loc = _upload(c)
    return c.request("PUT", loc, repo=REPO, data=b"abc")


def case_digest_monolithic_post_wrong(c, s):
    return c.request("POST", f"/v2/{REPO}/blobs/uploads/?digest={sha256(b'x')}", repo=REPO, data=b"y",
                     headers={"Content-Type": "application/octet-stream"})


def case_digest_unsupported_md5(c, s):
    loc = _upload(c)
    return c.request("PUT", _with_q(loc, "digest=md5:900150983cd24fb0d6963f7d28e17f72"), repo=REPO, data=b"abc")


def case_manifest_digest_mismatch(c, s):
    img = build_image(1)
    for dg, data in img.blobs.items():
        c.push_blob(REPO, data, dg)
    return c.put_manifest(REPO, sha256(b"not the manifest"), img.manifest_bytes)


def case_upload_gap(c, s):
    loc = _upload(c)
    r = c.request("PATCH", loc, repo=REPO, data=b"0123456789",
                  headers={"Content-Range": "0-9", "Content-Type": "application/octet-stream"})
    assert r.status_code == 202, f"first PATCH: {r.status_code} {r.text}"
    loc = r.headers.get("Location", loc)
    return c.request("PATCH", loc, repo=REPO, data=b"abcdefghij",
                     headers={"Content-Range": "20-29", "Content-Type": "application/octet-stream"})


def case_upload_overlap(c, s):
    loc = _upload(c)
    r = c.request("PATCH", loc, repo=REPO, data=b"0123456789",
                  headers={"Content-Range": "0-9", "Content-Type": "application/octet-stream"})
    assert r.status_code == 202, f"first PATCH: {r.status_code} {r.text}"
    loc = r.headers.get("Location", loc)
    return c.request("PATCH", loc, repo=REPO, data=b"abcdefghij",
                     headers={"Content-Range": "5-14", "Content-Type": "application/octet-stream"})


def case_upload_first_chunk_not_at_zero(c, s):
    loc = _upload(c)
    return c.request("PATCH", loc, repo=REPO, data=b"0123456789",
                     headers={"Content-Range": "10-19", "Content-Type": "application/octet-stream"})


def case_upload_unknown_get(c, s):
    return c.request("GET", f"/v2/{REPO}/blobs/uploads/{uuid.uuid4()}", repo=REPO)


def case_upload_unknown_patch(c, s):
    return c.request("PATCH", f"/v2/{REPO}/blobs/uploads/{uuid.uuid4()}", repo=REPO, data=b"abc",
                     headers={"Content-Type": "application/octet-stream"})


def case_upload_unknown_put(c, s):
    return c.request("PUT", f"/v2/{REPO}/blobs/uploads/{uuid.uuid4()}?digest={sha256(b'abc')}", repo=REPO,
                     data=b"abc")


def case_upload_unknown_delete(c, s):
    return c.request("DELETE", f"/v2/{REPO}/blobs/uploads/{uuid.uuid4()}", repo=REPO)


def case_upload_of_other_repo(c, s):
    """An upload session belongs to its repository: using it under another one is unknown."""
    loc = _upload(c, "errors/owner")
    other = loc.replace("errors/owner", REPO)
    assert other != loc
    return c.request("GET", other, repo=REPO)


def case_manifest_garbage(c, s):
    return c.put_manifest(REPO, "garbage", b"{this is not json")


def case_manifest_wrong_schema(c, s):
    return c.put_manifest(REPO, "schema", json.dumps({"schemaVersion": 1, "mediaType": OCI_MANIFEST}).encode())


def case_manifest_missing_config(c, s):
    return c.put_manifest(REPO, "noconfig", json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                                         "layers": []}).encode())


def case_manifest_blob_unknown(c, s):
    img = build_image(2)  # blobs never pushed
    return c.put_manifest(REPO, "dangling", img.manifest_bytes)


def case_manifest_blob_unknown_layer_only(c, s):
    img = build_image(2)
    c.push_blob(REPO, img.config_bytes)  # config present, layers missing
    c.push_blob(REPO, img.layers[0][1])
    return c.put_manifest(REPO, "dangling2", img.manifest_bytes)


def case_manifest_unknown_tag(c, s):
    return c.get_manifest(REPO, "no-such-tag")


def case_manifest_unknown_digest(c, s):
    return c.get_manifest(REPO, sha256(b"no such manifest"))


def case_manifest_unknown_delete(c, s):
    return c.request("DELETE", f"/v2/{REPO}/manifests/{sha256(b'nothing')}", repo=REPO)


def case_blob_unknown_get(c, s):
    return c.get_blob(REPO, sha256(os.urandom(16)))


def case_blob_unknown_delete(c, s):
    return c.request("DELETE", f"/v2/{REPO}/blobs/{sha256(os.urandom(16))}", repo=REPO)


def case_size_invalid_patch(c, s):
    loc = _upload(c)
    return c.request("PATCH", loc, repo=REPO, data=b"0123456789",
                     headers={"Content-Range": "0-99", "Content-Type": "application/octet-stream"})


def case_size_manifest_too_big(c, s):
    img = build_image(1)
    for dg, data in img.blobs.items():
        c.push_blob(REPO, data, dg)
    m = json.loads(img.manifest_bytes)
    m["annotations"] = {"pad": "x" * (4 * 1024 * 1024 + 10)}
    return raw_request(s, "PUT", f"/v2/{REPO}/manifests/huge", {
        "Authorization": "Bearer " + c.token(repo_scope(REPO)), "Content-Type": OCI_MANIFEST}, json.dumps(m).encode())


def case_unauthorized_no_token(c, s):
    return c.request("GET", f"/v2/{REPO}/tags/list", auth=False)


def case_unauthorized_garbage_token(c, s):
    return c.session.get(c.url(f"/v2/{REPO}/tags/list"), headers={"Authorization": "Bearer not.a.jwt"},
                         timeout=30)


def case_denied_other_repo_token(c, s):
    # A token that only carries repository errors/a is used on errors/b.
    return c.request("GET", "/v2/errors/b/tags/list", scopes=[repo_scope("errors/a")])


def case_denied_pull_only_push(c, s):
    return c.request("POST", f"/v2/{REPO}/blobs/uploads/", scopes=[repo_scope(REPO, "pull")])


def case_denied_pull_only_delete(c, s):
    img = build_image(1)
    c.push_image(REPO, img, "del")
    return c.request("DELETE", f"/v2/{REPO}/manifests/{img.manifest_digest}", scopes=[repo_scope(REPO, "pull")])


def case_name_unknown_tags(c, s):
    return c.request("GET", "/v2/errors/never-pushed/tags/list", repo="errors/never-pushed")


CASES = [
    ("NAME_INVALID upload", case_name_invalid_upload, {400}, {"NAME_INVALID"}),
    ("NAME_INVALID manifest", case_name_invalid_manifest, {400}, {"NAME_INVALID"}),
    ("NAME_INVALID tags", case_name_invalid_tags, {400}, {"NAME_INVALID"}),
    ("DIGEST_INVALID wrong digest", case_digest_wrong, {400}, {"DIGEST_INVALID"}),
    ("DIGEST_INVALID malformed", case_digest_malformed, {400}, {"DIGEST_INVALID"}),
    ("DIGEST_INVALID missing digest on PUT", case_digest_missing_on_put, {400}, {"DIGEST_INVALID"}),
    ("DIGEST_INVALID monolithic POST", case_digest_monolithic_post_wrong, {400}, {"DIGEST_INVALID"}),
    ("UNSUPPORTED md5", case_digest_unsupported_md5, {400}, {"DIGEST_INVALID", "UNSUPPORTED"}),
    ("DIGEST_INVALID manifest by wrong digest", case_manifest_digest_mismatch, {400}, {"DIGEST_INVALID"}),
    ("BLOB_UPLOAD_INVALID gap", case_upload_gap, {416}, {"BLOB_UPLOAD_INVALID"}),
    ("BLOB_UPLOAD_INVALID overlap", case_upload_overlap, {416}, {"BLOB_UPLOAD_INVALID"}),
    ("BLOB_UPLOAD_INVALID first chunk offset", case_upload_first_chunk_not_at_zero, {416},
     {"BLOB_UPLOAD_INVALID"}),
    ("BLOB_UPLOAD_UNKNOWN GET", case_upload_unknown_get, {404}, {"BLOB_UPLOAD_UNKNOWN"}),
    ("BLOB_UPLOAD_UNKNOWN PATCH", case_upload_unknown_patch, {404}, {"BLOB_UPLOAD_UNKNOWN"}),
    ("BLOB_UPLOAD_UNKNOWN PUT", case_upload_unknown_put, {404}, {"BLOB_UPLOAD_UNKNOWN"}),
    ("BLOB_UPLOAD_UNKNOWN DELETE", case_upload_unknown_delete, {404}, {"BLOB_UPLOAD_UNKNOWN"}),
    ("BLOB_UPLOAD_UNKNOWN other repo", case_upload_of_other_repo, {404}, {"BLOB_UPLOAD_UNKNOWN"}),
    ("MANIFEST_INVALID garbage", case_manifest_garbage, {400}, {"MANIFEST_INVALID"}),
    ("MANIFEST_INVALID schemaVersion", case_manifest_wrong_schema, {400}, {"MANIFEST_INVALID"}),
    ("MANIFEST_INVALID no config", case_manifest_missing_config, {400}, {"MANIFEST_INVALID"}),
    ("MANIFEST_BLOB_UNKNOWN", case_manifest_blob_unknown, {400}, {"MANIFEST_BLOB_UNKNOWN"}),
    ("MANIFEST_BLOB_UNKNOWN layer", case_manifest_blob_unknown_layer_only, {400}, {"MANIFEST_BLOB_UNKNOWN"}),
    ("MANIFEST_UNKNOWN tag", case_manifest_unknown_tag, {404}, {"MANIFEST_UNKNOWN"}),
    ("MANIFEST_UNKNOWN digest", case_manifest_unknown_digest, {404}, {"MANIFEST_UNKNOWN"}),
    ("MANIFEST_UNKNOWN delete", case_manifest_unknown_delete, {404}, {"MANIFEST_UNKNOWN"}),
    ("BLOB_UNKNOWN GET", case_blob_unknown_get, {404}, {"BLOB_UNKNOWN"}),
    ("BLOB_UNKNOWN DELETE", case_blob_unknown_delete, {404}, {"BLOB_UNKNOWN"}),
    ("SIZE_INVALID Content-Range vs Content-Length", case_size_invalid_patch, {400, 416}, {"SIZE_INVALID"}),
    ("SIZE_INVALID manifest over 4 MiB", case_size_manifest_too_big, {400, 413}, {"SIZE_INVALID"}),
    ("UNAUTHORIZED no token", case_unauthorized_no_token, {401}, {"UNAUTHORIZED"}),
    ("UNAUTHORIZED garbage token", case_unauthorized_garbage_token, {401}, {"UNAUTHORIZED"}),
    ("DENIED token of other repo", case_denied_other_repo_token, {401, 403}, {"UNAUTHORIZED", "DENIED"}),
    ("DENIED pull-only push", case_denied_pull_only_push, {401, 403}, {"UNAUTHORIZED", "DENIED"}),
    ("DENIED pull-only delete", case_denied_pull_only_delete, {401, 403}, {"UNAUTHORIZED", "DENIED"}),
    ("NAME_UNKNOWN tags of unknown repo", case_name_unknown_tags, {404}, {"NAME_UNKNOWN"}),
]


@pytest.mark.parametrize("name,fn,statuses,codes", CASES, ids=[c[0] for c in CASES])
def test_error_code(moat, name, fn, statuses, codes):
    c = moat.client()
    # Give the repository some content so that "unknown" answers are not just "empty repository".
    c.push_blob(REPO, b"seed blob for " + name.encode())
    r = fn(c, moat)
    assert_oci_error(r, codes, statuses)
    if r.status_code == 401:
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer "), \
            f"401 without a Bearer challenge: {r.headers}"


def test_error_content_type_is_json(moat):
    c = moat.client()
    r = c.get_blob(REPO, sha256(b"nope"))
    assert r.status_code == 404
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == "application/json", r.headers


def test_head_unknown_blob_and_manifest_are_404_without_body(moat):
    c = moat.client()
    r = c.head_blob(REPO, sha256(b"nope"))
    assert r.status_code == 404
    assert r.content == b""
    r = c.get_manifest(REPO, "nope", method="HEAD")
    assert r.status_code == 404
    assert r.content == b""


def test_unauthorized_challenge_shape(moat):
    r = requests.get(moat.base_url + "/v2/", verify=moat.verify, timeout=30)
    assert_oci_error(r, "UNAUTHORIZED", 401)
    scheme, p = parse_challenge(r.headers["WWW-Authenticate"])
    assert scheme == "Bearer"
    assert p.get("realm") == f"{moat.base_url}/oauth2/token", p
    assert p.get("service") == moat.login_server, p
    assert "scope" not in p, p

    r = requests.get(f"{moat.base_url}/v2/{REPO}/tags/list", verify=moat.verify, timeout=30)
    assert_oci_error(r, "UNAUTHORIZED", 401)
    scheme, p = parse_challenge(r.headers["WWW-Authenticate"])
    assert scheme == "Bearer"
    assert p.get("realm") == f"{moat.base_url}/oauth2/token", p
    assert p.get("service") == moat.login_server, p
    assert p.get("scope") == f"repository:{REPO}:pull", p


def test_unauthorized_challenge_for_push_asks_push(moat):
    r = requests.post(f"{moat.base_url}/v2/{REPO}/blobs/uploads/", verify=moat.verify, timeout=30)
    assert_oci_error(r, "UNAUTHORIZED", 401)
    _, p = parse_challenge(r.headers["WWW-Authenticate"])
    actions = set(p.get("scope", "").rsplit(":", 1)[-1].split(","))
    assert p.get("scope", "").startswith(f"repository:{REPO}:"), p
    assert "push" in actions, p


def test_insufficient_scope_challenge_names_needed_scope(moat):
    c = moat.client()
    r = c.request("POST", f"/v2/{REPO}/blobs/uploads/", scopes=[repo_scope(REPO, "pull")])
    assert r.status_code in (401, 403), r.status_code
    if r.status_code == 401:
        scheme, p = parse_challenge(r.headers["WWW-Authenticate"])
        assert scheme == "Bearer"
        assert "push" in p.get("scope", ""), p
