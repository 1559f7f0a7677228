"""ACR Transfer's pipelines with azure-mgmt-containerregistry 15.1.0b3 (the SDK with export_pipelines,
import_pipelines and pipeline_runs), run by test_transfer_pipelines.py with .venv-transfer's python.

    python transfer_pipelines_flow.py '{"base": ..., "tenant": ..., "app_id": ..., "password": ...,
                                        "subscription": ..., "rg": "rg1", "name": "xferreg", "protected": "xferprot"}'

`name` is a Premium registry with exports enabled, `protected` one with exports disabled. Prints one JSON object per
step and finally {"step": "done", "ok": true}; exits 1 with a traceback on the first failed check.
"""
from __future__ import annotations

import json
import sys
import time


def out(**kw):
    print(json.dumps(kw, default=str), flush=True)


def main() -> int:
    cfg = json.loads(sys.argv[1])
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.core.pipeline.policies import SansIOHTTPPolicy
    from azure.identity import ClientSecretCredential
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient as C
    from azure.mgmt.containerregistry import models as m
    from azure.mgmt.containerregistry._version import VERSION

    out(step="versions", sdk=VERSION)
    seen = []

    class Record(SansIOHTTPPolicy):
        def on_response(self, request, response):
            r = request.http_request
            seen.append((r.method, r.url, response.http_response.status_code))

    cred = ClientSecretCredential(cfg["tenant"], cfg["app_id"], cfg["password"], authority=cfg["base"],
                                  disable_instance_discovery=True)
    client = C(cred, cfg["subscription"], base_url=cfg["base"], per_call_policies=[Record()])
    rg, name, protected = cfg["rg"], cfg["name"], cfg["protected"]
    kv = "https://xfervault.vault.azure.net/secrets/export-sas"
    container = "https://xferacct.blob.core.windows.net/exports"

    def timed(what, poller):
        t0 = time.monotonic()
        result = poller.result()
        dt = time.monotonic() - t0
        assert dt < 10, f"{what}: the poller took {dt:.1f}s (Retry-After ignored?)"
        return result

    # -- export pipeline: every field as the SDK sends it, read back as the API spells it
    export = m.ExportPipeline(
        location="local",
        identity=m.IdentityProperties(type="SystemAssigned"),
        properties=m.ExportPipelineProperties(
            target=m.ExportPipelineTargetProperties(type="AzureStorageBlobContainer", uri=container,
                                                    key_vault_uri=kv, storage_access_mode="SasToken"),
            options=["OverwriteBlobs", "ContinueOnErrors"]))
    created = timed("export create", client.export_pipelines.begin_create(rg, name, "export01", export))
    got = client.export_pipelines.get(rg, name, "export01").as_dict()
    out(step="export_pipeline", body=got)
    assert got["name"] == "export01" and got["type"] == "Microsoft.ContainerRegistry/registries/exportPipelines", got
    assert got["id"].endswith(f"/registries/{name}/exportPipelines/export01"), got
    assert got["location"] == "local", got
    assert got["identity"]["type"] == "systemAssigned", got  # ACR's lower camel (reference §1.3)
    assert got["identity"]["principalId"] and got["identity"]["tenantId"] == cfg["tenant"], got
    assert got["properties"]["target"] == {"type": "AzureStorageBlobContainer", "uri": container,
                                           "keyVaultUri": kv, "storageAccessMode": "SasToken"}, got
    assert got["properties"]["options"] == ["OverwriteBlobs", "ContinueOnErrors"], got
    assert got["properties"]["provisioningState"] == "Succeeded", got
    assert got["systemData"]["createdBy"] == cfg["app_id"], got
    assert created.as_dict()["properties"] == got["properties"], created.as_dict()
    # The SDK's own model reads it too.
    typed = client.export_pipelines.get(rg, name, "export01")
    assert typed.properties.target.key_vault_uri == kv and typed.identity.principal_id, typed

    # Replace: ManagedIdentity mode needs no secret (and drops one); the identity's principal stays.
    principal = got["identity"]["principalId"]
    mi = m.ExportPipeline(identity=m.IdentityProperties(type="SystemAssigned"), properties=m.ExportPipelineProperties(
        target=m.ExportPipelineTargetProperties(uri=container, storage_access_mode="ManagedIdentity")))
    timed("export replace", client.export_pipelines.begin_create(rg, name, "export01", mi))
    got = client.export_pipelines.get(rg, name, "export01").as_dict()
    assert got["properties"]["target"]["storageAccessMode"] == "ManagedIdentity", got
    assert got["properties"]["target"].get("keyVaultUri") is None, got
    assert got["identity"]["principalId"] == principal, got
    assert got["properties"]["options"] == [], got

    # -- import pipeline: the trigger defaults to Enabled; Moat's trustedExporterKeys round-trips
    key = "ed25519:" + "A" * 43 + "="
    imp = {"identity": {"type": "SystemAssigned"},
           "properties": {"source": {"uri": "https://xferacct.blob.core.windows.net/imports",
                                     "keyVaultUri": "https://xfervault.vault.azure.net/secrets/import-sas"},
                          "options": ["OverwriteTags", "DeleteSourceBlobOnSuccess", "ContinueOnErrors"],
                          "trustedExporterKeys": [key]}}
    timed("import create", client.import_pipelines.begin_create(rg, name, "import01", imp))
    got = client.import_pipelines.get(rg, name, "import01").as_dict()
    out(step="import_pipeline", body=got)
    assert got["type"] == "Microsoft.ContainerRegistry/registries/importPipelines", got
    assert got["properties"]["source"] == {"type": "AzureStorageBlobContainer",
                                           "uri": "https://xferacct.blob.core.windows.net/imports",
                                           "keyVaultUri": "https://xfervault.vault.azure.net/secrets/import-sas",
                                           "storageAccessMode": "SasToken"}, got
    assert got["properties"]["trigger"] == {"sourceTrigger": {"status": "Enabled"}}, got
    assert got["properties"]["options"] == ["OverwriteTags", "DeleteSourceBlobOnSuccess", "ContinueOnErrors"], got
    assert got["properties"]["trustedExporterKeys"] == [key], got
    assert "location" not in got, got  # not given, not answered (as ACR)
    typed = client.import_pipelines.get(rg, name, "import01")
    assert typed.properties.trigger.source_trigger.status == "Enabled", typed

    names = sorted(p.name for p in client.import_pipelines.list(rg, name))
    assert names == ["import01"], names
    assert [p.name for p in client.export_pipelines.list(rg, name)] == ["export01"]

    # -- refusals the SDK surfaces as HttpResponseError with ARM's envelope
    def refused(what, call, status, code):
        try:
            call()
        except HttpResponseError as e:
            out(step=what, status=e.status_code, code=e.error.code if e.error else None,
                message=e.error.message if e.error else None)
            assert e.status_code == status and e.error is not None and e.error.code == code, str(e)
            return e.error.message
        raise AssertionError(f"{what}: not refused")

    bad_opts = {"properties": {"target": {"uri": container, "keyVaultUri": kv}, "options": ["OverwriteTags"]}}
    refused("export_option_refused", lambda: client.export_pipelines.begin_create(rg, name, "export02", bad_opts).result(),
            400, "InvalidParameter")
    refused("name_refused", lambda: client.export_pipelines.begin_create(
        rg, name, "ex-1", {"properties": {"target": {"uri": container, "keyVaultUri": kv}}}).result(), 400, "InvalidParameter")
    message = refused("protected_export_refused", lambda: client.export_pipelines.begin_create(
        rg, protected, "export01", {"properties": {"target": {"uri": container, "keyVaultUri": kv}}}).result(),
        400, "BadRequest")
    assert message == (f"Export pipelines cannot be created on registry '{protected}' because its exports are "
                       "disabled."), message
    try:
        client.export_pipelines.get(rg, protected, "export01")
        raise AssertionError("a refused export pipeline exists")
    except ResourceNotFoundError:
        pass
    # Import into a protected registry is allowed.
    timed("protected import create", client.import_pipelines.begin_create(rg, protected, "import01", imp))
    out(step="protected_import_created")

    # -- a run: accepted with 201 and the request normalized (repo -> repo:latest)
    pid = client.export_pipelines.get(rg, name, "export01").id
    run = {"properties": {"request": {"pipelineResourceId": pid, "artifacts": ["hello"],
                                      "target": {"type": "AzureStorageBlob", "name": "out.tar"}}}}
    poller = client.pipeline_runs.begin_create(rg, name, "run01", run)
    got = client.pipeline_runs.get(rg, name, "run01").as_dict()
    out(step="run", body=got)
    assert got["properties"]["request"]["artifacts"] == ["hello:latest"], got
    assert got["properties"]["request"]["pipelineResourceId"] == pid, got
    assert got["properties"]["provisioningState"] in ("Creating", "Succeeded", "Failed"), got
    assert got["type"] == "Microsoft.ContainerRegistry/registries/pipelineRuns", got
    assert [r.name for r in client.pipeline_runs.list(rg, name)] == ["run01"]
    del poller  # its outcome belongs to the run's job (tested with storage in test_transfer_e2e.py)
    timed("run delete", client.pipeline_runs.begin_delete(rg, name, "run01"))
    try:
        client.pipeline_runs.get(rg, name, "run01")
        raise AssertionError("the deleted run is still there")
    except ResourceNotFoundError:
        pass

    # -- delete
    timed("export delete", client.export_pipelines.begin_delete(rg, name, "export01"))
    timed("import delete", client.import_pipelines.begin_delete(rg, name, "import01"))
    assert list(client.export_pipelines.list(rg, name)) == []
    try:
        client.import_pipelines.get(rg, name, "import01")
        raise AssertionError("the deleted import pipeline is still there")
    except ResourceNotFoundError:
        pass
    versions = sorted({u.split("api-version=")[1].split("&")[0] for _, u, _ in seen
                       if "api-version=" in u and "Pipeline" in u or "pipeline" in u.lower() and "api-version=" in u})
    out(step="done", ok=True, api_versions=versions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
