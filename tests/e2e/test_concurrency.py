"""Concurrency: many clients pushing the same blob and different manifests at once."""
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from conftest import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, make_layer, sha256

N = 16


def _manifest(layer_dg, layer_size, config_bytes):
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_dg, "size": layer_size}],
    }).encode()


def test_parallel_pushes_of_same_blob_and_different_manifests(moat):
    repo = "conc/app"
    layer, tar = make_layer({"shared.bin": os.urandom(512 * 1024)})
    layer_dg = sha256(layer)
    configs = [json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                           "diff_ids": [sha256(tar)]}, "config": {"Env": [f"I={i}"]}}).encode() for i in range(N)]
    manifests = [_manifest(layer_dg, len(layer), cfg) for cfg in configs]
    barrier = threading.Barrier(N)

    def worker(i):
        c = moat.client()
        c.token(f"repository:{repo}:pull,push,delete")
        barrier.wait(timeout=60)
        # everyone pushes the same layer (chunked for odd i, monolithic for even i)
        if i % 2:
            r = c.start_upload(repo)
            assert r.status_code == 202, r.text
            loc = r.headers["Location"]
            half = len(layer) // 2
            r = c.request("PATCH", loc, repo=repo, data=layer[:half], headers={
                "Content-Type": "application/octet-stream", "Content-Range": f"0-{half - 1}"})
            assert r.status_code == 202, r.text
            loc = r.headers["Location"]
            r = c.request("PUT", loc + ("&" if "?" in loc else "?") + f"digest={layer_dg}", repo=repo,
                          data=layer[half:], headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 201, f"{r.status_code} {r.text}"
        else:
            c.push_blob(repo, layer, layer_dg)
        c.push_blob(repo, configs[i])
        r = c.put_manifest(repo, f"t{i:02d}", manifests[i])
        assert r.status_code == 201, f"{r.status_code} {r.text}"
        assert r.headers.get("Docker-Content-Digest") == sha256(manifests[i])
        return i

    with ThreadPoolExecutor(N) as ex:
        results = list(ex.map(worker, range(N)))
    assert results == list(range(N))

    c = moat.client()
    h = c.head_blob(repo, layer_dg)
    assert h.status_code == 200 and int(h.headers["Content-Length"]) == len(layer)
    assert c.get_blob(repo, layer_dg).content == layer
    for i in range(N):
        g = c.get_manifest(repo, f"t{i:02d}")
        assert g.status_code == 200, g.text
        assert g.content == manifests[i]
        assert c.get_manifest(repo, sha256(manifests[i])).content == manifests[i]
        assert c.get_blob(repo, sha256(configs[i])).content == configs[i]

    tags = c.tags(repo)
    assert tags == [f"t{i:02d}" for i in range(N)]
    r = c.request("GET", "/v2/_catalog", scopes=["registry:catalog:*"])
    assert r.status_code == 200
    assert r.json()["repositories"].count(repo) == 1

    digests = {sha256(m) for m in manifests}
    pushes = [e for e in moat.audit(repository=repo, operation="Push") if e.get("Digest") in digests]
    assert len(pushes) == N, f"expected {N} manifest Push events, got {len(pushes)}"
    assert {e["Digest"] for e in pushes} == digests
    assert all(e.get("ResultType") == "Success" for e in pushes)
    assert {e.get("Tag") for e in pushes} == {f"t{i:02d}" for i in range(N)}


def test_parallel_pushes_to_one_tag_stay_consistent(moat):
    repo = "conc/race"
    c0 = moat.client()
    layer, tar = make_layer({"f": b"race"})
    c0.push_blob(repo, layer)
    configs = [json.dumps({"architecture": "amd64", "os": "linux", "n": i,
                           "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]}}).encode() for i in range(N)]
    for cfg in configs:
        c0.push_blob(repo, cfg)
    manifests = [_manifest(sha256(layer), len(layer), cfg) for cfg in configs]
    barrier = threading.Barrier(N)

    def worker(i):
        c = moat.client()
        c.token(f"repository:{repo}:pull,push,delete")
        barrier.wait(timeout=60)
        r = c.put_manifest(repo, "latest", manifests[i])
        assert r.status_code == 201, f"{r.status_code} {r.text}"

    with ThreadPoolExecutor(N) as ex:
        list(ex.map(worker, range(N)))

    g = c0.get_manifest(repo, "latest")
    assert g.status_code == 200
    assert g.content in manifests
    assert g.headers["Docker-Content-Digest"] == sha256(g.content)
    assert c0.tags(repo) == ["latest"]
    # every manifest stays reachable by digest
    for m in manifests:
        assert c0.get_manifest(repo, sha256(m)).status_code == 200


def test_parallel_uploads_to_different_repos(moat):
    """Distinct blobs into distinct repositories at once: no cross-talk."""
    blobs = {f"conc/r{i}": os.urandom(200_000 + i) for i in range(8)}

    def worker(item):
        repo, data = item
        c = moat.client()
        return repo, c.push_blob(repo, data)

    with ThreadPoolExecutor(8) as ex:
        done = dict(ex.map(worker, blobs.items()))
    c = moat.client()
    for repo, data in blobs.items():
        assert c.get_blob(repo, done[repo]).content == data
        for other in blobs:
            if other != repo:
                assert c.head_blob(other, done[repo]).status_code == 404


def test_concurrent_patches_to_one_session(moat):
    """Several clients PATCH the same offset of one upload session at once: exactly one wins, the others are
    refused as out of order, and the upload stays consistent."""
    repo = "conc/session"
    c = moat.client()
    tok_scope = f"repository:{repo}:pull,push,delete"
    c.token(tok_scope)
    r = c.start_upload(repo)
    assert r.status_code == 202
    loc = r.headers["Location"]
    chunk = os.urandom(256 * 1024)
    barrier = threading.Barrier(8)

    def worker(i):
        cl = moat.client()
        cl.token(tok_scope)
        barrier.wait(timeout=60)
        return cl.request("PATCH", loc, repo=repo, data=chunk, headers={
            "Content-Type": "application/octet-stream", "Content-Range": f"0-{len(chunk) - 1}"})

    with ThreadPoolExecutor(8) as ex:
        rs = list(ex.map(worker, range(8)))
    statuses = sorted(r.status_code for r in rs)
    assert all(s < 500 for s in statuses), statuses
    assert statuses.count(202) == 1, f"exactly one PATCH at offset 0 may succeed: {statuses}"
    for r in rs:
        if r.status_code != 202:
            assert r.status_code in (416, 409, 423, 400), statuses
    s = c.request("GET", loc, repo=repo)
    assert s.status_code == 204
    assert s.headers["Range"] == f"0-{len(chunk) - 1}"
    r = c.request("PUT", s.headers.get("Location", loc) + ("&" if "?" in loc else "?") + f"digest={sha256(chunk)}",
                  repo=repo)
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    assert c.get_blob(repo, sha256(chunk)).content == chunk
