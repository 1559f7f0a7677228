"""ACR Transfer driven by the real clients, run by test_transfer_e2e.py with the python of .venv-transfer
(azure-mgmt-containerregistry 15.1.0b3, which has the pipeline operations, and azure-storage-blob). Not a test
module itself (pytest collects test_*.py only).

    python transfer_flow.py '{"ops": [{"op": ..., ...}, ...], <connection fields>}'

Management operations (`base`, `tenant`, `app_id`, `password`, `subscription`, `rg`, `registry`):
  export_pipeline {name, uri, kv, mode?, options?}         -> the pipeline as the SDK returns it
  import_pipeline {name, uri, kv, mode?, options?, trigger?}
  run {name, pipeline, artifacts? , target?, source?, catalog_digest?, force?} -> the finished run (the SDK's
      poller waits for the long-running PUT)
  get_run {name}, list_runs {}, get_pipeline {kind, name}, delete_run {name}
Storage operations on Azurite (`connection_string`):
  sas {container, permissions}   -> an account SAS for that container's account (no leading '?')
  create_container {container}, list {container}, download {container, blob, path}, upload {container, blob,
  path, metadata?, md5?}, delete_blob {container, blob}

Prints one JSON object per operation (`{"op": ..., "result": ...}`); exits 1 with a traceback on an error.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import sys
import time


def out(**kw):
    print(json.dumps(kw, default=str), flush=True)


def as_dict(model):
    if model is None:
        return None
    if hasattr(model, "as_dict"):
        try:
            return model.as_dict()
        except TypeError:
            pass
    return json.loads(json.dumps(dict(model), default=lambda o: as_dict(o) if hasattr(o, "keys") else str(o)))


def mgmt(cfg):
    from azure.identity import ClientSecretCredential
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient as C

    cred = ClientSecretCredential(cfg["tenant"], cfg["app_id"], cfg["password"], authority=cfg["base"],
                                  disable_instance_discovery=True)
    return C(cred, cfg["subscription"], base_url=cfg["base"])


def registry_id(cfg):
    return (f"/subscriptions/{cfg['subscription']}/resourceGroups/{cfg['rg']}/providers/"
            f"Microsoft.ContainerRegistry/registries/{cfg['registry']}")


def storage_side(op):
    side = {"type": op.get("type", "AzureStorageBlobContainer"), "uri": op["uri"],
            "storageAccessMode": op.get("mode", "SasToken")}
    if op.get("kv"):
        side["keyVaultUri"] = op["kv"]
    return side


def main() -> int:
    cfg = json.loads(sys.argv[1])
    client = None
    blob_service = None
    for op in cfg["ops"]:
        kind = op["op"]
        if kind in ("export_pipeline", "import_pipeline", "run", "get_run", "list_runs", "get_pipeline",
                    "delete_run"):
            client = client or mgmt(cfg)
        else:
            from azure.storage.blob import BlobServiceClient
            blob_service = blob_service or BlobServiceClient.from_connection_string(cfg["connection_string"])
        rg, reg = cfg.get("rg"), cfg.get("registry")
        t0 = time.monotonic()
        if kind == "export_pipeline":
            body = {"location": "westeurope", "identity": {"type": "SystemAssigned"},
                    "properties": {"target": storage_side(op), "options": op.get("options", [])}}
            result = as_dict(client.export_pipelines.begin_create(rg, reg, op["name"], body).result())
        elif kind == "import_pipeline":
            body = {"location": "westeurope", "identity": {"type": "SystemAssigned"},
                    "properties": {"source": storage_side(op), "options": op.get("options", []),
                                   "trigger": {"sourceTrigger": {"status": op.get("trigger", "Disabled")}}}}
            if op.get("trusted_keys"):
                body["properties"]["trustedExporterKeys"] = op["trusted_keys"]
            result = as_dict(client.import_pipelines.begin_create(rg, reg, op["name"], body).result())
        elif kind == "run":
            collection = "exportPipelines" if op.get("artifacts") else "importPipelines"
            request = {"pipelineResourceId": f"{registry_id(cfg)}/{collection}/{op['pipeline']}"}
            if op.get("artifacts"):
                request["artifacts"] = op["artifacts"]
                request["target"] = {"type": "AzureStorageBlob", "name": op["target"]}
            else:
                request["source"] = {"type": "AzureStorageBlob", "name": op["source"]}
                if op.get("catalog_digest"):
                    request["catalogDigest"] = op["catalog_digest"]
            body = {"properties": {"request": request}}
            if op.get("force"):
                body["properties"]["forceUpdateTag"] = op["force"]
            poller = client.pipeline_runs.begin_create(rg, reg, op["name"], body, polling_interval=1)
            try:
                result = as_dict(poller.result())
            except Exception as e:  # a failed run: the poller raises; the run itself says why
                out(op=kind, poller_error=str(e)[:2000])
                result = as_dict(client.pipeline_runs.get(rg, reg, op["name"]))
        elif kind == "get_run":
            result = as_dict(client.pipeline_runs.get(rg, reg, op["name"]))
        elif kind == "list_runs":
            result = [as_dict(r) for r in client.pipeline_runs.list(rg, reg)]
        elif kind == "get_pipeline":
            ops = client.export_pipelines if op["kind"] == "export" else client.import_pipelines
            result = as_dict(ops.get(rg, reg, op["name"]))
        elif kind == "delete_run":
            client.pipeline_runs.begin_delete(rg, reg, op["name"]).result()
            result = "deleted"
        elif kind == "sas":
            from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas
            result = generate_account_sas(
                blob_service.account_name, blob_service.credential.account_key,
                resource_types=ResourceTypes(service=True, container=True, object=True),
                permission=AccountSasPermissions.from_string(op.get("permissions", "racwdl")),
                expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2))
        elif kind == "create_container":
            try:
                blob_service.create_container(op["container"])
            except Exception as e:  # noqa: BLE001 - exists already
                if "ContainerAlreadyExists" not in str(e):
                    raise
            result = "ok"
        elif kind == "list":
            c = blob_service.get_container_client(op["container"])
            result = [{"name": b.name, "size": b.size, "etag": b.etag, "metadata": b.metadata,
                       "md5": base64.b64encode(b.content_settings.content_md5).decode()
                       if b.content_settings.content_md5 else None}
                      for b in c.list_blobs(include=["metadata"])]
        elif kind == "download":
            c = blob_service.get_blob_client(op["container"], op["blob"])
            with open(op["path"], "wb") as f:
                c.download_blob().readinto(f)
            result = "ok"
        elif kind == "upload":
            from azure.storage.blob import ContentSettings
            data = open(op["path"], "rb").read()
            settings = ContentSettings(content_md5=bytearray(hashlib.md5(data).digest())) if op.get("md5", True) \
                else None
            c = blob_service.get_blob_client(op["container"], op["blob"])
            c.upload_blob(data, overwrite=True, metadata=op.get("metadata"), content_settings=settings)
            result = "ok"
        elif kind == "delete_blob":
            blob_service.get_blob_client(op["container"], op["blob"]).delete_blob()
            result = "ok"
        else:
            raise SystemExit(f"unknown op {kind}")
        out(op=kind, seconds=round(time.monotonic() - t0, 2), result=result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
