"""ACR Transfer paths test_transfer_e2e.py leaves out, with the same real clients (azure-mgmt-containerregistry
15.1.0b3 and azure-storage-blob in .venv-transfer through transfer_flow.py, Azurite, Moat servers that share only
a directory or a storage account):

- An import INTO a protected registry (Premium, exports and public access disabled, an approved private endpoint):
  an import pipeline run brings an image exported by another server through a LocalDirectory; the image is there,
  through the private endpoint, with identical digests. Importing is not an egress: the gate must not refuse it.
- The export run's own gate: exports cannot be disabled while an export pipeline exists (and no export pipeline can
  be created once they are), so a run on a registry with exports disabled cannot be reached end to end. What can be
  reached is the rest of that gate: a registry whose network is closed to trusted services (`publicNetworkAccess`
  Disabled, `networkRuleBypassOptions` None) refuses its export pipeline's run when it starts: the run fails saying
  why, the refusal is audited, no archive appears.
- `storageAccessMode: ManagedIdentity` against Azurite: without a registered account the run fails telling the
  operator to run `moat storage-account add`; with `moat storage-account add` (account, endpoint, key) an export
  and an import move an image.
- A secret holding a read-only SAS: the export fails with a message about the credential and its permissions,
  without the SAS; nothing is visible in the container.
"""
from __future__ import annotations

import json
import secrets

import pytest

from conftest import client_via, protect_registry, sha256
from test_transfer_e2e import (REG, RG, Side, last_result, props, push_multiarch_with_referrer, storage)

API = "2025-06-01-preview"


def sig_of(sas: str) -> str:
    return [p for p in sas.lstrip("?").split("&") if p.startswith("sig=")][0].split("=", 1)[1]


def assert_identical_via(client, repo: str, tag: str, digests: dict):
    """`repo:tag` read through `client`: the same index, both platforms' manifests, the referrer."""
    r = client.get_manifest(repo, tag)
    assert r.status_code == 200, r.text
    assert sha256(r.content) == digests["index"]
    for child in digests["children"]:
        r = client.get_manifest(repo, child)
        assert r.status_code == 200 and sha256(r.content) == child, (child, r.status_code)
    r = client.request("GET", f"/v2/{repo}/referrers/{digests['index']}", repo=repo)
    assert r.status_code == 200, r.text
    assert [m["digest"] for m in r.json()["manifests"]] == [digests["referrer"]]


def test_import_into_a_protected_registry(moat_factory, tmp_path):
    media = tmp_path / "diode"
    media.mkdir()
    a, b = moat_factory(transfer_dirs=[media]), moat_factory(transfer_dirs=[media])
    src, dst = Side(a, "exporter"), Side(b, "importer")
    pe = protect_registry(dst.arm(), REG, rg=RG)
    # Really closed: the public listener refuses the registry, only the private endpoint serves it.
    with pytest.raises(AssertionError, match="not allowed access"):
        b.client().get_manifest("app", "v1")
    digests = push_multiarch_with_referrer(a, "app", "v1")
    local = {"type": "LocalDirectory", "uri": media.as_uri()}
    res = src.flow([{"op": "export_pipeline", "name": "toinbox", **local},
                    {"op": "run", "name": "export1", "pipeline": "toinbox", "artifacts": ["app:v1"],
                     "target": "app-v1.tar"}])
    out = props(last_result(res, "run"))["response"]
    assert out["status"] == "Succeeded", out

    res = dst.flow([{"op": "import_pipeline", "name": "frominbox", **local, "trigger": "Disabled"},
                    {"op": "run", "name": "import1", "pipeline": "frominbox", "source": "app-v1.tar",
                     "catalog_digest": out["catalogDigest"]}])
    got = props(last_result(res, "run"))["response"]
    assert got["status"] == "Succeeded", got
    assert got["importedArtifacts"] == ["app:v1"] and got["catalogDigest"] == out["catalogDigest"], got
    assert_identical_via(client_via(b, pe["address"]), "app", "v1", digests)
    imports = b.audit(operation="Import")
    assert any(e["Repository"] == "app" and e["Tag"] == "v1" and e["ResultType"] == "Success" for e in imports), \
        imports

    # The run side of "no export from here": a run naming an export pipeline the protected registry cannot have is
    # refused when it is requested, and no archive is written.
    arm = dst.arm()
    base = arm.registry_path(REG, RG)
    r = arm.request("PUT", f"{base}/pipelineRuns/export2", api_version=API, json_body={"properties": {"request": {
        "pipelineResourceId": f"{base}/exportPipelines/toinbox", "artifacts": ["app:v1"],
        "target": {"type": "AzureStorageBlob", "name": "leak.tar"}}}})
    assert r.status_code in (400, 404), r.text
    assert sorted(x.name for x in media.iterdir()) == ["app-v1.tar"]


def test_export_run_refused_at_start_by_the_registry_network_and_audited(moat_factory, tmp_path):
    media = tmp_path / "usb"
    media.mkdir()
    a = moat_factory(transfer_dirs=[media])
    side = Side(a, "exporter")
    arm = side.arm()
    push_multiarch_with_referrer(a, "app", "v1")
    side.flow([{"op": "export_pipeline", "name": "usbout", "type": "LocalDirectory", "uri": media.as_uri()}])
    # Exports cannot be disabled under an export pipeline: the exports-disabled side of the run's gate is
    # unreachable end to end (see the module comment).
    r = arm.patch_registry(REG, {"properties": {"policies": {"exportPolicy": {"status": "disabled"}},
                                                "publicNetworkAccess": "Disabled"}}, RG)
    assert r.status_code == 400, r.text
    # Closed to trusted services too: the run is the server acting on its own, refused when it starts.
    r = arm.patch_registry(REG, {"properties": {"publicNetworkAccess": "Disabled",
                                                "networkRuleBypassOptions": "None"}}, RG)
    assert r.status_code == 200, r.text
    res = side.flow([{"op": "run", "name": "blocked1", "pipeline": "usbout", "artifacts": ["app:v1"],
                      "target": "blocked.tar"}])
    resp = props(last_result(res, "run"))["response"]
    assert resp["status"] == "Failed", resp
    msg = resp["pipelineRunErrorMessage"]
    assert "network" in msg.lower() or "trusted" in msg.lower(), msg
    assert list(media.iterdir()) == [], "a refused run wrote an archive"
    denied = [e for e in a.audit(operation="Export") if e["ResultType"] != "Success"]
    assert any(e["Identity"] == "pipelineRuns/blocked1" and e["Repository"] == "app" and e["Tag"] == "v1"
               and "networkRuleBypassOptions" in e["ResultDescription"] for e in denied), \
        json.dumps(a.audit(operation="Export"), indent=1)
    # Opened again to trusted services, the same pipeline runs.
    r = arm.patch_registry(REG, {"properties": {"networkRuleBypassOptions": "AzureServices"}}, RG)
    assert r.status_code == 200, r.text
    res = side.flow([{"op": "run", "name": "allowed1", "pipeline": "usbout", "artifacts": ["app:v1"],
                      "target": "allowed.tar"}])
    assert props(last_result(res, "run"))["response"]["status"] == "Succeeded", res
    assert [x.name for x in media.iterdir()] == ["allowed.tar"]


def test_managed_identity_mode_with_a_registered_storage_account(moat_factory, azurite, tmp_path):
    a, b = moat_factory(), moat_factory()
    src, dst = Side(a, "exporter"), Side(b, "importer")
    container = "mi" + secrets.token_hex(3)
    storage(azurite, [{"op": "create_container", "container": container}])
    uri = f"{azurite.endpoint}/{container}"
    digests = push_multiarch_with_referrer(a, "team/mi", "v1")
    mi = {"uri": uri, "mode": "ManagedIdentity"}

    # Nothing registered for the account: the run fails and says what to run.
    res = src.flow([{"op": "export_pipeline", "name": "miexport1", **mi},
                    {"op": "run", "name": "noaccount", "pipeline": "miexport1", "artifacts": ["team/mi:v1"],
                     "target": "mi.tar"}])
    resp = props(last_result(res, "run"))["response"]
    assert resp["status"] == "Failed", resp
    assert "moat storage-account add" in resp["pipelineRunErrorMessage"], resp
    assert azurite.account in resp["pipelineRunErrorMessage"], resp
    assert storage(azurite, [{"op": "list", "container": container}])[0] == []

    for server in (a, b):
        server.moat("storage-account", "add", "--name", azurite.account, "--blob-endpoint", azurite.endpoint + "/",
                    "--key", azurite.key)
    res = src.flow([{"op": "run", "name": "withaccount", "pipeline": "miexport1", "artifacts": ["team/mi:v1"],
                     "target": "mi.tar"}])
    out = props(last_result(res, "run"))["response"]
    assert out["status"] == "Succeeded", out
    assert out["target"]["storageAccessMode"] == "ManagedIdentity" and out["target"]["uri"] == f"{uri}/mi.tar", out
    blobs = storage(azurite, [{"op": "list", "container": container}])[0]
    assert [x["name"] for x in blobs] == ["mi.tar"] and blobs[0]["metadata"].get("category") == "acr-transfer-blob"

    res = dst.flow([{"op": "import_pipeline", "name": "miimport1", **mi, "trigger": "Disabled"},
                    {"op": "run", "name": "miimport", "pipeline": "miimport1", "source": "mi.tar",
                     "catalog_digest": out["catalogDigest"]}])
    got = props(last_result(res, "run"))["response"]
    assert got["status"] == "Succeeded", got
    assert got["importedArtifacts"] == ["team/mi:v1"], got
    assert_identical_via(b.client(), "team/mi", "v1", digests)
    for server in (a, b):
        assert azurite.key not in server.log_path.read_text(errors="replace")
        assert azurite.key not in json.dumps(server.audit(log="all"))


def test_read_only_sas_fails_on_permissions_and_writes_nothing(moat_factory, azurite):
    a = moat_factory()
    side = Side(a, "exporter")
    container = "ro" + secrets.token_hex(3)
    sas = storage(azurite, [{"op": "create_container", "container": container},
                            {"op": "sas", "permissions": "rl"}])[-1]
    kv = side.secret("vaultro", "readonly", sas)
    push_multiarch_with_referrer(a, "app", "v1")
    res = side.flow([{"op": "export_pipeline", "name": "roexport1", "uri": f"{azurite.endpoint}/{container}", "kv": kv},
                     {"op": "run", "name": "rorun", "pipeline": "roexport1", "artifacts": ["app:v1"],
                      "target": "ro.tar"}])
    run_ = last_result(res, "run")
    resp = props(run_)["response"]
    assert resp["status"] == "Failed", resp
    msg = resp["pipelineRunErrorMessage"]
    assert kv in msg and "permission" in msg.lower(), msg
    sig = sig_of(sas)
    assert sig not in json.dumps(run_) and "sig=" not in json.dumps(run_) and "sp=rl" not in msg, msg
    assert sig not in a.log_path.read_text(errors="replace")
    assert sig not in json.dumps(a.audit(log="all"))
    assert storage(azurite, [{"op": "list", "container": container}])[0] == []
    # Nothing uncommitted either (a block list left behind would show with include=uncommittedblobs).
    r = azurite.request("GET", f"/{container}", {"restype": "container", "comp": "list",
                                                 "include": "uncommittedblobs"})
    assert r.status_code == 200 and "<Blob>" not in r.text, r.text
