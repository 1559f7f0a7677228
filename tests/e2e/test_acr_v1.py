"""ACR's own data-plane API (`/acr/v1`) and the token exchange (`/oauth2/exchange`), with raw HTTP and the real
az CLI: repository, tag and manifest metadata in ACR's JSON, pagination, deleting a tag or a whole repository,
and an Entra token (Moat's AAD-shaped one) exchanged for a registry refresh token."""
from __future__ import annotations

import json

from conftest import (OCI_MANIFEST, assert_oci_error, aad_token, build_image, get_token, make_session,
                      parse_challenge, repo_scope, sp_create)

ACR_SCOPE = "https://containerregistry.azure.net/.default"
NULL_GUID = "00000000-0000-0000-0000-000000000000"


def push_tagged(c, repo, tags, seed):
    img = build_image(2, seed=seed)
    for t in tags:
        c.push_image(repo, img, t)
    return img


def meta(c, path, repo=None, scopes=None, method="GET", **kw):
    scopes = scopes if scopes is not None else ([repo_scope(repo, "metadata_read")] if repo else [])
    return c.request(method, path, scopes=scopes, **kw)


def test_repository_tags_and_manifests_in_acr_json(moat):
    c = moat.client()
    repo = "acrv1/app"
    old = push_tagged(c, repo, ["v1"], seed="acrv1-old")
    new = push_tagged(c, repo, ["v2", "latest"], seed="acrv1-new")

    # Without a token: a challenge that names the scope the SDK must ask for.
    r = c.request("GET", f"/acr/v1/{repo}", auth=False)
    assert r.status_code == 401
    _, params = parse_challenge(r.headers["WWW-Authenticate"])
    assert params["scope"] == f"repository:{repo}:metadata_read", params
    # A pull-only token is not enough for metadata.
    r = meta(c, f"/acr/v1/{repo}", scopes=[repo_scope(repo, "pull")])
    assert r.status_code == 401 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]

    r = meta(c, f"/acr/v1/{repo}", repo)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["registry"] == moat.login_server and body["imageName"] == repo
    assert (body["manifestCount"], body["tagCount"]) == (2, 3), body
    assert body["lastUpdateTime"] >= body["createdTime"]
    assert body["changeableAttributes"] == {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True,
                                            "listEnabled": True}
    # The name may come %2F-encoded.
    r = meta(c, "/acr/v1/acrv1%2Fapp", repo)
    assert r.status_code == 200 and r.json()["imageName"] == repo

    r = meta(c, f"/acr/v1/{repo}/_tags", repo)
    assert r.status_code == 200, r.text
    tags = {t["name"]: t for t in r.json()["tags"]}
    assert sorted(tags) == ["latest", "v1", "v2"]
    assert tags["v1"]["digest"] == old.manifest_digest and tags["v2"]["digest"] == new.manifest_digest
    assert tags["v2"]["signed"] is False and tags["v2"]["changeableAttributes"]["readEnabled"] is True
    # Newest first: v1 was pushed first, so it comes last.
    r = meta(c, f"/acr/v1/{repo}/_tags?orderby=timedesc", repo)
    assert [t["name"] for t in r.json()["tags"]][-1] == "v1"
    # Filter by digest, and paginate with n/last and a Link to the next page.
    r = meta(c, f"/acr/v1/{repo}/_tags?digest={new.manifest_digest}", repo)
    assert sorted(t["name"] for t in r.json()["tags"]) == ["latest", "v2"]
    r = meta(c, f"/acr/v1/{repo}/_tags?n=2", repo)
    assert [t["name"] for t in r.json()["tags"]] == ["latest", "v1"]
    link = r.headers["Link"]
    assert link.startswith(f"</acr/v1/{repo}/_tags?last=v1&n=2") and link.endswith('rel="next"'), link
    r = meta(c, link[1:link.index(">")], repo)
    assert [t["name"] for t in r.json()["tags"]] == ["v2"] and "Link" not in r.headers

    r = meta(c, f"/acr/v1/{repo}/_tags/v2", repo)
    assert r.status_code == 200 and r.json()["tag"]["digest"] == new.manifest_digest
    assert_oci_error(meta(c, f"/acr/v1/{repo}/_tags/nope", repo), {"TAG_UNKNOWN"}, 404)

    r = meta(c, f"/acr/v1/{repo}/_manifests", repo)
    assert r.status_code == 200, r.text
    listed = {m["digest"]: m for m in r.json()["manifests"]}
    assert set(listed) == {old.manifest_digest, new.manifest_digest}
    m = listed[new.manifest_digest]
    assert sorted(m["tags"]) == ["latest", "v2"] and m["mediaType"] == OCI_MANIFEST
    parsed = json.loads(new.manifest_bytes)
    expected_size = len(new.manifest_bytes) + parsed["config"]["size"] + sum(l["size"] for l in parsed["layers"])
    assert m["imageSize"] == expected_size, (m, expected_size)
    assert m["configMediaType"] == parsed["config"]["mediaType"]
    r = meta(c, f"/acr/v1/{repo}/_manifests/{old.manifest_digest}", repo)
    assert r.status_code == 200 and r.json()["manifest"]["tags"] == ["v1"]
    assert_oci_error(meta(c, f"/acr/v1/{repo}/_manifests/sha256:{'0' * 64}", repo), {"MANIFEST_UNKNOWN"}, 404)
    assert_oci_error(meta(c, "/acr/v1/acrv1/none", "acrv1/none"), {"NAME_UNKNOWN"}, 404)

    # Catalog, as on /v2, with the Link on /acr/v1.
    r = c.request("GET", "/acr/v1/_catalog?n=100", scopes=["registry:catalog:*"])
    assert r.status_code == 200 and repo in r.json()["repositories"], r.text

    # Locks are not built: changing an attribute is refused, not silently ignored.
    r = meta(c, f"/acr/v1/{repo}/_tags/v1", scopes=[repo_scope(repo, "metadata_write")], method="PATCH",
             json={"writeEnabled": False})
    assert_oci_error(r, {"UNSUPPORTED"}, 405)

    events = moat.audit(repository=repo)
    assert {"ListTags", "ListManifests", "ShowRepository"} <= {e["OperationName"] for e in events}, events


def test_untag_and_delete_repository(moat):
    c = moat.client()
    repo = "acrv1/gone"
    img = push_tagged(c, repo, ["a", "b"], seed="acrv1-gone")
    # Deleting needs the delete action.
    r = meta(c, f"/acr/v1/{repo}/_tags/a", method="DELETE", scopes=[repo_scope(repo, "pull,metadata_read")])
    assert r.status_code == 401
    r = meta(c, f"/acr/v1/{repo}/_tags/a", method="DELETE", scopes=[repo_scope(repo, "delete")])
    assert r.status_code == 202, r.text
    assert c.tags(repo) == ["b"]
    assert c.get_manifest(repo, img.manifest_digest).status_code == 200, "untag keeps the manifest"
    assert_oci_error(meta(c, f"/acr/v1/{repo}/_tags/a", method="DELETE", scopes=[repo_scope(repo, "delete")]),
                     {"TAG_UNKNOWN"}, 404)

    r = meta(c, f"/acr/v1/{repo}", method="DELETE", scopes=[repo_scope(repo, "delete")])
    assert r.status_code == 202, r.text
    assert r.json() == {"manifestsDeleted": [img.manifest_digest], "tagsDeleted": ["b"]}
    assert c.get_manifest(repo, "b").status_code == 404
    assert c.get_manifest(repo, img.manifest_digest).status_code == 404
    assert c.head_blob(repo, img.layer_digests[0]).status_code == 404, "the repository's blob links went too"
    assert_oci_error(meta(c, f"/acr/v1/{repo}", repo), {"NAME_UNKNOWN"}, 404)
    assert_oci_error(meta(c, f"/acr/v1/{repo}", method="DELETE", scopes=[repo_scope(repo, "delete")]),
                     {"NAME_UNKNOWN"}, 404)
    # The repository can be pushed again from scratch.
    c.push_image(repo, img, "again")
    assert c.tags(repo) == ["again"]
    deleted = [e for e in moat.audit(repository=repo) if e["OperationName"] == "DeleteRepository"]
    assert len(deleted) == 1 and deleted[0]["ResultDescription"].startswith("202"), deleted


def test_exchange_entra_token_for_a_refresh_token(moat):
    sp = sp_create(moat, "acrv1-reader", "AcrPull")
    s = make_session(moat.base_url, verify=moat.verify)
    c = moat.client()
    repo = "acrv1/exchanged"
    img = push_tagged(c, repo, ["v1"], seed="acrv1-exchange")

    entra = aad_token(moat, sp, scope=ACR_SCOPE)
    r = s.post(f"{moat.base_url}/oauth2/exchange", timeout=30,
               data={"grant_type": "access_token", "service": moat.login_server, "access_token": entra,
                     "tenant": sp["tenant"]})
    assert r.status_code == 200, r.text
    refresh = r.json()["refresh_token"]
    # The refresh token buys access tokens with what the identity's roles allow: AcrPull reads, never deletes.
    r = s.post(f"{moat.base_url}/oauth2/token", timeout=30,
               data={"grant_type": "refresh_token", "service": moat.login_server, "refresh_token": refresh,
                     "scope": f"repository:{repo}:pull,metadataRead,delete"})
    assert r.status_code == 200, r.text
    access = r.json()["access_token"]
    h = {"Authorization": f"Bearer {access}"}
    r = s.get(f"{moat.base_url}/acr/v1/{repo}/_tags", headers=h, timeout=30)
    assert r.status_code == 200 and [t["name"] for t in r.json()["tags"]] == ["v1"], r.text
    r = s.delete(f"{moat.base_url}/acr/v1/{repo}/_tags/v1", headers=h, timeout=30)
    assert r.status_code == 401, "AcrPull may not delete"
    # docker login as az acr login does it: the null GUID user with the refresh token as password.
    token = get_token(moat.base_url, moat.login_server, [repo_scope(repo, "pull")], NULL_GUID, refresh,
                      verify=moat.verify)
    r = s.get(f"{moat.base_url}/v2/{repo}/manifests/v1", headers={"Authorization": f"Bearer {token}",
                                                                   "Accept": OCI_MANIFEST}, timeout=30)
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == img.manifest_digest

    # Refused: a forged token, an unknown grant, another registry's service name, a GET.
    r = s.post(f"{moat.base_url}/oauth2/exchange", timeout=30,
               data={"grant_type": "access_token", "service": moat.login_server, "access_token": entra[:-4] + "AAAA"})
    assert_oci_error(r, {"UNAUTHORIZED"}, 401)
    r = s.post(f"{moat.base_url}/oauth2/exchange", timeout=30,
               data={"grant_type": "password", "service": moat.login_server, "access_token": entra})
    assert_oci_error(r, {"UNSUPPORTED"}, 400)
    r = s.post(f"{moat.base_url}/oauth2/exchange", timeout=30,
               data={"grant_type": "access_token", "service": "other.example", "access_token": entra})
    assert_oci_error(r, {"UNSUPPORTED"}, 400)
    assert s.get(f"{moat.base_url}/oauth2/exchange", timeout=30).status_code == 405
    logins = [e for e in moat.audit() if e["OperationName"] == "Login" and e.get("Identity") == sp["appId"]]
    assert logins and any(e["ResultType"] == "Failure" for e in moat.audit() if e["OperationName"] == "Login")


def test_az_acr_repository_commands(moat, tmp_path):
    from test_arm_az import Az
    az = Az(moat, tmp_path / "azcfg")
    sp = sp_create(moat, "acrv1-az", "Owner")
    az.register_and_login(sp)
    c = moat.client()
    repo = "acrv1/az"
    img = push_tagged(c, repo, ["v1", "v2"], seed="acrv1-az")

    login = az("acr", "login", "-n", "default", "--expose-token", json_out=True).json
    assert login["loginServer"] == moat.login_server and login["accessToken"], login
    assert sorted(az("acr", "repository", "show-tags", "-n", "default", "--repository", repo,
                     json_out=True).json) == ["v1", "v2"]
    shown = az("acr", "repository", "show", "-n", "default", "--repository", repo, json_out=True).json
    assert shown["imageName"] == repo and shown["tagCount"] == 2, shown
    listed = az("acr", "manifest", "list-metadata", "-r", "default", "-n", repo, json_out=True).json
    assert [m["digest"] for m in listed] == [img.manifest_digest], listed
    az("acr", "repository", "untag", "-n", "default", "--image", f"{repo}:v1")
    assert c.tags(repo) == ["v2"]
    az("acr", "repository", "delete", "-n", "default", "--repository", repo, "--yes")
    assert c.get_manifest(repo, "v2").status_code == 404


def test_azure_containerregistry_sdk(moat):
    """The data-plane SDK (azure-containerregistry 1.2.0, installed by scripts/test) with a service principal:
    its challenge-driven exchange, then repository, tag and manifest properties, and deletes."""
    from azure.containerregistry import ContainerRegistryClient
    from azure.identity import ClientSecretCredential

    sp = sp_create(moat, "acrv1-sdk", "Owner")
    c = moat.client()
    repo = "acrv1/sdk"
    img = push_tagged(c, repo, ["v1", "v2"], seed="acrv1-sdk")
    cred = ClientSecretCredential(sp["tenant"], sp["appId"], sp["password"], authority=moat.base_url,
                                  disable_instance_discovery=True, connection_verify=str(moat.ca_path))
    with ContainerRegistryClient(moat.base_url, cred, audience="https://containerregistry.azure.net",
                                 connection_verify=str(moat.ca_path)) as client:
        assert repo in list(client.list_repository_names())
        props = client.get_repository_properties(repo)
        assert props.name == repo and props.tag_count == 2 and props.can_read
        assert sorted(t.name for t in client.list_tag_properties(repo)) == ["v1", "v2"]
        tag = client.get_tag_properties(repo, "v2")
        assert tag.digest == img.manifest_digest
        manifest = client.get_manifest_properties(repo, "v1")
        assert manifest.digest == img.manifest_digest and sorted(manifest.tags) == ["v1", "v2"]
        got = client.get_manifest(repo, "v1")
        assert got.digest == img.manifest_digest
        client.delete_tag(repo, "v1")
        assert [t.name for t in client.list_tag_properties(repo)] == ["v2"]
        client.delete_repository(repo)
        assert repo not in list(client.list_repository_names())
