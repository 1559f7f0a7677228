"""ACR Transfer end to end (issue 11, "Tests that must exist"): two Moat servers that share nothing but a storage
account (Azurite, with a real account and key) or a directory, the real clients on both sides.

- azure-mgmt-containerregistry 15.1.0b3 (.venv-transfer, through transfer_flow.py) creates an export pipeline on
  server A and an import pipeline on server B; a multi-arch image with a referrer goes out to Azurite and in on B;
  skopeo pulls it from B: identical digests. The SAS token is in no GET response, server log line or audit row.
- The same through `LocalDirectory` with `moat acr …` commands; the archive opens with `skopeo copy oci-archive:`.
- Source trigger: a new archive is imported once, DeleteSourceBlobOnSuccess removes it, a tampered archive is
  refused with nothing imported.
- `kill -9` during the export of a 1 GiB image and during its import: after a restart the run finishes or fails
  explicitly, and nothing is half-visible (no archive under its name before the commit; no tag in the target
  before the import's transaction).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from conftest import (OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, REPO_ROOT, Arm, azure_env, build_image, free_port,
                      require_tool, run, sha256, sp_create, venv_python)

FLOW = REPO_ROOT / "tests" / "e2e" / "transfer_flow.py"
RG = "moat"  # the built-in registry `default` (login server 127.0.0.1:PORT) lives in resource group `moat`
REG = "default"
TRIGGER_ENV = {"MOAT_TRANSFER_TRIGGER_INTERVAL_SECS": "1"}


def connection_string(azurite) -> str:
    """The Azurite account (tests/e2e/azurite.py's session fixture) for azure-storage-blob."""
    return (f"DefaultEndpointsProtocol=http;AccountName={azurite.account};AccountKey={azurite.key};"
            f"BlobEndpoint={azurite.endpoint};")


# ------------------------------------------------------------------------------------------------ helpers

class Side:
    """One Moat server with an Owner service principal, driven through transfer_flow.py."""

    def __init__(self, server, name: str):
        self.server = server
        self.sp = sp_create(server, name)
        self.subscription = Arm(server, self.sp).subscription

    def flow(self, ops: list[dict], connection_string: str | None = None, timeout: float = 240) -> list[dict]:
        cfg = {"base": self.server.base_url, "tenant": self.sp["tenant"], "app_id": self.sp["appId"],
               "password": self.sp["password"], "subscription": self.subscription, "rg": RG, "registry": REG,
               "connection_string": connection_string, "ops": ops}
        return flow(cfg, azure_env(self.server), timeout)

    def secret(self, vault: str, name: str, value: str) -> str:
        """`moat secret set` on this server's data; returns the Key Vault-shaped URI a pipeline names."""
        uri = f"https://{vault}.vault.azure.net/secrets/{name}"
        path = self.server.workdir / f"sas-{vault}-{name}"
        path.write_text(value)
        self.server.moat("secret", "set", "--id", uri, "--file", str(path))
        path.unlink()
        return uri

    def arm(self) -> Arm:
        return Arm(self.server, self.sp)


def flow(cfg: dict, env: dict, timeout: float = 240) -> list[dict]:
    p = subprocess.run([venv_python(".venv-transfer"), str(FLOW), json.dumps(cfg)], capture_output=True, text=True,
                       env=env, timeout=timeout)
    assert p.returncode == 0, f"transfer_flow.py failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}"
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def storage(azurite, ops: list[dict]) -> list:
    """Storage operations on Azurite with azure-storage-blob (the account key stays on the test's side)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOAT_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return [r["result"] for r in flow({"connection_string": connection_string(azurite), "ops": ops}, env)]


def last_result(results: list[dict], op: str):
    found = [r for r in results if r.get("op") == op and "result" in r]
    assert found, results
    return found[-1]["result"]


def props(run: dict) -> dict:
    return run.get("properties") or {}


def push_multiarch_with_referrer(server, repo: str, tag: str, layer_size: int = 2048) -> dict:
    """Pushes a two-platform index under `repo:tag` and a signature-like referrer of the index; returns digests."""
    c = server.client()
    images = {arch: build_image(2, seed=f"{repo}-{arch}-{secrets.token_hex(4)}", layer_size=layer_size)
              for arch in ("amd64", "arm64")}
    for img in images.values():
        c.push_image(repo, img)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": img.manifest_digest, "size": len(img.manifest_bytes),
         "platform": {"architecture": arch, "os": "linux"}} for arch, img in images.items()]}
    index_bytes = json.dumps(index).encode()
    r = c.put_manifest(repo, tag, index_bytes, OCI_INDEX)
    assert r.status_code == 201, r.text
    empty = b"{}"
    c.push_blob(repo, empty)
    sig = b"signature of " + sha256(index_bytes).encode()
    c.push_blob(repo, sig)
    referrer = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig.v1",
                "config": {"mediaType": OCI_EMPTY, "digest": sha256(empty), "size": len(empty)},
                "layers": [{"mediaType": "application/octet-stream", "digest": sha256(sig), "size": len(sig)}],
                "subject": {"mediaType": OCI_INDEX, "digest": sha256(index_bytes), "size": len(index_bytes)}}
    referrer_bytes = json.dumps(referrer).encode()
    r = c.put_manifest(repo, sha256(referrer_bytes), referrer_bytes, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    return {"index": sha256(index_bytes), "referrer": sha256(referrer_bytes),
            "children": sorted(i.manifest_digest for i in images.values())}


def cert_dir(server, tmp_path: Path) -> Path:
    d = tmp_path / f"certs-{server.port}"
    d.mkdir(exist_ok=True)
    shutil.copy(server.ca_path, d / "ca.crt")
    return d


def skopeo(*args, timeout=300):
    return run([require_tool("skopeo"), *args], timeout=timeout)


def assert_pulled_identical(server, tmp_path: Path, repo: str, tag: str, digests: dict):
    """skopeo reads `repo:tag` from `server`: the same index digest, every platform, and the referrer there."""
    certs = cert_dir(server, tmp_path)
    creds = f"admin:{server.admin_password}"
    raw = skopeo("inspect", "--raw", "--cert-dir", str(certs), "--creds", creds,
                 f"docker://{server.login_server}/{repo}:{tag}").stdout
    assert sha256(raw.encode()) == digests["index"], raw
    dest = tmp_path / f"pulled-{server.port}"
    skopeo("copy", "--all", "--src-cert-dir", str(certs), "--src-creds", creds,
           f"docker://{server.login_server}/{repo}:{tag}", f"oci:{dest}:{tag}")
    index = json.loads((dest / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [digests["index"]]
    for child in digests["children"]:
        assert (dest / "blobs" / "sha256" / child.split(":")[1]).exists(), child
    r = server.client().request("GET", f"/v2/{repo}/referrers/{digests['index']}", repo=repo)
    assert r.status_code == 200, r.text
    assert [m["digest"] for m in r.json()["manifests"]] == [digests["referrer"]]


def wait_run(side: Side, name: str, timeout: float = 120, want=("Succeeded", "Failed")) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = side.arm().request("GET", f"{side.arm().registry_path(REG, RG)}/pipelineRuns/{name}",
                               api_version="2025-06-01-preview")
        if r.status_code == 200 and props(r.json()).get("response", {}).get("status") in want:
            return r.json()
        assert time.monotonic() < deadline, f"run {name}: {r.status_code} {r.text[:1000]}"
        time.sleep(0.3)


def runs_of(side: Side) -> list[dict]:
    r = side.arm().request("GET", f"{side.arm().registry_path(REG, RG)}/pipelineRuns",
                           api_version="2025-06-01-preview")
    assert r.status_code == 200, r.text
    return r.json()["value"]


# ------------------------------------------------------------------------------------------------ tests

def test_sdk_export_to_azurite_and_import_on_a_second_server(moat_factory, azurite, tmp_path):
    a, b = moat_factory(), moat_factory()
    src, dst = Side(a, "exporter"), Side(b, "importer")
    container = "transfer" + secrets.token_hex(3)
    sas = storage(azurite, [{"op": "create_container", "container": container},
                            {"op": "sas", "permissions": "racwdl"}])[-1]
    container_uri = f"{azurite.endpoint}/{container}"
    kv_a = src.secret("vaulta", "exportsas", sas)
    kv_b = dst.secret("vaultb", "importsas", "?" + sas)  # with the leading '?' the docs' example stores
    digests = push_multiarch_with_referrer(a, "team/app", "v1")

    res = src.flow([{"op": "export_pipeline", "name": "exporter1", "uri": container_uri, "kv": kv_a},
                    {"op": "run", "name": "export1", "pipeline": "exporter1", "artifacts": ["team/app:v1"],
                     "target": "app-v1.tar"}])
    run1 = last_result(res, "run")
    resp = props(run1)["response"]
    assert resp["status"] == "Succeeded", run1
    assert resp["progress"]["percentage"] == "100"
    assert resp["target"]["uri"] == f"{container_uri}/app-v1.tar" and resp["target"]["keyVaultUri"] == kv_a
    assert resp["catalogDigest"].startswith("sha256:") and resp["startTime"] and resp["finishTime"]
    blobs = storage(azurite, [{"op": "list", "container": container}])[0]
    assert [x["name"] for x in blobs] == ["app-v1.tar"], blobs  # no temporary name left behind
    assert blobs[0]["metadata"].get("category") == "acr-transfer-blob" and blobs[0]["md5"], blobs
    archive = tmp_path / "app-v1.tar"
    storage(azurite, [{"op": "download", "container": container, "blob": "app-v1.tar", "path": str(archive)}])
    assert "sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest() == resp["catalogDigest"]

    res = dst.flow([{"op": "import_pipeline", "name": "importer1", "uri": container_uri, "kv": kv_b,
                     "trigger": "Disabled"},
                    {"op": "run", "name": "import1", "pipeline": "importer1", "source": "app-v1.tar",
                     "catalog_digest": resp["catalogDigest"]}])
    run2 = last_result(res, "run")
    resp2 = props(run2)["response"]
    assert resp2["status"] == "Succeeded", run2
    assert resp2["importedArtifacts"] == ["team/app:v1"], resp2
    assert resp2["source"]["uri"] == f"{container_uri}/app-v1.tar"
    assert resp2["catalogDigest"] == resp["catalogDigest"]
    assert_pulled_identical(b, tmp_path, "team/app", "v1", digests)

    # Audited on both sides: Export on the registry read (with the destination), Import on the one written.
    exports = a.audit(operation="Export")
    assert exports and all(e["ResultType"] == "Success" for e in exports), exports
    assert any(e["Repository"] == "team/app" and "app-v1.tar" in e["ResultDescription"] for e in exports), exports
    imports = b.audit(operation="Import")
    assert any(e["Repository"] == "team/app" and e["Tag"] == "v1" and e["ResultType"] == "Success"
               for e in imports), imports

    # The SAS token is in no GET response, log line or audit row, on either side.
    sig = [p for p in sas.split("&") if p.startswith("sig=")][0].split("=", 1)[1]
    for side in (src, dst):
        arm = side.arm()
        base = arm.registry_path(REG, RG)
        for path in ("/exportPipelines", "/importPipelines", "/pipelineRuns", "/pipelineRuns/export1",
                     "/pipelineRuns/import1", "/exportPipelines/exporter1", "/importPipelines/importer1"):
            r = arm.request("GET", base + path, api_version="2025-06-01-preview")
            assert sig not in r.text and sas not in r.text, (path, r.text[:500])
        log = side.server.log_path.read_text(errors="replace")
        assert sig not in log and "sig=" not in log, "the SAS token reached the server log"
        rows = json.dumps(side.server.audit(log="all"))
        assert sig not in rows, "the SAS token reached an audit row"
        shown = side.server.moat("secret", "show", "--id", kv_a if side is src else kv_b)
        assert sig not in shown.stdout + shown.stderr, "`moat secret show` prints the value without --reveal"


def test_local_directory_with_moat_acr_commands(moat_factory, tmp_path):
    from test_moat_acr import Cli
    media = tmp_path / "usb"
    media.mkdir()
    # LocalDirectory pipelines may use only the operator's `[outbound] directories`.
    a, b = moat_factory(transfer_dirs=[media]), moat_factory(transfer_dirs=[media])
    digests = push_multiarch_with_referrer(a, "app", "v2")
    for server, sp_name in ((a, "ops-a"), (b, "ops-b")):
        server.cli = Cli(server, tmp_path / f"cfg-{server.port}")
        server.cli.login(sp_create(server, sp_name))
    a.cli("acr", "export-pipeline", "create", "-r", REG, "-g", RG, "-n", "usbexport",
          "-c", media.as_uri(), "-z", "OverwriteBlobs")
    p = a.cli("acr", "pipeline-run", "create", "-r", REG, "-g", RG, "-n", "usbrun1", "-p", "usbexport",
              "-t", "export", "-b", "app-v2.tar", "-a", "app:v2", "-o", "json", timeout=180)
    out = json.loads(p.stdout)
    resp = out.get("response") or props(out).get("response")
    assert resp["status"] == "Succeeded", out
    archive = media / "app-v2.tar"
    assert archive.exists() and [x.name for x in media.iterdir()] == ["app-v2.tar"]  # no temporary file left
    # Any OCI tool opens it: skopeo reads the image by its tag.
    oci = tmp_path / "from-archive"
    skopeo("copy", "--all", f"oci-archive:{archive}:v2", f"oci:{oci}:v2")
    assert json.loads((oci / "index.json").read_text())["manifests"][0]["digest"] == digests["index"]
    with tarfile.open(archive) as tf:
        names = tf.getnames()
    assert names[:5] == ["oci-layout", "index.json", "moat-transfer.json", "moat-transfer.json.sig",
                         "blobs"] or names[:4] == ["oci-layout", "index.json", "moat-transfer.json",
                                                   "moat-transfer.json.sig"], names[:6]

    key = a.moat("transfer-key", "show").stdout.split()[0]
    assert key.startswith("ed25519:"), key
    b.cli("acr", "import-pipeline", "create", "-r", REG, "-g", RG, "-n", "usbimport", "-c", media.as_uri(),
          "-e", "false")
    p = b.cli("acr", "pipeline-run", "create", "-r", REG, "-g", RG, "-n", "usbrun2", "-p", "usbimport",
              "-t", "import", "-b", "app-v2.tar", "-o", "json", timeout=180)
    out = json.loads(p.stdout)
    resp = out.get("response") or props(out).get("response")
    assert resp["status"] == "Succeeded", out
    assert resp["importedArtifacts"] == ["app:v2"]
    assert_pulled_identical(b, tmp_path, "app", "v2", digests)


def test_source_trigger_imports_each_archive_once_and_refuses_a_tampered_one(moat_factory, azurite, tmp_path):
    a, b = moat_factory(), moat_factory(env=TRIGGER_ENV)
    src, dst = Side(a, "exporter"), Side(b, "importer")
    container = "trigger" + secrets.token_hex(3)
    sas = storage(azurite, [{"op": "create_container", "container": container}, {"op": "sas"}])[-1]
    uri = f"{azurite.endpoint}/{container}"
    kv_a, kv_b = src.secret("vaulta", "sas", sas), dst.secret("vaultb", "sas", sas)
    digests = push_multiarch_with_referrer(a, "svc", "v1")
    res = src.flow([{"op": "export_pipeline", "name": "exporter2", "uri": uri, "kv": kv_a},
                    {"op": "run", "name": "export2", "pipeline": "exporter2", "artifacts": ["svc:v1"],
                     "target": "svc-v1.tar"}])
    assert props(last_result(res, "run"))["response"]["status"] == "Succeeded", res
    # A tampered copy (one byte of a layer flipped), with what the trigger looks for (metadata, Content-MD5).
    good = tmp_path / "svc-v1.tar"
    storage(azurite, [{"op": "download", "container": container, "blob": "svc-v1.tar", "path": str(good)}])
    data = bytearray(good.read_bytes())
    data[-2048 - 700] ^= 0xFF  # inside the last blob's data (the tar ends with two zero blocks and padding)
    bad = tmp_path / "tampered.tar"
    bad.write_bytes(bytes(data))

    dst.flow([{"op": "import_pipeline", "name": "watcher1", "uri": uri, "kv": kv_b, "trigger": "Enabled",
               "options": ["DeleteSourceBlobOnSuccess"]}])
    deadline = time.monotonic() + 60
    while not [r for r in runs_of(dst) if props(r).get("response", {}).get("status") == "Succeeded"]:
        assert time.monotonic() < deadline, runs_of(dst)
        time.sleep(0.5)
    done = runs_of(dst)
    assert len(done) == 1, done
    assert props(done[0])["response"]["importedArtifacts"] == ["svc:v1"]
    assert_pulled_identical(b, tmp_path, "svc", "v1", digests)
    # DeleteSourceBlobOnSuccess: the archive is gone; a few more polls start no second run.
    assert storage(azurite, [{"op": "list", "container": container}])[0] == []
    time.sleep(3)
    assert len(runs_of(dst)) == 1

    # The tampered archive: the trigger takes it, the run fails saying why, nothing is imported or deleted.
    storage(azurite, [{"op": "upload", "container": container, "blob": "evil.tar", "path": str(bad),
                       "metadata": {"category": "acr-transfer-blob"}}])
    deadline = time.monotonic() + 60
    while True:
        failed = [r for r in runs_of(dst) if props(r).get("response", {}).get("status") == "Failed"]
        if failed:
            break
        assert time.monotonic() < deadline, runs_of(dst)
        time.sleep(0.5)
    msg = props(failed[0])["response"]["pipelineRunErrorMessage"]
    assert "evil.tar" in msg and ("tampered" in msg or "corrupt" in msg or "hashes" in msg), msg
    assert [x["name"] for x in storage(azurite, [{"op": "list", "container": container}])[0]] == ["evil.tar"]
    # Blobs without ACR's marks are not taken at all.
    storage(azurite, [{"op": "upload", "container": container, "blob": "nomark.tar", "path": str(good)}])
    time.sleep(3)
    assert len(runs_of(dst)) == 2, runs_of(dst)
    fails = [e for e in b.audit(operation="Import") if e["ResultType"] == "Failure"]
    assert fails, b.audit(operation="Import")


def test_kill9_during_export_and_import(moat_factory, azurite, tmp_path):
    a, b = moat_factory(), moat_factory()
    src, dst = Side(a, "exporter"), Side(b, "importer")
    container = "kill" + secrets.token_hex(3)
    sas = storage(azurite, [{"op": "create_container", "container": container}, {"op": "sas"}])[-1]
    uri = f"{azurite.endpoint}/{container}"
    kv_a, kv_b = src.secret("vaulta", "sas", sas), dst.secret("vaultb", "sas", sas)
    # 1 GiB in 32 layers of incompressible bytes.
    c = a.client()
    layers = []
    for i in range(32):
        blob = os.urandom(32 << 20)
        layers.append((c.push_blob("big", blob), len(blob)))
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                         "diff_ids": [d for d, _ in layers]}}).encode()
    c.push_blob("big", config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": sha256(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d,
                                       "size": n} for d, n in layers]}).encode()
    assert c.put_manifest("big", "v1", manifest).status_code == 201
    src.flow([{"op": "export_pipeline", "name": "exporter3", "uri": uri, "kv": kv_a}])
    r = src.arm().request("PUT", f"{src.arm().registry_path(REG, RG)}/pipelineRuns/bigexport",
                          json_body={"properties": {"request": {
                              "pipelineResourceId": f"{src.arm().registry_path(REG, RG)}/exportPipelines/exporter3",
                              "artifacts": ["big:v1"], "target": {"type": "AzureStorageBlob", "name": "big.tar"}}}},
                          api_version="2025-06-01-preview")
    assert r.status_code in (200, 201), r.text
    # Kill it once some progress is recorded (a checkpoint or more), well before the end.
    deadline = time.monotonic() + 60
    while True:
        run_ = src.arm().request("GET", f"{src.arm().registry_path(REG, RG)}/pipelineRuns/bigexport",
                                 api_version="2025-06-01-preview").json()
        pct = int(props(run_).get("response", {}).get("progress", {}).get("percentage", "0"))
        if pct >= 20:
            break
        assert props(run_)["response"]["status"] == "Running", run_
        assert time.monotonic() < deadline, run_
        time.sleep(0.05)
    a.kill9()
    names = [x["name"] for x in storage(azurite, [{"op": "list", "container": container}])[0]]
    assert "big.tar" not in names, "a half-written archive is visible under its name"
    a.start()
    final = props(wait_run(src, "bigexport", timeout=180))["response"]
    assert final["status"] in ("Succeeded", "Failed"), final
    if final["status"] == "Failed":
        assert final["pipelineRunErrorMessage"], final
        assert "big.tar" not in [x["name"] for x in storage(azurite, [{"op": "list", "container": container}])[0]]
        pytest.fail(f"the export did not resume: {final['pipelineRunErrorMessage']}")
    archive = tmp_path / "big.tar"
    storage(azurite, [{"op": "download", "container": container, "blob": "big.tar", "path": str(archive)}])
    h = hashlib.sha256()
    with open(archive, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    assert "sha256:" + h.hexdigest() == final["catalogDigest"], "the resumed archive is not the archive"

    # The import, killed midway: the target shows nothing of it until it finishes after the restart.
    dst.flow([{"op": "import_pipeline", "name": "importer3", "uri": uri, "kv": kv_b, "trigger": "Disabled"}])
    r = dst.arm().request("PUT", f"{dst.arm().registry_path(REG, RG)}/pipelineRuns/bigimport",
                          json_body={"properties": {"request": {
                              "pipelineResourceId": f"{dst.arm().registry_path(REG, RG)}/importPipelines/importer3",
                              "source": {"type": "AzureStorageBlob", "name": "big.tar"},
                              "catalogDigest": final["catalogDigest"]}}},
                          api_version="2025-06-01-preview")
    assert r.status_code in (200, 201), r.text
    deadline = time.monotonic() + 60
    while True:
        run_ = dst.arm().request("GET", f"{dst.arm().registry_path(REG, RG)}/pipelineRuns/bigimport",
                                 api_version="2025-06-01-preview").json()
        if int(props(run_).get("response", {}).get("progress", {}).get("percentage", "0")) >= 10:
            break
        assert props(run_)["response"]["status"] == "Running", run_
        assert time.monotonic() < deadline, run_
        time.sleep(0.05)
    b.kill9()
    b.start()
    final = props(wait_run(dst, "bigimport", timeout=180))["response"]
    assert final["status"] == "Succeeded", final
    got = b.client().get_manifest("big", "v1")
    assert got.status_code == 200 and sha256(got.content) == sha256(manifest)


def test_failed_runs_say_what_to_do(moat_factory, azurite):
    a = moat_factory()
    side = Side(a, "exporter")
    container = "fail" + secrets.token_hex(3)
    sas = storage(azurite, [{"op": "create_container", "container": container}, {"op": "sas"}])[-1]
    kv = side.secret("vaultf", "sas", sas)
    push_multiarch_with_referrer(a, "real", "v1")
    dead = f"http://127.0.0.1:{free_port()}/{azurite.account}/{container}"
    res = side.flow([
        {"op": "export_pipeline", "name": "nosecret1", "uri": f"{azurite.endpoint}/{container}",
         "kv": "https://vaultf.vault.azure.net/secrets/missing"},
        {"op": "export_pipeline", "name": "deadstore1", "uri": dead, "kv": kv},
        {"op": "export_pipeline", "name": "good1", "uri": f"{azurite.endpoint}/{container}", "kv": kv},
        {"op": "run", "name": "runnosecret", "pipeline": "nosecret1", "artifacts": ["real:v1"], "target": "a.tar"},
        {"op": "run", "name": "rundead", "pipeline": "deadstore1", "artifacts": ["real:v1"], "target": "b.tar"},
        {"op": "run", "name": "runmissing", "pipeline": "good1", "artifacts": ["ghost:v9"], "target": "c.tar"},
    ])
    runs = {r["result"]["name"]: props(r["result"])["response"] for r in res if r["op"] == "run" and "result" in r}
    for name, needle in (("runnosecret", "missing"), ("rundead", "127.0.0.1"), ("runmissing", "ghost")):
        assert runs[name]["status"] == "Failed", runs[name]
        assert needle in runs[name]["pipelineRunErrorMessage"], runs[name]
    # A storage error quotes the URL it failed on: never its SAS.
    sig = [p for p in sas.split("&") if p.startswith("sig=")][0].split("=", 1)[1]
    for resp in runs.values():
        assert sig not in json.dumps(resp) and "sig=" not in json.dumps(resp), resp
    assert sig not in a.log_path.read_text(errors="replace")
    assert sig not in json.dumps(a.audit(log="all"))
    assert storage(azurite, [{"op": "list", "container": container}])[0] == []  # nothing half-written
    failures = [e for e in a.audit(operation="Export") if e["ResultType"] == "Failure"]
    assert len(failures) >= 3, failures
