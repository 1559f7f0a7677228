"""Retention and soft delete, as ACR does them, through the real `az`, enforced by the collector (`moat gc`).

Retention (`az acr config retention update --status enabled --days N --type UntaggedManifests`, Premium): an
untagged manifest (pushed by digest, or whose tag moved on) is purged once it has been untagged N days, counted
from when it became untagged and only if that was after the policy was enabled; tagged manifests, an index's
children and the referrers of a stored subject stay. Each purge is audited as ACR's `Purge` with repository and
digest, and the image's layers leave with the collector's grace period. Retention and soft delete cannot both be
enabled.
"""
from __future__ import annotations

import json

import pytest

from conftest import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, build_image, parse_json_lines, sha256, sp_create
from test_arm_az import Az

LAYER = 100 * 1024  # above the inline limit: layers are files


@pytest.fixture
def az(moat, tmp_path):
    return Az(moat, tmp_path / "azcfg")


def gc(server, *args) -> tuple[list[dict], dict]:
    """`moat gc -o json --grace 0 ARGS`: (removed items, summary)."""
    lines = parse_json_lines(server.moat("gc", "-o", "json", "--grace", "0", *args, timeout=120).stdout)
    assert lines and lines[-1]["kind"] == "summary", lines
    return lines[:-1], lines[-1]


def manifests_removed(removed: list[dict]) -> set[tuple[str, str]]:
    return {(r["repository"], r["digest"]) for r in removed if r["kind"] == "manifest"}


def test_retention_purges_untagged_manifests(moat, az):
    sp = sp_create(moat, "retention-az", "Owner")
    az.register_and_login(sp)
    c = moat.client()
    repo = "ret/app"
    # Untagged before the policy exists: ACR's rule leaves it alone.
    before = build_image(1, seed="ret-before", layer_size=LAYER)
    c.push_image(repo, before)

    shown = az("acr", "config", "retention", "update", "-r", "default", "--status", "enabled", "--days", "0",
               "--type", "UntaggedManifests", json_out=True).json
    assert (shown["status"], shown["days"]) == ("enabled", 0), shown
    assert az("acr", "config", "retention", "show", "-r", "default", json_out=True).json["status"] == "enabled"

    old = build_image(1, seed="ret-old", layer_size=LAYER)
    new = build_image(1, seed="ret-new", layer_size=LAYER)
    loose = build_image(1, seed="ret-loose", layer_size=LAYER)
    kept = build_image(1, seed="ret-kept", layer_size=LAYER)
    c.push_image(repo, old, "v1")
    c.push_image(repo, new, "v1")  # old is untagged now
    c.push_image(repo, loose)  # by digest
    c.push_image(repo, kept, "v2")
    # An index's untagged child and a referrer of a tagged image are needed by what is tagged.
    child = build_image(1, seed="ret-child", layer_size=LAYER)
    c.push_image(repo, child)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child.manifest_digest, "size": len(child.manifest_bytes),
         "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    assert c.put_manifest(repo, "multi", index, OCI_INDEX).status_code == 201
    c.push_blob(repo, b"{}")
    sig = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/example.sig",
                      "config": {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2},
                      "layers": [{"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2}],
                      "subject": {"mediaType": OCI_MANIFEST, "digest": kept.manifest_digest,
                                  "size": len(kept.manifest_bytes)}}).encode()
    assert c.put_manifest(repo, sha256(sig), sig).status_code == 201

    would, summary = gc(moat, "--dry-run")
    assert manifests_removed(would) == {(repo, old.manifest_digest), (repo, loose.manifest_digest)}, would
    assert c.get_manifest(repo, old.manifest_digest).status_code == 200, "a dry run removes nothing"

    removed, summary = gc(moat)
    assert manifests_removed(removed) == {(repo, old.manifest_digest), (repo, loose.manifest_digest)}, removed
    # Their layers went with them (grace 0); nothing else did.
    gone_blobs = {r["digest"] for r in removed if r["kind"] == "blob"}
    assert {old.layers[0][0], loose.layers[0][0]} <= gone_blobs, removed
    assert summary["reclaimedBytes"] >= len(old.layers[0][1]) + len(loose.layers[0][1]), summary
    for img in (old, loose):
        assert c.get_manifest(repo, img.manifest_digest).status_code == 404
    for ref in (before.manifest_digest, "v1", "v2", "multi", child.manifest_digest, sha256(sig)):
        assert c.get_manifest(repo, ref).status_code == 200, ref
    assert c.get_blob(repo, new.layers[0][0]).status_code == 200

    purges = [e for e in moat.audit(operation="Purge")]
    assert {(e["Repository"], e["Digest"]) for e in purges} == manifests_removed(removed), purges
    assert all(e["ResultType"] == "Success" and "retention" in e["ResultDescription"] for e in purges), purges
    # A second run finds nothing left to purge.
    again, _ = gc(moat)
    assert manifests_removed(again) == set(), again

    # ACR: retention and soft delete cannot both be enabled.
    p = az("acr", "config", "soft-delete", "update", "-r", "default", "--status", "enabled", "--days", "7", "--yes",
           ok=False)
    assert p.returncode != 0 and "cannot both be enabled" in p.stderr, p.stderr
    assert az("acr", "config", "soft-delete", "show", "-r", "default", json_out=True).json["status"] == "disabled"
    # The policy change is in the activity log.
    changes = moat.audit(log="activity")
    enabled = [e for e in changes if str((((e.get("properties") or {}).get("after") or {}).get("policies") or {})
                                         .get("retention", {}).get("status", "")).lower() == "enabled"]
    assert enabled and str(enabled[0]["properties"]["before"]["policies"]["retention"]["status"]).lower() \
        == "disabled", changes[-3:]


def test_retention_counts_days_from_untagging(moat, az):
    sp = sp_create(moat, "retention-days", "Owner")
    az.register_and_login(sp)
    c = moat.client()
    repo = "ret/days"
    az("acr", "config", "retention", "update", "-r", "default", "--status", "enabled", "--days", "3",
       "--type", "UntaggedManifests")
    img = build_image(1, seed="ret-days", layer_size=LAYER)
    c.push_image(repo, img, "v1")
    az("acr", "repository", "untag", "-n", "default", "--image", f"{repo}:v1")
    for days_later in ("0", "2"):
        removed, _ = gc(moat, "--days-later", days_later)
        assert manifests_removed(removed) == set(), (days_later, removed)
    removed, _ = gc(moat, "--days-later", "3")
    assert manifests_removed(removed) == {(repo, img.manifest_digest)}, removed
    # Disabled, nothing more is purged.
    az("acr", "config", "retention", "update", "-r", "default", "--status", "disabled", "--type",
       "UntaggedManifests")
    c.push_image(repo, build_image(1, seed="ret-days-2", layer_size=LAYER))
    removed, _ = gc(moat, "--days-later", "365")
    assert manifests_removed(removed) == set(), removed


def test_soft_delete_keeps_lists_restores_and_purges(moat, az):
    """Soft delete (`az acr config soft-delete update --status enabled --days 1`): a deleted manifest and its tags
    are kept, listed by az and restored; the image pulls again with the same digest; after the retention days the
    collector purges what is still deleted (audited `Purge`)."""
    sp = sp_create(moat, "softdel-az", "Owner")
    az.register_and_login(sp)
    c = moat.client()
    repo = "soft/app"
    shown = az("acr", "config", "soft-delete", "update", "-r", "default", "--status", "enabled", "--days", "1",
               "--yes", json_out=True).json
    assert (shown["status"], shown["retentionDays"]) == ("enabled", 1), shown
    img = build_image(1, seed="soft-img", layer_size=LAYER)
    gone = build_image(1, seed="soft-gone", layer_size=LAYER)
    c.push_image(repo, img, "v1")
    c.push_image(repo, gone, "v2")
    # Deleted by digest over /v2 and through az.
    r = c.request("DELETE", f"/v2/{repo}/manifests/{img.manifest_digest}", repo=repo)
    assert r.status_code == 202, r.text
    az("acr", "repository", "delete", "-n", "default", "--image", f"{repo}@{gone.manifest_digest}", "--yes")
    assert c.get_manifest(repo, "v1").status_code == 404
    # Its layers stay through a collection with no grace: the kept manifest holds them.
    gc(moat)
    assert az("acr", "repository", "list-deleted", "-n", "default", json_out=True).json == [repo]
    listed = az("acr", "manifest", "list-deleted", "-r", "default", "-n", repo, json_out=True).json
    assert {m["digest"] for m in listed} == {img.manifest_digest, gone.manifest_digest}, listed
    assert all(m["deletedAt"] and m["expiresAfter"] for m in listed), listed
    tags = az("acr", "manifest", "list-deleted-tags", "-r", "default", "-n", repo, json_out=True).json
    assert {(t["tag"], t["digest"]) for t in tags} == {("v1", img.manifest_digest), ("v2", gone.manifest_digest)}

    # A tag that now points elsewhere is moved only with --force.
    other = build_image(1, seed="soft-other", layer_size=LAYER)
    c.push_image(repo, other, "v1")
    p = az("acr", "manifest", "restore", "-r", "default", "-n", f"{repo}:v1", "-d", img.manifest_digest, "--yes",
           ok=False)
    assert p.returncode != 0 and "force" in (p.stderr + p.stdout), p.stderr
    az("acr", "manifest", "restore", "-r", "default", "-n", f"{repo}:v1", "--force", "--yes")
    r = c.get_manifest(repo, "v1")
    assert r.status_code == 200 and sha256(r.content) == img.manifest_digest
    assert c.get_blob(repo, img.layers[0][0]).status_code == 200, "the restored image's layers are stored"
    assert {m["digest"] for m in az("acr", "manifest", "list-deleted", "-r", "default", "-n", repo,
                                    json_out=True).json} == {gone.manifest_digest}
    restores = moat.audit(operation="Restore")
    assert restores and restores[-1]["Digest"] == img.manifest_digest, restores

    # Within a day nothing is purged; after it, what is still deleted is (and its layers with it).
    removed, _ = gc(moat)
    assert manifests_removed(removed) == set(), removed
    removed, _ = gc(moat, "--days-later", "1")
    assert manifests_removed(removed) == {(repo, gone.manifest_digest)}, removed
    assert gone.layers[0][0] in {r["digest"] for r in removed if r["kind"] == "blob"}, removed
    assert az("acr", "manifest", "list-deleted", "-r", "default", "-n", repo, json_out=True).json == []
    purges = moat.audit(operation="Purge")
    assert (repo, gone.manifest_digest) in {(e["Repository"], e["Digest"]) for e in purges}, purges
    p = az("acr", "manifest", "restore", "-r", "default", "-n", f"{repo}:v2", "-d", gone.manifest_digest, "--yes",
           ok=False)
    assert p.returncode != 0
    assert c.get_manifest(repo, "v1").status_code == 200, "the restored image stays"
