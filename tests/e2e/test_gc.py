"""Garbage collection: `moat gc` (through the running server's admin socket) and the background collector.

What nothing needs leaves the disk once the grace period has passed: a deleted image's layers (its links, then its
bytes; a layer another repository shares stays), manifests whose index or subject was deleted, abandoned
uploads. `--dry-run` removes nothing; the reported bytes are the bytes that left. Under concurrent pushes of
images sharing layers, with `moat gc --grace 0` in a loop, no manifest ever points at a blob that is gone. The
queue survives a restart; the background collector honours its grace period; `az acr show-usage` follows.
"""
from __future__ import annotations

import json
import random
import threading
import time

from conftest import (OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, build_image, parse_json_lines, sha256, sp_create)
from test_arm_az import Az

LAYER = 200 * 1024  # above the 64 KiB inline limit: layers are files


def blob_file(server, digest: str):
    hexd = digest.split(":", 1)[1]
    return server.data_dir / "storage" / "blobs" / "sha256" / hexd[:2] / hexd


def gc(server, *args) -> tuple[list[dict], dict]:
    """`moat gc -o json ARGS`: (removed items, summary)."""
    lines = parse_json_lines(server.moat("gc", "-o", "json", *args, timeout=120).stdout)
    assert lines and lines[-1]["kind"] == "summary", lines
    return lines[:-1], lines[-1]


def delete_manifest(c, repo: str, digest: str):
    r = c.request("DELETE", f"/v2/{repo}/manifests/{digest}", repo=repo)
    assert r.status_code == 202, f"DELETE manifest: {r.status_code} {r.text[:300]}"


def pullable(c, repo: str, ref: str) -> list[str]:
    """Pulls a manifest and every blob it names; returns what failed (empty when the image is whole)."""
    r = c.get_manifest(repo, ref)
    if r.status_code != 200:
        return [f"{repo}:{ref} manifest {r.status_code}"]
    m = r.json()
    bad = []
    for d in [m["config"]["digest"], *[l["digest"] for l in m["layers"]]]:
        b = c.get_blob(repo, d)
        if b.status_code != 200 or sha256(b.content) != d:
            bad.append(f"{repo}:{ref} blob {d} -> {b.status_code}")
    return bad


def test_deleted_layers_leave_the_disk_after_the_grace_period(moat_http):
    s, c = moat_http, moat_http.client()
    a = build_image(2, seed="gc-a", layer_size=LAYER)
    b_layers = [a.layers[0]]  # b shares a's first layer
    b = build_image(1, seed="gc-b", layer_size=LAYER)
    b.layers = b_layers + b.layers
    b.manifest_bytes = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": b.config_digest,
                   "size": len(b.config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": len(x)}
                   for d, x in b.layers]}).encode()
    b.manifest_digest = sha256(b.manifest_bytes)
    c.push_image("gc/a", a, "v1")
    c.push_image("gc/b", b, "v1")
    gone = {a.config_digest: len(a.config_bytes), a.layers[1][0]: len(a.layers[1][1])}
    for d in gone:
        assert blob_file(s, d).exists(), f"{d} should be a file"
    delete_manifest(c, "gc/a", a.manifest_digest)

    # Within the grace period (the default, 24 h) nothing is removed.
    removed, summary = gc(s)
    assert removed == [] and summary["reclaimedBytes"] == 0, (removed, summary)
    # A dry run with no grace lists the links and bytes, and removes nothing.
    would, summary = gc(s, "--dry-run", "--grace", "0")
    assert summary["dryRun"] is True
    assert {(r["kind"], r["digest"]) for r in would if r["kind"] in ("link", "blob")} == \
        {(k, d) for d in [*gone, a.layers[0][0]] for k in ("link",)} | {("blob", d) for d in gone}, would
    assert summary["reclaimedBytes"] == sum(gone.values()), summary
    assert all(blob_file(s, d).exists() for d in gone), "a dry run removed bytes"

    removed, summary = gc(s, "--grace", "0")
    blobs = {r["digest"]: r for r in removed if r["kind"] == "blob"}
    assert set(blobs) == set(gone), removed
    assert all(r["size"] == gone[d] and r["stored"] == "file" for d, r in blobs.items()), blobs
    assert summary["reclaimedBytes"] == sum(gone.values()), summary
    assert not any(blob_file(s, d).exists() for d in gone), "the collected bytes are still on disk"
    # The shared layer stays: b references it. a's link to it went.
    assert blob_file(s, a.layers[0][0]).exists()
    assert pullable(c, "gc/b", "v1") == []
    assert c.head_blob("gc/a", a.layers[0][0]).status_code == 404
    # Nothing is left to do.
    removed, summary = gc(s, "--grace", "0")
    assert removed == [] and summary["reclaimedBytes"] == 0, removed
    # The table form says what it did.
    p = s.moat("gc", "--grace", "0")
    assert "reclaimed 0 bytes: nothing to remove" in p.stdout, p.stdout


def test_a_blob_pushed_and_never_referenced_and_an_abandoned_upload(moat_http):
    s, c = moat_http, moat_http.client()
    orphan = bytes(random.Random(7).randbytes(LAYER))
    d = c.push_blob("gc/orphan", orphan)
    r = c.start_upload("gc/orphan")
    loc = r.headers["Location"]
    r = c.request("PATCH", loc, repo="gc/orphan", data=b"x" * 300_000,
                  headers={"Content-Type": "application/octet-stream", "Content-Range": "0-299999"})
    assert r.status_code == 202, r.text
    upload_id = loc.rstrip("/").split("/")[-1].split("?")[0]
    uploads_dir = s.data_dir / "storage" / "uploads"
    assert (uploads_dir / upload_id).exists()

    would, _ = gc(s, "--dry-run", "--grace", "0", "--upload-ttl-secs", "0")
    assert {r["kind"] for r in would} == {"link", "blob", "upload"}, would
    assert blob_file(s, d).exists() and (uploads_dir / upload_id).exists()

    removed, summary = gc(s, "--grace", "0", "--upload-ttl-secs", "0")
    ups = [r for r in removed if r["kind"] == "upload"]
    assert [(u["id"], u["size"], u["repository"]) for u in ups] == [(upload_id, 300_000, "gc/orphan")], removed
    assert [r["digest"] for r in removed if r["kind"] == "blob"] == [d]
    assert summary["reclaimedBytes"] == LAYER + 300_000, summary
    assert not blob_file(s, d).exists() and not (uploads_dir / upload_id).exists()
    assert c.request("GET", loc, repo="gc/orphan").status_code == 404


def test_manifests_whose_index_or_subject_was_deleted(moat_http):
    s, c = moat_http, moat_http.client()
    repo = "gc/multi"
    kids = [build_image(1, seed=f"gc-kid-{i}", layer_size=LAYER) for i in range(2)]
    for k in kids:
        c.push_image(repo, k)  # by digest, untagged
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": k.manifest_digest, "size": len(k.manifest_bytes),
         "platform": {"architecture": a, "os": "linux"}} for k, a in zip(kids, ["amd64", "arm64"])]}).encode()
    assert c.put_manifest(repo, "multi", index, OCI_INDEX).status_code == 201
    # A referrer (a signature) of the first child, and an untagged manifest pushed on its own.
    empty = b"{}"
    c.push_blob(repo, empty)
    sig = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/example.sig",
                      "config": {"mediaType": OCI_EMPTY, "digest": sha256(empty), "size": 2},
                      "layers": [{"mediaType": OCI_EMPTY, "digest": sha256(empty), "size": 2}],
                      "subject": {"mediaType": OCI_MANIFEST, "digest": kids[0].manifest_digest,
                                  "size": len(kids[0].manifest_bytes)}}).encode()
    assert c.put_manifest(repo, sha256(sig), sig).status_code == 201
    loner = build_image(1, seed="gc-loner", layer_size=LAYER)
    c.push_image(repo, loner)

    # While the index lists them, nothing goes.
    removed, _ = gc(s, "--grace", "0")
    assert [r for r in removed if r["kind"] in ("manifest", "blob")] == [], removed
    delete_manifest(c, repo, sha256(index))
    removed, summary = gc(s, "--grace", "0")
    manifests = {r["digest"] for r in removed if r["kind"] == "manifest"}
    assert manifests == {k.manifest_digest for k in kids} | {sha256(sig)}, removed
    for k in kids:
        assert c.get_manifest(repo, k.manifest_digest).status_code == 404
        assert not any(blob_file(s, d).exists() for d, _ in k.layers), "a removed child's layers stayed"
    # The untagged manifest pushed on its own is kept, as ACR keeps it, and stays whole.
    assert pullable(c, repo, loner.manifest_digest) == []
    purges = [e for e in s.audit(repository=repo) if e["OperationName"] == "Purge"]
    assert {e["Digest"] for e in purges} == manifests and all(e["Identity"] == "moat-gc" for e in purges), purges


def test_gc_under_concurrent_pushes_never_leaves_a_manifest_without_its_blobs(moat_http):
    s = moat_http
    shared = build_image(3, seed="gc-shared", layer_size=LAYER).layers
    stop = threading.Event()
    pushed: list[tuple[str, str]] = []  # (repo, tag) kept
    failures: list[str] = []
    gc_runs: list[dict] = []
    lock = threading.Lock()

    def pusher(n: int):
        c = s.client()
        rnd = random.Random(n)
        i = 0
        while not stop.is_set():
            i += 1
            img = build_image(1, seed=f"gc-conc-{n}-{i}", layer_size=LAYER // 4)
            img.layers = rnd.sample(shared, 2) + img.layers
            img.manifest_bytes = json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": img.config_digest,
                           "size": len(img.config_bytes)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d,
                            "size": len(x)} for d, x in img.layers]}).encode()
            img.manifest_digest = sha256(img.manifest_bytes)
            repo = f"gc/conc{rnd.randrange(3)}"
            tag = f"t{n}-{i}"
            try:
                for d, data in img.blobs.items():
                    # Blobs the repository holds are skipped, as docker does after a HEAD.
                    if c.head_blob(repo, d).status_code != 200:
                        c.push_blob(repo, data, d)
                r = c.put_manifest(repo, tag, img.manifest_bytes)
            except AssertionError as e:  # an upload the collector raced (grace 0): the push fails, cleanly
                with lock:
                    failures.append(str(e)[:200])
                continue
            if r.status_code != 201:
                # MANIFEST_BLOB_UNKNOWN: a link was collected between its upload and the manifest (grace 0).
                assert r.status_code == 400 and "MANIFEST_BLOB_UNKNOWN" in r.text, r.text
                with lock:
                    failures.append(r.text[:200])
                continue
            if rnd.random() < 0.4:
                r = c.request("DELETE", f"/v2/{repo}/manifests/{img.manifest_digest}", repo=repo)
                assert r.status_code == 202, r.text
            else:
                with lock:
                    pushed.append((repo, tag))

    def collector():
        while not stop.is_set():
            _, summary = gc(s, "--grace", "0", "--no-sweep")
            gc_runs.append(summary)
            time.sleep(0.2)

    threads = [threading.Thread(target=pusher, args=(n,)) for n in range(4)] + [threading.Thread(target=collector)]
    for t in threads:
        t.start()
    time.sleep(25)
    stop.set()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    gc(s, "--grace", "0")  # and once more with nothing pushing

    assert len(pushed) >= 20, f"too few pushes succeeded ({len(pushed)}; failures: {failures[:3]})"
    assert sum(r["removed"].get("blob", 0) for r in gc_runs) > 0, "the collector never removed anything"
    c = s.client()
    broken = [b for repo, tag in pushed for b in pullable(c, repo, tag)]
    assert broken == [], broken[:10]
    print(f"concurrent GC: {len(pushed)} images kept, {len(failures)} pushes refused, {len(gc_runs)} runs removed "
          f"{sum(r['removed'].get('blob', 0) for r in gc_runs)} blobs")


def test_background_collector_waits_its_grace_period_and_the_queue_survives_a_restart(moat_factory):
    s = moat_factory(https=False, extra_args=["--gc-interval-secs", "0"])
    c = s.client()
    img = build_image(1, seed="gc-bg", layer_size=LAYER)
    c.push_image("gc/bg", img, "v1")
    delete_manifest(c, "gc/bg", img.manifest_digest)
    layer = img.layers[0][0]
    s.stop()
    # The removal was queued in the database: a server started later collects it, after its grace period.
    s.extra_args = ["--gc-interval-secs", "1", "--gc-grace-secs", "4"]
    s.start()
    t0 = time.monotonic()
    while blob_file(s, layer).exists() and time.monotonic() - t0 < 30:
        time.sleep(0.25)
    assert not blob_file(s, layer).exists(), "the background collector did not remove the layer"
    c = s.client()
    img2 = build_image(1, seed="gc-bg2", layer_size=LAYER)
    c.push_image("gc/bg", img2, "v2")
    delete_manifest(c, "gc/bg", img2.manifest_digest)
    time.sleep(2)
    assert blob_file(s, img2.layers[0][0]).exists(), "removed before its grace period"
    t0 = time.monotonic()
    while blob_file(s, img2.layers[0][0]).exists() and time.monotonic() - t0 < 30:
        time.sleep(0.25)
    assert not blob_file(s, img2.layers[0][0]).exists()


def test_az_show_usage_follows_pushes_and_collection(moat, tmp_path):
    az = Az(moat, tmp_path / "azcfg")
    az.register_and_login(sp_create(moat, "gc-usage", "Owner"))

    def size() -> int:
        usages = az("acr", "show-usage", "-n", "default", json_out=True).json["value"]
        return next(u["currentValue"] for u in usages if u["name"] == "Size")

    before = size()
    c = moat.client()
    img = build_image(2, seed="gc-usage", layer_size=LAYER)
    c.push_image("gc/usage", img, "v1")
    blobs = sum(len(b) for b in img.blobs.values())
    assert size() == before + blobs + len(img.manifest_bytes)
    delete_manifest(c, "gc/usage", img.manifest_digest)
    # The links hold the bytes until the collector removes them.
    assert size() == before + blobs
    _, summary = gc(moat, "--grace", "0")
    assert summary["reclaimedBytes"] == blobs, summary
    assert size() == before
