"""OCI Distribution API behaviour over raw HTTP: pagination, manifests, ranges, uploads, deletes, mounts."""
import hashlib
import json
import os
import re
import urllib.parse

import pytest

from conftest import (DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, assert_oci_error, build_image, repo_scope, sha256)

LINK_RE = re.compile(r'^<([^>]+)>;\s*rel="next"$')


def next_link(r):
    link = r.headers.get("Link")
    if not link:
        return None
    m = LINK_RE.match(link.strip())
    assert m, f"malformed Link header: {link!r}"
    return m.group(1)


def test_base_endpoint(moat):
    c = moat.client()
    r = c.request("GET", "/v2/", scopes=[repo_scope("any/repo", "pull")])
    assert r.status_code == 200, r.text
    assert r.headers.get("Docker-Distribution-Api-Version") == "registry/2.0"


def test_tag_list_pagination(moat):
    c = moat.client()
    repo = "api/tags"
    img = build_image(1)
    tags = ["v1", "v10", "v2", "alpha", "beta", "zeta", "Gamma"]
    c.push_image(repo, img, tags[0])
    for t in tags[1:]:
        r = c.put_manifest(repo, t, img.manifest_bytes)
        assert r.status_code == 201, r.text
    expected = sorted(tags)

    r = c.request("GET", f"/v2/{repo}/tags/list", repo=repo)
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == repo
    assert body["tags"] == expected, "tags must be listed in lexical order"
    assert "Link" not in r.headers

    # n=3 pages through with Link rel=next
    seen, url, pages = [], f"/v2/{repo}/tags/list?n=3", 0
    while url:
        r = c.request("GET", url, repo=repo)
        assert r.status_code == 200, r.text
        page = r.json()["tags"]
        assert len(page) <= 3
        seen += page
        pages += 1
        url = next_link(r)
        if url:
            q = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
            assert urllib.parse.urlparse(url).path == f"/v2/{repo}/tags/list", url
            assert q.get("n") == ["3"], url
            assert q.get("last") == [page[-1]], url
        assert pages < 10
    assert seen == expected
    assert pages == 3

    # last= alone
    r = c.request("GET", f"/v2/{repo}/tags/list?last=beta", repo=repo)
    assert r.status_code == 200
    assert r.json()["tags"] == [t for t in expected if t > "beta"]

    # exact page boundary: a Link there (allowed) must lead to an empty, final page
    r = c.request("GET", f"/v2/{repo}/tags/list?n={len(expected)}", repo=repo)
    assert r.json()["tags"] == expected
    link = next_link(r)
    if link:
        r = c.request("GET", link, repo=repo)
        assert r.status_code == 200
        assert (r.json().get("tags") or []) == []
        assert next_link(r) is None


def test_catalog_pagination(moat):
    c = moat.client()
    repos = ["cat/a", "cat/b", "cat/c", "cat/d/e"]
    img = build_image(1)
    for repo in repos:
        c.push_image(repo, img, "t")
    cat = ["registry:catalog:*"]
    r = c.request("GET", "/v2/_catalog", scopes=cat)
    assert r.status_code == 200, r.text
    all_repos = r.json()["repositories"]
    assert all_repos == sorted(all_repos)
    for repo in repos:
        assert repo in all_repos

    seen, url = [], "/v2/_catalog?n=2"
    for _ in range(20):
        r = c.request("GET", url, scopes=cat)
        assert r.status_code == 200, r.text
        page = r.json()["repositories"]
        assert len(page) <= 2
        seen += page
        url = next_link(r)
        if not url:
            break
        q = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
        assert q.get("n") == ["2"] and q.get("last") == [page[-1]], url
        assert urllib.parse.urlparse(url).path == "/v2/_catalog"
    assert seen == all_repos


def test_catalog_needs_catalog_scope(moat):
    c = moat.client()
    r = c.request("GET", "/v2/_catalog", auth=False)
    assert_oci_error(r, "UNAUTHORIZED", 401)


def test_manifest_get_head_by_tag_and_digest(moat):
    c = moat.client()
    repo = "api/manifests"
    img = build_image(2)
    r = c.push_image(repo, img, "1.0")
    assert r.headers.get("Docker-Content-Digest") == img.manifest_digest
    assert r.headers.get("Location"), "PUT manifest must answer a Location"

    for ref in ("1.0", img.manifest_digest):
        g = c.get_manifest(repo, ref)
        assert g.status_code == 200, g.text
        assert g.content == img.manifest_bytes, "manifest bytes must be returned unchanged"
        assert g.headers["Docker-Content-Digest"] == img.manifest_digest
        assert g.headers["Content-Type"] == OCI_MANIFEST
        h = c.get_manifest(repo, ref, method="HEAD")
        assert h.status_code == 200
        assert h.headers["Docker-Content-Digest"] == img.manifest_digest
        assert int(h.headers["Content-Length"]) == len(img.manifest_bytes)
        assert h.headers["Content-Type"] == OCI_MANIFEST
        assert h.content == b""


def test_accept_negotiation(moat):
    c = moat.client()
    repo = "api/accept"
    oci = build_image(1)
    docker = build_image(1, docker=True)
    c.push_image(repo, oci, "oci")
    c.push_image(repo, docker, "docker")

    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": oci.manifest_digest, "size": len(oci.manifest_bytes),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }
    index_bytes = json.dumps(index).encode()
    r = c.put_manifest(repo, "index", index_bytes, OCI_INDEX)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == sha256(index_bytes)

    for tag, mt, body in (("oci", OCI_MANIFEST, oci.manifest_bytes), ("docker", DOCKER_MANIFEST,
                                                                       docker.manifest_bytes),
                          ("index", OCI_INDEX, index_bytes)):
        # exact Accept
        g = c.get_manifest(repo, tag, accept=mt)
        assert g.status_code == 200, f"{tag}: {g.status_code} {g.text}"
        assert g.headers["Content-Type"] == mt
        assert g.content == body
        # Accept list with q-values and several types
        g = c.get_manifest(repo, tag, accept=f"{DOCKER_MANIFEST};q=0.9, {OCI_MANIFEST}, {OCI_INDEX};q=0.5")
        assert g.status_code == 200
        assert g.headers["Content-Type"] == mt
        assert g.content == body


def test_blob_get_head_and_range(moat):
    c = moat.client()
    repo = "api/blobs"
    data = bytes(range(256)) * 40
    dg = c.push_blob(repo, data)
    h = c.head_blob(repo, dg)
    assert h.status_code == 200
    assert int(h.headers["Content-Length"]) == len(data)
    assert h.headers["Docker-Content-Digest"] == dg
    g = c.get_blob(repo, dg)
    assert g.status_code == 200 and g.content == data
    assert g.headers["Docker-Content-Digest"] == dg

    r = c.get_blob(repo, dg, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206, r.status_code
    assert r.content == data[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert int(r.headers["Content-Length"]) == 100

    r = c.get_blob(repo, dg, headers={"Range": f"bytes={len(data) - 10}-"})
    assert r.status_code == 206
    assert r.content == data[-10:]
    assert r.headers["Content-Range"] == f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}"

    r = c.get_blob(repo, dg, headers={"Range": f"bytes={len(data) + 10}-{len(data) + 20}"})
    assert r.status_code == 416, r.status_code


def test_monolithic_post_with_digest(moat):
    c = moat.client()
    repo = "api/mono"
    data = b"monolithic upload body " * 100
    dg = sha256(data)
    r = c.request("POST", f"/v2/{repo}/blobs/uploads/?digest={dg}", repo=repo, data=data,
                  headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    assert r.headers.get("Docker-Content-Digest") == dg
    assert urllib.parse.urlparse(r.headers["Location"]).path == f"/v2/{repo}/blobs/{dg}"
    g = c.get_blob(repo, dg)
    assert g.status_code == 200 and g.content == data


def test_chunked_upload_with_status(moat):
    c = moat.client()
    repo = "api/chunked"
    chunks = [b"a" * 1000, b"b" * 2000, b"c" * 7]
    data = b"".join(chunks)
    r = c.start_upload(repo)
    assert r.status_code == 202
    loc = r.headers["Location"]
    off = 0
    for ch in chunks[:-1]:
        r = c.request("PATCH", loc, repo=repo, data=ch, headers={
            "Content-Type": "application/octet-stream", "Content-Range": f"{off}-{off + len(ch) - 1}"})
        assert r.status_code == 202, f"{r.status_code} {r.text}"
        off += len(ch)
        assert r.headers["Range"] == f"0-{off - 1}"
        loc = r.headers["Location"]
    s = c.request("GET", loc, repo=repo)
    assert s.status_code == 204, s.status_code
    assert s.headers["Range"] == f"0-{off - 1}"
    # the last chunk goes with the closing PUT
    r = c.request("PUT", loc + ("&" if "?" in loc else "?") + f"digest={sha256(data)}", repo=repo,
                  data=chunks[-1], headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    assert c.get_blob(repo, sha256(data)).content == data
    # the session is gone after completion
    s = c.request("GET", loc, repo=repo)
    assert_oci_error(s, "BLOB_UPLOAD_UNKNOWN", 404)


def test_patch_without_content_range_streams(moat):
    c = moat.client()
    repo = "api/stream"
    data = b"streamed" * 5000
    r = c.start_upload(repo)
    loc = r.headers["Location"]
    r = c.request("PATCH", loc, repo=repo, data=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    loc = r.headers["Location"]
    r = c.request("PUT", loc + ("&" if "?" in loc else "?") + f"digest={sha256(data)}", repo=repo)
    assert r.status_code == 201, r.text
    assert c.get_blob(repo, sha256(data)).content == data


def test_upload_cancel(moat):
    c = moat.client()
    repo = "api/cancel"
    r = c.start_upload(repo)
    loc = r.headers["Location"]
    r = c.request("PATCH", loc, repo=repo, data=b"x" * 10, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202
    loc = r.headers["Location"]
    r = c.request("DELETE", loc, repo=repo)
    assert r.status_code == 204, f"{r.status_code} {r.text}"
    assert_oci_error(c.request("GET", loc, repo=repo), "BLOB_UPLOAD_UNKNOWN", 404)
    assert_oci_error(c.request("PUT", loc + ("&" if "?" in loc else "?") + f"digest={sha256(b'x' * 10)}",
                               repo=repo), "BLOB_UPLOAD_UNKNOWN", 404)


def test_delete_blob(moat):
    c = moat.client()
    repo = "api/delblob"
    dg = c.push_blob(repo, b"to be deleted")
    r = c.request("DELETE", f"/v2/{repo}/blobs/{dg}", repo=repo)
    assert r.status_code == 202, f"{r.status_code} {r.text}"
    assert c.head_blob(repo, dg).status_code == 404
    assert_oci_error(c.get_blob(repo, dg), "BLOB_UNKNOWN", 404)


def test_delete_manifest_and_tag(moat):
    c = moat.client()
    repo = "api/delmanifest"
    img = build_image(1)
    c.push_image(repo, img, "keep")
    assert c.put_manifest(repo, "drop", img.manifest_bytes).status_code == 201
    assert sorted(c.tags(repo)) == ["drop", "keep"]

    # delete a tag: the manifest stays reachable by digest and by the other tag
    r = c.request("DELETE", f"/v2/{repo}/manifests/drop", repo=repo)
    assert r.status_code == 202, f"{r.status_code} {r.text}"
    assert c.tags(repo) == ["keep"]
    assert_oci_error(c.get_manifest(repo, "drop"), "MANIFEST_UNKNOWN", 404)
    assert c.get_manifest(repo, img.manifest_digest).status_code == 200
    assert c.get_manifest(repo, "keep").status_code == 200

    # delete the manifest by digest: tags pointing at it go too
    r = c.request("DELETE", f"/v2/{repo}/manifests/{img.manifest_digest}", repo=repo)
    assert r.status_code == 202, f"{r.status_code} {r.text}"
    assert_oci_error(c.get_manifest(repo, img.manifest_digest), "MANIFEST_UNKNOWN", 404)
    assert_oci_error(c.get_manifest(repo, "keep"), "MANIFEST_UNKNOWN", 404)
    assert c.get_manifest(repo, "keep", method="HEAD").status_code == 404
    tags_r = c.request("GET", f"/v2/{repo}/tags/list", repo=repo)
    assert tags_r.status_code in (200, 404)
    if tags_r.status_code == 200:
        assert not tags_r.json().get("tags")

    ops = {e["OperationName"] for e in moat.audit(repository=repo)}
    assert "Delete" in ops and "Untag" in ops, ops


def test_cross_repo_mount(moat):
    c = moat.client()
    data = b"mount me " * 100
    dg = c.push_blob("api/mount-src", data)
    scopes = [repo_scope("api/mount-dst", "pull,push"), repo_scope("api/mount-src", "pull")]
    r = c.request("POST", f"/v2/api/mount-dst/blobs/uploads/?mount={dg}&from=api/mount-src", scopes=scopes)
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    assert urllib.parse.urlparse(r.headers["Location"]).path == f"/v2/api/mount-dst/blobs/{dg}"
    assert r.headers.get("Docker-Content-Digest") == dg
    g = c.get_blob("api/mount-dst", dg)
    assert g.status_code == 200 and g.content == data
    ev = [e for e in moat.audit(operation="Mount") if e.get("Repository") == "api/mount-dst"]
    assert ev, "a Mount audit event for api/mount-dst"
    assert ev[-1].get("Digest") == dg
    assert ev[-1].get("ResultType") == "Success"


def test_mount_of_missing_blob_falls_back_to_upload(moat):
    c = moat.client()
    c.push_blob("api/mount-src2", b"something else")
    missing = b"not in the source repository"
    dg = sha256(missing)
    scopes = [repo_scope("api/mount-dst2", "pull,push"), repo_scope("api/mount-src2", "pull")]
    r = c.request("POST", f"/v2/api/mount-dst2/blobs/uploads/?mount={dg}&from=api/mount-src2", scopes=scopes)
    assert r.status_code == 202, f"{r.status_code} {r.text}"
    loc = r.headers["Location"]
    assert "/v2/api/mount-dst2/blobs/uploads/" in loc
    r = c.request("PUT", loc + ("&" if "?" in loc else "?") + f"digest={dg}", scopes=scopes, data=missing)
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    assert c.get_blob("api/mount-dst2", dg).content == missing


def test_mount_without_pull_on_source_does_not_mount(moat):
    c = moat.client()
    data = b"secret layer"
    dg = c.push_blob("api/private-src", data)
    # push on the target only: the mount must not link the blob (202 upload, or a denial)
    r = c.request("POST", f"/v2/api/thief/blobs/uploads/?mount={dg}&from=api/private-src",
                  scopes=[repo_scope("api/thief", "pull,push")])
    assert r.status_code in (202, 401, 403), f"{r.status_code} {r.text}"
    assert c.head_blob("api/thief", dg).status_code == 404


def test_put_manifest_by_digest_and_tags_of_same_manifest(moat):
    c = moat.client()
    repo = "api/bydigest"
    img = build_image(1)
    r = c.push_image(repo, img)  # by digest, no tag
    assert r.headers["Docker-Content-Digest"] == img.manifest_digest
    r = c.request("GET", f"/v2/{repo}/tags/list", repo=repo)
    assert r.status_code in (200, 404)
    if r.status_code == 200:
        assert not r.json().get("tags")
    assert c.get_manifest(repo, img.manifest_digest).content == img.manifest_bytes


def test_blob_is_content_addressed_across_repos_but_linked_per_repo(moat):
    c = moat.client()
    data = b"shared content"
    dg = c.push_blob("api/one", data)
    assert c.head_blob("api/two", dg).status_code == 404
    c.push_blob("api/two", data)
    assert c.head_blob("api/two", dg).status_code == 200
    # deleting from one repository leaves the other intact
    assert c.request("DELETE", f"/v2/api/one/blobs/{dg}", repo="api/one").status_code == 202
    assert c.head_blob("api/one", dg).status_code == 404
    g = c.get_blob("api/two", dg)
    assert g.status_code == 200 and g.content == data


def test_blob_put_answers_location_and_digest(moat):
    c = moat.client()
    repo = "api/putloc"
    data = b"location check"
    r = c.start_upload(repo)
    assert r.status_code == 202
    assert r.headers.get("Location")
    loc = r.headers["Location"]
    r = c.request("PUT", loc + ("&" if "?" in loc else "?") + f"digest={sha256(data)}", repo=repo, data=data)
    assert r.status_code == 201
    assert r.headers.get("Docker-Content-Digest") == sha256(data)
    assert urllib.parse.urlparse(r.headers["Location"]).path == f"/v2/{repo}/blobs/{sha256(data)}"


def test_chunked_transfer_encoding_patch_and_put(moat):
    """Docker and containerd stream PATCH bodies with Transfer-Encoding: chunked and no Content-Length."""
    c = moat.client()
    repo = "api/te-chunked"
    parts = [os.urandom(70_000) for _ in range(5)]
    data = b"".join(parts)
    r = c.start_upload(repo)
    loc = r.headers["Location"]
    r = c.request("PATCH", loc, repo=repo, data=iter(parts[:3]), headers={"Content-Type": "application/octet-stream"})
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 202, f"{r.status_code} {r.text}"
    assert r.headers["Range"] == f"0-{3 * 70_000 - 1}"
    loc = r.headers["Location"]
    r = c.request("PUT", loc + ("&" if "?" in loc else "?") + f"digest={sha256(data)}", repo=repo,
                  data=iter(parts[3:]), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    assert c.get_blob(repo, sha256(data)).content == data


def test_tag_moves_to_new_manifest(moat):
    c = moat.client()
    repo = "api/tagmove"
    a, b = build_image(1), build_image(1)
    c.push_image(repo, a, "t")
    assert c.get_manifest(repo, "t").content == a.manifest_bytes
    c.push_image(repo, b, "t")
    g = c.get_manifest(repo, "t")
    assert g.content == b.manifest_bytes
    assert g.headers["Docker-Content-Digest"] == b.manifest_digest
    assert c.get_manifest(repo, a.manifest_digest).content == a.manifest_bytes
    assert c.tags(repo) == ["t"]


def test_pagination_with_last_not_present(moat):
    c = moat.client()
    repo = "api/lastmissing"
    img = build_image(1)
    c.push_image(repo, img, "a")
    for t in ("c", "e", "g"):
        c.put_manifest(repo, t, img.manifest_bytes)
    r = c.request("GET", f"/v2/{repo}/tags/list?last=d", repo=repo)
    assert r.json()["tags"] == ["e", "g"]
    r = c.request("GET", f"/v2/{repo}/tags/list?n=1&last=b", repo=repo)
    assert r.json()["tags"] == ["c"]
    assert next_link(r)
    for repo2 in ("lastm/a", "lastm/c", "lastm/e"):
        c.push_image(repo2, img, "x")
    r = c.request("GET", "/v2/_catalog?last=lastm/b", scopes=["registry:catalog:*"])
    names = r.json()["repositories"]
    assert "lastm/a" not in names and "lastm/c" in names and "lastm/e" in names
    assert all(n > "lastm/b" for n in names)


def test_mount_from_repo_whose_blob_was_deleted(moat):
    c = moat.client()
    data = b"deleted before mount"
    dg = c.push_blob("api/gone-src", data)
    c.push_blob("api/gone-src", b"keep the repository alive")
    assert c.request("DELETE", f"/v2/api/gone-src/blobs/{dg}", repo="api/gone-src").status_code == 202
    scopes = [repo_scope("api/gone-dst", "pull,push"), repo_scope("api/gone-src", "pull")]
    r = c.request("POST", f"/v2/api/gone-dst/blobs/uploads/?mount={dg}&from=api/gone-src", scopes=scopes)
    assert r.status_code == 202, f"mount of a blob deleted from the source: {r.status_code} {r.text}"
    assert c.head_blob("api/gone-dst", dg).status_code == 404


def test_invalid_tag_on_manifest_put(moat):
    c = moat.client()
    repo = "api/badtag"
    img = build_image(1)
    for dg, data in img.blobs.items():
        c.push_blob(repo, data, dg)
    for bad in ("-leading-dash", "x" * 129, ".dot"):
        r = c.put_manifest(repo, bad, img.manifest_bytes)
        assert_oci_error(r, {"TAG_INVALID", "MANIFEST_INVALID", "NAME_INVALID"}, 400)


def test_sha512_blob(moat):
    c = moat.client()
    repo = "api/sha512"
    data = b"sha512 content" * 10
    dg = "sha512:" + hashlib.sha512(data).hexdigest()
    r = c.start_upload(repo)
    loc = r.headers["Location"]
    r = c.request("PUT", loc + ("&" if "?" in loc else "?") + f"digest={dg}", repo=repo, data=data)
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    assert r.headers.get("Docker-Content-Digest") == dg
    g = c.get_blob(repo, dg)
    assert g.status_code == 200 and g.content == data
    # a wrong sha512 is refused
    r = c.start_upload(repo)
    loc = r.headers["Location"]
    r = c.request("PUT", loc + ("&" if "?" in loc else "?") + "digest=sha512:" + hashlib.sha512(b"x").hexdigest(),
                  repo=repo, data=data)
    assert_oci_error(r, "DIGEST_INVALID", 400)
