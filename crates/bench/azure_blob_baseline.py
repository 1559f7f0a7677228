"""The benchmark's peer for workload 10: the same bytes moved by the Azure Storage Python SDK (azure-storage-blob)
to or from the same Azurite, with the same concurrency and block size as Moat's transfer client.

    python azure_blob_baseline.py sas      ENDPOINT ACCOUNT KEY
    python azure_blob_baseline.py container ENDPOINT ACCOUNT KEY CONTAINER
    python azure_blob_baseline.py upload   ENDPOINT ACCOUNT KEY CONTAINER BLOB FILE CONCURRENCY BLOCK_BYTES
    python azure_blob_baseline.py download ENDPOINT ACCOUNT KEY CONTAINER BLOB FILE CONCURRENCY BLOCK_BYTES

Prints one JSON object: {"seconds": …, "bytes": …} (upload/download, timed around the SDK call only) or
{"sas": "…"} (an account SAS, read/write/list/add/create/delete on containers and objects, valid for a day).
"""
import datetime
import json
import os
import sys
import time

from azure.storage.blob import (AccountSasPermissions, BlobServiceClient, ResourceTypes,
                                generate_account_sas)


def main(argv):
    op, endpoint, account, key = argv[1:5]
    if op == "sas":
        sas = generate_account_sas(
            account_name=account, account_key=key,
            resource_types=ResourceTypes(service=True, container=True, object=True),
            permission=AccountSasPermissions(read=True, write=True, list=True, add=True, create=True, delete=True),
            expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1))
        print(json.dumps({"sas": sas}))
        return
    if op == "container":
        c = BlobServiceClient(account_url=endpoint,
                              credential={"account_name": account, "account_key": key}).get_container_client(argv[5])
        if not c.exists():
            c.create_container()
        print(json.dumps({"container": argv[5]}))
        return
    container, blob, path, concurrency, block = argv[5:10]
    concurrency, block = int(concurrency), int(block)
    svc = BlobServiceClient(account_url=endpoint, credential={"account_name": account, "account_key": key},
                            max_block_size=block, max_single_put_size=block, max_single_get_size=block,
                            max_chunk_get_size=block)
    c = svc.get_container_client(container)
    if not c.exists():
        c.create_container()
    b = c.get_blob_client(blob)
    if op == "upload":
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            t = time.monotonic()
            b.upload_blob(f, length=size, overwrite=True, max_concurrency=concurrency)
            el = time.monotonic() - t
    elif op == "download":
        with open(path, "wb") as f:
            t = time.monotonic()
            size = b.download_blob(max_concurrency=concurrency).readinto(f)
            f.flush()
            el = time.monotonic() - t
    else:
        raise SystemExit(f"unknown operation {op}")
    print(json.dumps({"seconds": el, "bytes": size}))


if __name__ == "__main__":
    main(sys.argv)
