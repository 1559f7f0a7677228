"""ACR Transfer's resources on the management API: export and import pipelines and pipeline runs, with the real
azure-mgmt-containerregistry 15.1.0b3 (in .venv-transfer, through transfer_pipelines_flow.py), raw ARM for the
edges, and the `moat acr` commands. The gate: an export pipeline is refused on a registry whose exports are
disabled (audited, nothing written), exports cannot be disabled while one exists, and of a concurrent create and
disable exactly one wins. What a run does with storage is tested in test_transfer_e2e.py.
"""
from __future__ import annotations

import json
import secrets
import subprocess

import pytest

from conftest import (REPO_ROOT, Arm, assert_arm_error, azure_env, create_private_endpoint,
                      export_invariant_violation, protect_registry, run_concurrently, sp_create, venv_python)
from test_moat_acr import Cli, assert_error

API = "2025-06-01-preview"
KV = "https://xfervault.vault.azure.net/secrets/export-sas"
CONTAINER = "https://xferacct.blob.core.windows.net/exports"
REFUSED = "Export pipelines cannot be created on registry '{name}' because its exports are disabled."
BLOCKED = ("Export policy cannot be disabled on registry '{name}' while it has 1 export pipeline(s). Delete the "
           "export pipelines first.")


def premium(arm: Arm, name: str, rg: str = "rg1", sku: str = "Premium") -> dict:
    r = arm.put_registry(name, {"location": "local", "sku": {"name": sku}}, rg)
    assert r.status_code in (200, 201), f"PUT registry {name}: {r.status_code} {r.text[:500]}"
    return r.json()


def pipeline_path(arm: Arm, registry: str, kind: str, name: str = "", rg: str = "rg1") -> str:
    base = f"{arm.registry_path(registry, rg)}/{kind}"
    return f"{base}/{name}" if name else base


def export_body(uri: str = CONTAINER, **target) -> dict:
    return {"identity": {"type": "SystemAssigned"},
            "properties": {"target": {"type": "AzureStorageBlobContainer", "uri": uri, "keyVaultUri": KV,
                                      "storageAccessMode": "SasToken", **target}}}


def test_pipelines_with_the_sdk(moat):
    """Create, read, list, replace and delete both pipelines with SDK 15.1.0b3, every field round-tripping as the
    API spells it; its refusals (options, names, the protected registry) and an accepted run."""
    py = venv_python(".venv-transfer")
    owner = sp_create(moat, "xfer-owner", "Owner")
    arm = Arm(moat, owner, api_version=API)
    premium(arm, "xferreg")
    premium(arm, "xferprot")
    arm.api_version = "2025-11-01"
    protect_registry(arm, "xferprot")
    cfg = {"base": moat.base_url, "tenant": owner["tenant"], "app_id": owner["appId"],
           "password": owner["password"], "subscription": arm.subscription, "rg": "rg1", "name": "xferreg",
           "protected": "xferprot"}
    p = subprocess.run([py, str(REPO_ROOT / "tests" / "e2e" / "transfer_pipelines_flow.py"), json.dumps(cfg)],
                       capture_output=True, text=True, timeout=300, env=azure_env(moat))
    detail = f"exit {p.returncode}\n--- stdout\n{p.stdout[-8000:]}\n--- stderr\n{p.stderr[-6000:]}"
    assert p.returncode == 0, detail
    steps = {s["step"]: s for s in (json.loads(line) for line in p.stdout.splitlines() if line.startswith("{"))}
    assert steps["versions"]["sdk"] == "15.1.0b3", detail
    assert steps.get("done", {}).get("ok") is True, detail
    assert steps["protected_export_refused"]["message"] == REFUSED.format(name="xferprot"), detail

    # The refusal is audited on the registry as a denied Export, and recorded in its activity log; nothing written.
    denied = [e for e in moat.audit(registry="xferprot", operation="Export")]
    assert [e["ResultType"] for e in denied] == ["Denied"], denied
    assert "export pipeline 'export01' refused" in denied[0]["ResultDescription"], denied
    assert denied[0]["Identity"] == owner["appId"], denied
    r = arm.request("GET", pipeline_path(arm, "xferprot", "exportPipelines"), api_version=API)
    assert r.status_code == 200 and r.json()["value"] == [], r.text
    # The import pipeline on the protected registry exists.
    r = arm.request("GET", pipeline_path(arm, "xferprot", "importPipelines", "import01"), api_version=API)
    assert r.status_code == 200, r.text
    activity = moat.audit(log="activity")
    writes = [a for a in activity if "exportPipelines" in json.dumps(a) and "xferprot" in json.dumps(a)]
    assert writes and all("Failed" in json.dumps(a) for a in writes), writes


def test_gate_blocks_disabling_exports_and_races(moat):
    """Disabling exports with an export pipeline present is refused (the facts counted in the transaction); a
    pipeline create racing an exports disable: exactly one of them wins, and the invariant holds."""
    owner = sp_create(moat, "gate-owner", "Owner")
    arm = Arm(moat, owner)
    premium(arm, "gatereg")
    create_private_endpoint(arm, "gatereg")
    r = arm.patch_registry("gatereg", {"properties": {"publicNetworkAccess": "Disabled"}})
    assert r.status_code == 200, r.text
    path = pipeline_path(arm, "gatereg", "exportPipelines", "export01")
    r = arm.request("PUT", path, export_body(), api_version=API)
    assert r.status_code == 201, r.text
    assert r.headers.get("Azure-AsyncOperation") and r.headers.get("Retry-After"), r.headers
    disable = {"properties": {"policies": {"exportPolicy": {"status": "disabled"}}}}
    assert_arm_error(arm.patch_registry("gatereg", disable), 400, "BadRequest", BLOCKED.format(name="gatereg"))
    r = arm.request("DELETE", path, api_version=API)
    assert r.status_code == 200, r.text
    assert arm.request("DELETE", path, api_version=API).status_code == 204

    for attempt in range(6):
        enable = {"properties": {"policies": {"exportPolicy": {"status": "enabled"}}}}
        assert arm.patch_registry("gatereg", enable).status_code == 200
        name = f"race{attempt:02d}x"
        p = pipeline_path(arm, "gatereg", "exportPipelines", name)
        a, b = arm.clone(), arm.clone()
        results = {}
        run_concurrently([lambda: results.update(put=a.request("PUT", p, export_body(), api_version=API)),
                          lambda: results.update(patch=b.patch_registry("gatereg", disable))])
        put, patch = results["put"], results["patch"]
        won = [r.status_code in (200, 201) for r in (put, patch)]
        assert won.count(True) == 1, (put.status_code, put.text[:300], patch.status_code, patch.text[:300])
        reg = arm.get_registry("gatereg").json()
        exists = arm.request("GET", p, api_version=API).status_code == 200
        exports = reg["properties"]["policies"]["exportPolicy"]["status"]
        assert not (exists and exports == "disabled"), (exists, exports)
        assert export_invariant_violation(reg, arm=arm) is None
        if exists:
            assert arm.request("DELETE", p, api_version=API).status_code == 200


@pytest.fixture
def moat_dirs(moat_factory, tmp_path_factory):
    """A Moat whose operator lists /media/usb and a temp directory as transfer directories."""
    base = tmp_path_factory.mktemp("transferdirs")
    s = moat_factory(transfer_dirs=["/media/usb", str(base)], start=False)
    s.transfer_base = base
    return s.start()


def test_arm_edges(moat_dirs):
    """Methods, api-versions, the Premium rule, names, bad bodies and run requests: ARM errors, never a 500."""
    moat = moat_dirs
    owner = sp_create(moat, "edge-owner", "Owner")
    arm = Arm(moat, owner, api_version=API)
    premium(arm, "edgereg")
    premium(arm, "edgebasic", sku="Basic")
    path = pipeline_path(arm, "edgereg", "exportPipelines", "export01")
    assert arm.request("PUT", path, export_body()).status_code == 201
    # Replacing answers 200; the older preview the extension's pipeline-run code uses is served too.
    assert arm.request("PUT", path, export_body(), api_version="2019-12-01-preview").status_code == 200
    # Case-insensitive names and path segments.
    upper = path.replace("exportPipelines/export01", "EXPORTPIPELINES/EXPORT01")
    r = arm.request("GET", upper)
    assert r.status_code == 200 and r.json()["name"] == "export01", r.text
    assert_arm_error(arm.request("PATCH", path, {"properties": {}}), 405, "MethodNotAllowed")
    assert_arm_error(arm.request("GET", path, api_version="2025-11-01"), 400, "NoRegisteredProviderFound")
    assert_arm_error(arm.request("PUT", pipeline_path(arm, "edgebasic", "importPipelines", "import01"),
                                 {"properties": {"source": {"uri": CONTAINER, "keyVaultUri": KV}}}),
                     400, "FeatureNotSupportedForSku")
    assert_arm_error(arm.request("GET", pipeline_path(arm, "edgereg", "importPipelines", "missing01")), 404,
                     "ResourceNotFound")
    # Bad bodies, each naming its property.
    for body, target in [
        ({"properties": {"target": {"uri": CONTAINER}}}, "properties.target.keyVaultUri"),
        (export_body(uri=CONTAINER + "?sv=2024&sig=TOPSECRETSIG"), "properties.target.uri"),
        (export_body(uri="ftp://x/y"), "properties.target.uri"),
        (export_body(storageAccessMode="Sometimes"), "properties.target.storageAccessMode"),
        ({**export_body(), "identity": {"type": "Both"}}, "identity.type"),
        ({"properties": {"target": {"uri": CONTAINER, "keyVaultUri": KV}, "trigger": {}}}, "properties.trigger"),
        ({"properties": {"target": {"uri": "file:///media/usb", "keyVaultUri": KV}}}, "properties.target.keyVaultUri"),
    ]:
        r = arm.request("PUT", pipeline_path(arm, "edgereg", "exportPipelines", "export02"), body)
        err = assert_arm_error(r, 400, r.json().get("error", {}).get("code", "?"), target=True)
        assert err["target"] == target, (body, err)
        assert "TOPSECRETSIG" not in r.text, r.text
    assert arm.request("GET", pipeline_path(arm, "edgereg", "exportPipelines", "export02")).status_code == 404
    # The refused SAS appears in no stored row: not in the activity log, not in any pipeline.
    activity = moat.moat("audit", "--output", "json", "--log", "all").stdout
    assert "TOPSECRETSIG" not in activity
    # A LocalDirectory needs no secret.
    local = pipeline_path(arm, "edgereg", "importPipelines", "usbinbox")
    r = arm.request("PUT", local, {"properties": {"source": {"type": "LocalDirectory", "uri": "file:///media/usb"},
                                                  "trigger": {"sourceTrigger": {"status": "Disabled"}}}})
    assert r.status_code == 201, r.text
    assert r.json()["properties"]["source"] == {"type": "LocalDirectory", "uri": "file:///media/usb",
                                                "keyVaultUri": None, "storageAccessMode": "SasToken"}, r.text
    assert r.json()["properties"]["trigger"]["sourceTrigger"]["status"] == "Disabled"

    # Runs: the request is checked against the pipeline it names.
    pid = arm.request("GET", path).json()["id"]
    iid = arm.request("GET", local).json()["id"]
    runs = pipeline_path(arm, "edgereg", "pipelineRuns")
    target = {"type": "AzureStorageBlob", "name": "out.tar"}
    for request, code in [
        ({"pipelineResourceId": pid, "target": target}, "InvalidParameter"),  # no artifacts
        ({"pipelineResourceId": pid, "target": target, "artifacts": [f"r{i}" for i in range(51)]}, "InvalidParameter"),
        ({"pipelineResourceId": pid, "artifacts": ["app"]}, "InvalidParameter"),  # no target
        ({"pipelineResourceId": iid, "artifacts": ["app"], "target": target}, "InvalidParameter"),  # wrong kind
        ({"pipelineResourceId": pid.replace("export01", "nothere01"), "artifacts": ["a"], "target": target},
         "InvalidParameter"),
        ({"pipelineResourceId": pid.replace("edgereg", "edgebasic"), "artifacts": ["a"], "target": target},
         "InvalidParameter"),
        ({"pipelineResourceId": iid}, "InvalidParameter"),  # import without source
    ]:
        assert_arm_error(arm.request("PUT", f"{runs}/badrun01", {"properties": {"request": request}}), 400, code,
                         target=True)
    assert_arm_error(arm.request("PUT", f"{runs}/bad-run", {"properties": {"request": {
        "pipelineResourceId": iid, "source": {"name": "in.tar"}}}}), 400, "InvalidParameter")
    assert arm.request("GET", f"{runs}/badrun01").status_code == 404

    # An accepted run: 201 + Azure-AsyncOperation (answered InProgress/Succeeded/Failed); the same request and
    # forceUpdateTag again changes nothing (200).
    body = {"properties": {"request": {"pipelineResourceId": iid, "source": {"name": "in.tar"}},
                           "forceUpdateTag": "t1"}}
    r = arm.request("PUT", f"{runs}/importrun1", body)
    assert r.status_code == 201, r.text
    assert r.json()["properties"]["provisioningState"] == "Creating", r.text
    assert r.json()["properties"]["response"]["status"] == "Running", r.text
    assert r.json()["properties"]["request"]["source"] == {"type": "AzureStorageBlob", "name": "in.tar"}, r.text
    status = arm.session.get(r.headers["Azure-AsyncOperation"], headers={"Authorization": "Bearer " + arm.token})
    assert status.status_code == 200 and status.json()["status"] in ("InProgress", "Succeeded", "Failed"), status.text
    again = arm.request("PUT", f"{runs}/importrun1", body)
    assert again.status_code == 200, again.text
    assert again.json()["systemData"]["createdAt"] == r.json()["systemData"]["createdAt"]
    listed = arm.request("GET", runs).json()["value"]
    assert [x["name"] for x in listed] == ["importrun1"], listed
    assert arm.request("DELETE", f"{runs}/importrun1").status_code == 200
    assert arm.request("GET", f"{runs}/importrun1").status_code == 404
    assert arm.request("DELETE", f"{runs}/importrun1").status_code == 204

    # A reader may read but not write.
    reader = sp_create(moat, "edge-reader", "Reader")
    rd = Arm(moat, reader, api_version=API)
    assert rd.request("GET", path).status_code == 200
    assert_arm_error(rd.request("PUT", path, export_body()), 403, "AuthorizationFailed")
    assert_arm_error(rd.request("DELETE", path), 403, "AuthorizationFailed")

    # A registry's deletion takes its pipelines and runs along: a new registry of the same name has none.
    arm.api_version = "2025-11-01"
    assert arm.request("DELETE", arm.registry_path("edgereg")).status_code == 200
    premium(arm, "edgereg")
    arm.api_version = API
    assert arm.request("GET", pipeline_path(arm, "edgereg", "exportPipelines")).json()["value"] == []
    assert arm.request("GET", pipeline_path(arm, "edgereg", "importPipelines")).json()["value"] == []


def test_moat_acr_commands(moat_dirs, tmp_path):
    """`moat acr export-pipeline|import-pipeline|pipeline-run` with the acrtransfer extension's flags."""
    moat = moat_dirs
    cli_dir = tmp_path
    tmp_path = moat.transfer_base
    owner = sp_create(moat, "cli-xfer", "Owner")
    arm = Arm(moat, owner)
    premium(arm, "clireg")
    cli = Cli(moat, cli_dir / "cfg")
    cli.login(owner)
    p = cli.json("acr", "export-pipeline", "create", "-r", "clireg", "-n", "export01",
                 "-c", "https://XferAcct.blob.core.windows.net/Exports", "-s", KV, "-m", "SasToken",
                 "-z", "OverwriteBlobs", "ContinueOnErrors")
    assert p["properties"]["target"]["uri"] == "https://xferacct.blob.core.windows.net/exports", p
    assert p["properties"]["target"]["keyVaultUri"] == KV, p
    assert p["properties"]["options"] == ["OverwriteBlobs", "ContinueOnErrors"], p
    assert p["identity"]["type"] == "systemAssigned", p
    local = cli.json("acr", "export-pipeline", "create", "-r", "clireg", "-n", "usbexport",
                     "-c", f"file://{tmp_path}/usb")
    assert local["properties"]["target"]["type"] == "LocalDirectory", local
    assert local["properties"]["target"]["uri"] == f"file://{tmp_path}/usb", local
    key = "ed25519:" + "B" * 43 + "="
    imp = cli.json("acr", "import-pipeline", "create", "-r", "clireg", "-n", "import01", "-c", f"file://{tmp_path}/in",
                   "-e", "false", "-z", "OverwriteTags", "--trusted-key", key)
    assert imp["properties"]["trigger"]["sourceTrigger"]["status"] == "Disabled", imp
    assert imp["properties"]["trustedExporterKeys"] == [key], imp
    assert [x["name"] for x in cli.json("acr", "export-pipeline", "list", "-r", "clireg")] == ["export01", "usbexport"]
    shown = cli.json("acr", "import-pipeline", "show", "-r", "clireg", "-n", "import01")
    assert shown["name"] == "import01", shown
    table = cli("acr", "export-pipeline", "list", "-r", "clireg", "-o", "table").stdout
    assert "export01" in table and "LocalDirectory" in table, table

    # Usage errors before anything is sent, and the server's refusals as az prints them.
    assert_error(cli("acr", "export-pipeline", "create", "-r", "clireg", "-n", "export02", "-c", CONTAINER, rc=None),
                 2, "--secret-uri is required")
    assert_error(cli("acr", "import-pipeline", "create", "-r", "clireg", "-n", "import02", "-c", f"file://{tmp_path}",
                     "-z", "OverwriteBlobs", rc=None), 1, "InvalidParameter", "OverwriteBlobs")
    assert_error(cli("acr", "pipeline-run", "create", "-r", "clireg", "-n", "run01", "-p", "nothere1", "-t", "export",
                     "-b", "x.tar", "-a", "app", rc=None), 3, "Export pipeline nothere1 not found")
    assert_error(cli("acr", "pipeline-run", "create", "-r", "clireg", "-n", "run01", "-p", "export01", "-t", "export",
                     "-b", "x.tar", rc=None), 2, "--artifacts")

    # A run, without waiting: show, list, clean (dry run), delete.
    cli("acr", "pipeline-run", "create", "-r", "clireg", "-n", "run01", "-p", "usbexport", "-t", "export",
        "-b", "out.tar", "-a", "app", "other:v1", "--no-wait")
    run = cli.json("acr", "pipeline-run", "show", "-r", "clireg", "-n", "run01")
    assert run["properties"]["request"]["artifacts"] == ["app:latest", "other:v1"], run
    assert run["properties"]["request"]["target"]["name"] == "out.tar", run
    assert [x["name"] for x in cli.json("acr", "pipeline-run", "list", "-r", "clireg", "--top", "5")] == ["run01"]
    cli.json("acr", "pipeline-run", "clean", "-r", "clireg", "--dry-run")
    cli("acr", "pipeline-run", "delete", "-r", "clireg", "-n", "run01")
    assert_error(cli("acr", "pipeline-run", "show", "-r", "clireg", "-n", "run01", rc=None), 3, "ResourceNotFound")

    for kind, name in [("export-pipeline", "export01"), ("export-pipeline", "usbexport"), ("import-pipeline", "import01")]:
        cli("acr", kind, "delete", "-r", "clireg", "-n", name)
    assert cli.json("acr", "export-pipeline", "list", "-r", "clireg") == []
    assert_error(cli("acr", "import-pipeline", "delete", "-r", "clireg", "-n", "import01", rc=None), 3)


def test_sas_secret_stays_in_the_secret_store(moat, tmp_path):
    """A pipeline names its SAS secret by URI (`moat secret set`); the token itself appears in no management
    answer, activity or audit row, nor in the server's log."""
    owner = sp_create(moat, "sas-owner", "Owner")
    arm = Arm(moat, owner, api_version=API)
    premium(arm, "sasreg")
    token_sig = secrets.token_urlsafe(24)
    sas = f"sv=2024-11-04&ss=b&srt=sco&sp=rwlac&se=2030-01-01&spr=https&sig={token_sig}"
    value = tmp_path / "sas.txt"
    value.write_text(sas)
    moat.moat("secret", "set", "--id", KV, "--file", str(value), "--listen", moat.login_server)
    answers = []
    for kind, prop in [("exportPipelines", "target"), ("importPipelines", "source")]:
        path = pipeline_path(arm, "sasreg", kind, "sasuser01")
        r = arm.request("PUT", path, {"identity": {"type": "SystemAssigned"},
                                      "properties": {prop: {"uri": CONTAINER, "keyVaultUri": KV}}})
        assert r.status_code == 201, r.text
        assert r.json()["properties"][prop]["keyVaultUri"] == KV, r.text
        answers += [r.text, arm.request("GET", path).text, arm.request("GET", pipeline_path(arm, "sasreg", kind)).text]
    answers.append(arm.request("GET", arm.registry_path("sasreg"), api_version="2025-11-01").text)
    answers.append(moat.moat("audit", "--output", "json", "--log", "all").stdout)
    answers.append(moat.log_path.read_text(errors="replace"))
    for text in answers:
        assert token_sig not in text, text[:2000]
    # The value is there to be found (the search could fail): the secret store has it, sealed.
    shown = moat.moat("secret", "show", "--id", KV, "--reveal", "--listen", moat.login_server).stdout
    assert token_sig in shown, shown

def test_local_directories_are_the_operators(moat_dirs, tmp_path):
    """A LocalDirectory pipeline may name only a directory the operator listed (`[outbound] directories`), in
    every spelling: outside the list, a sibling sharing its prefix, '..', a symbolic link out of a listed one."""
    moat = moat_dirs
    owner = sp_create(moat, "dir-owner", "Owner")
    arm = Arm(moat, owner, api_version=API)
    premium(arm, "dirreg")
    base = moat.transfer_base
    (base / "ok").mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (base / "escape").symlink_to(outside)
    def put(kind, name, uri):
        side = "target" if kind == "exportPipelines" else "source"
        body = {"properties": {side: {"type": "LocalDirectory", "uri": uri}}}
        if kind == "importPipelines":
            body["properties"]["trigger"] = {"sourceTrigger": {"status": "Disabled"}}
        return arm.request("PUT", pipeline_path(arm, "dirreg", kind, name), body)
    for kind in ("exportPipelines", "importPipelines"):
        assert put(kind, "okdir1", f"file://{base}/ok").status_code == 201
        assert put(kind, "okdir2", f"file://{base}/not-yet-mounted").status_code == 201
        for i, uri in enumerate([f"file://{outside}", "file:///etc", f"file://{base}2", f"file://{base}/escape",
                                 f"file://{base}/escape/sub", "file:///media/usb/../../etc", "file:///"]):
            r = put(kind, f"baddir{i}", uri)
            err = assert_arm_error(r, 400, r.json().get("error", {}).get("code", "?"), target=True)
            assert err["target"].endswith(".uri"), (uri, err)
            assert "directories" in err["message"] or "'..'" in err["message"], (uri, err)
            assert arm.request("GET", pipeline_path(arm, "dirreg", kind, f"baddir{i}")).status_code == 404
    # Nothing was written outside the listed directories.
    assert list(outside.iterdir()) == []
