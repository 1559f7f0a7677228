"""Issue 12 item 1: diagnostic settings on a registry, with the real `az monitor diagnostic-settings` commands and
azure-mgmt-monitor, and the storage archive they produce in a real Azurite.

- `az monitor diagnostic-settings create --resource <registry id> --storage-account <id> --logs … --metrics …`
  against a storage account registered with `moat storage-account add`, then list, show, categories list and
  delete; pushes, pulls, logins and a denial appear in Azurite under `insights-logs-<category>` at
  `resourceId=/SUBSCRIPTIONS/…/y=YYYY/m=MM/d=DD/h=HH/m=00/PT1H.json`, one JSON record a line in the resource-log
  common schema, each with its `recordId`, within 90 seconds (the server's sink interval is short here); each
  finished minute's metrics in `insights-metrics-pt1m`, one line per metric.
- azure-mgmt-monitor 6.0.2 (the last release with diagnostic settings; scripts/test puts it in
  .tools/py-monitor6) creates, gets, lists and deletes a setting, and sees a refusal.
- Refusals (ARM error, nothing stored): Log Analytics, Event Hubs, Service Bus, an unknown category, no
  destination, a storage account nobody registered, a registered one that does not answer, a partner sink nobody
  registered, storage retention; the activity log records each change.
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import REPO_ROOT, Arm, azure_env, build_image, make_session, sp_create, venv_python
from test_arm_az import Az

MONITOR_API = "2021-05-01-preview"
REPO_CAT = "ContainerRegistryRepositoryEvents"
LOGIN_CAT = "ContainerRegistryLoginEvents"


def storage_id(sub: str, account: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/storage-rg/providers/Microsoft.Storage/storageAccounts/{account}"


def register_account(server, azurite, tmp_path) -> None:
    keyfile = tmp_path / "sa-key"
    keyfile.write_text(azurite.key + "\n")
    server.moat("storage-account", "add", "--name", azurite.account, "--blob-endpoint", azurite.endpoint + "/",
                "--key-file", str(keyfile))


def default_registry_id(arm: Arm) -> str:
    r = arm.request("GET", f"/subscriptions/{arm.subscription}/providers/Microsoft.ContainerRegistry/registries",
                    api_version="2023-07-01")
    assert r.status_code == 200, r.text
    [reg] = [x for x in r.json()["value"] if x["name"] == "default"]
    return reg["id"]


def archived(azurite, container: str) -> dict[str, list[dict]]:
    """Every blob of `container` (none if it does not exist) -> its JSON lines."""
    r = azurite.request("GET", f"/{container}", {"restype": "container", "comp": "list"})
    if r.status_code == 404:
        return {}
    assert r.status_code == 200, r.text
    out = {}
    for b in azurite.list_blobs(container):
        data = azurite.get_blob(container, b["name"]).decode()
        assert data.endswith("\n"), f"{b['name']} does not end with a newline"
        out[b["name"]] = [json.loads(line) for line in data.splitlines()]
    return out


def wait_archived(azurite, container: str, predicate, timeout: float = 90) -> dict[str, list[dict]]:
    deadline = time.monotonic() + timeout
    while True:
        got = archived(azurite, container)
        if predicate([rec for recs in got.values() for rec in recs]):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{container}: condition not met in {timeout}s; have "
                                 f"{json.dumps(got, indent=1)[:4000]}")
        time.sleep(0.5)


def expected_blob(resource_id: str, time_: str) -> str:
    y, mo, d, h = time_[0:4], time_[5:7], time_[8:10], time_[11:13]
    return f"resourceId={resource_id.upper()}/y={y}/m={mo}/d={d}/h={h}/m=00/PT1H.json"


@pytest.fixture
def server(moat_factory):
    return moat_factory(extra_args=["--sink-interval-ms", "250", "--metrics-interval-ms", "250"])


def test_az_diagnostic_settings_ship_pulls_pushes_logins_and_denials_to_azurite(server, azurite, tmp_path):
    register_account(server, azurite, tmp_path)
    sp = sp_create(server, "diag-owner", "Owner")
    az = Az(server, tmp_path / "azcfg")
    az.register_and_login(sp)
    arm = Arm(server, sp)
    sub = arm.subscription
    reg_id = default_registry_id(arm)
    sa = storage_id(sub, azurite.account)

    created = az("monitor", "diagnostic-settings", "create", "--name", "archive", "--resource", reg_id,
                 "--storage-account", sa,
                 "--logs", json.dumps([{"category": REPO_CAT, "enabled": True},
                                       {"category": LOGIN_CAT, "enabled": True}]),
                 "--metrics", json.dumps([{"category": "AllMetrics", "enabled": True}]), json_out=True).json
    assert created["name"] == "archive" and created["storageAccountId"] == sa, created
    assert {x["category"] for x in created["logs"]} == {REPO_CAT, LOGIN_CAT}

    listed = az("monitor", "diagnostic-settings", "list", "--resource", reg_id, json_out=True).json
    listed = listed["value"] if isinstance(listed, dict) else listed
    assert [s["name"] for s in listed] == ["archive"], listed
    shown = az("monitor", "diagnostic-settings", "show", "--name", "archive", "--resource", reg_id,
               json_out=True).json
    assert shown["id"].lower() == f"{reg_id}/providers/microsoft.insights/diagnosticSettings/archive".lower()
    cats = az("monitor", "diagnostic-settings", "categories", "list", "--resource", reg_id, json_out=True).json
    cats = cats["value"] if isinstance(cats, dict) else cats
    by_name = {c["name"]: c for c in cats}
    assert by_name[REPO_CAT]["categoryType"] == "Logs" and by_name[LOGIN_CAT]["categoryType"] == "Logs", cats
    assert by_name["AllMetrics"]["categoryType"] == "Metrics"

    # A push, a pull, logins (each token) and a denial (a wrong password at the token endpoint).
    c = server.client()
    image = build_image(n_layers=1, seed="diag")
    r = c.push_image("diag/app", image, tag="v1")
    assert r.status_code == 201, r.text
    r = c.get_manifest("diag/app", "v1")
    assert r.status_code == 200, r.text
    s = make_session(server.base_url, verify=server.verify)
    r = s.get(server.base_url + "/oauth2/token", auth=("admin", "wrong-password"), timeout=30,
              params=[("service", server.login_server), ("scope", "repository:diag/app:pull")])
    assert r.status_code == 401, r.text

    repo_container = f"insights-logs-{REPO_CAT.lower()}"
    got = wait_archived(azurite, repo_container, lambda recs: {"Push", "Pull"} <= {x["operationName"] for x in recs})
    records = [x for recs in got.values() for x in recs]
    for name, recs in got.items():
        for rec in recs:
            assert name == expected_blob(reg_id, rec["time"]), (name, rec)
    pull = next(x for x in records if x["operationName"] == "Pull")
    assert pull["resourceId"] == reg_id.upper()
    assert pull["category"] == REPO_CAT and pull["resultType"] == "Success" and pull["resultDescription"] == "200"
    assert pull["identity"] == "admin" and pull["callerIpAddress"] == "127.0.0.1", pull
    assert pull["properties"]["repository"] == "diag/app" and pull["properties"]["tag"] == "v1", pull
    assert pull["properties"]["digest"].startswith("sha256:") and pull["properties"]["loginServer"], pull
    assert pull["recordId"].startswith(f"{sub}/audit/") and "durationMs" in pull and pull["location"], pull
    push = next(x for x in records if x["operationName"] == "Push")
    assert push["properties"]["repository"] == "diag/app" and push["properties"]["size"] > 0, push

    login_container = f"insights-logs-{LOGIN_CAT.lower()}"
    got = wait_archived(azurite, login_container,
                        lambda recs: any(x["resultType"] != "Success" for x in recs)
                        and any(x["resultType"] == "Success" for x in recs))
    logins = [x for recs in got.values() for x in recs]
    assert all(x["category"] == LOGIN_CAT for x in logins), logins
    denied = [x for x in logins if x["resultType"] != "Success"]
    assert denied[0]["level"] in ("Warning", "Error") and denied[0]["resultDescription"].startswith("40"), denied
    # Each record once, by recordId; the data-plane log itself agrees on what happened.
    ids = [x["recordId"] for x in records + logins]
    assert len(ids) == len(set(ids))

    # AllMetrics: each finished minute's metrics, one line per metric, in insights-metrics-pt1m.
    got = wait_archived(azurite, "insights-metrics-pt1m",
                        lambda recs: sum(x["total"] for x in recs if x["metricName"] == "TotalPullCount") >= 1
                        and any(x["metricName"] == "SuccessfulPushCount" for x in recs), timeout=150)
    for name, recs in got.items():
        for m in recs:
            assert name == expected_blob(reg_id, m["time"]) and m["timeGrain"] == "PT1M", (name, m)
            assert m["resourceId"] == reg_id.upper() and m["time"].endswith(":00Z"), m
            assert m["average"] == pytest.approx(m["total"] / m["count"]) if m["count"] else True, m
    metric_ids = [m["recordId"] for recs in got.values() for m in recs]
    assert len(metric_ids) == len(set(metric_ids))

    # The change is in the activity log; deleted, the setting is gone and its archive stops.
    ops = [e["operationName"] for e in server.audit(log="activity")]
    assert "Microsoft.Insights/diagnosticSettings/write" in ops, ops
    az("monitor", "diagnostic-settings", "delete", "--name", "archive", "--resource", reg_id)
    listed = az("monitor", "diagnostic-settings", "list", "--resource", reg_id, json_out=True).json
    assert (listed["value"] if isinstance(listed, dict) else listed) == []
    assert "Microsoft.Insights/diagnosticSettings/delete" in [e["operationName"] for e in server.audit(log="activity")]
    before = sum(len(v) for v in archived(azurite, repo_container).values())
    r = c.get_manifest("diag/app", "v1")
    assert r.status_code == 200
    time.sleep(3)
    assert sum(len(v) for v in archived(azurite, repo_container).values()) == before


SDK_FLOW = r"""
import json, sys
from azure.identity import ClientSecretCredential
from azure.mgmt.monitor import MonitorManagementClient
from azure.core.exceptions import HttpResponseError
cfg = json.loads(sys.argv[1])
cred = ClientSecretCredential(cfg["tenant"], cfg["app_id"], cfg["password"], authority=cfg["base"],
                              disable_instance_discovery=True)
c = MonitorManagementClient(cred, cfg["subscription"], base_url=cfg["base"])
out = {}
s = c.diagnostic_settings.create_or_update(cfg["resource"], "sdk-archive", {
    "storage_account_id": cfg["sa"],
    "logs": [{"category_group": "allLogs", "enabled": True}],
})
out["created"] = s.as_dict()
out["got"] = c.diagnostic_settings.get(cfg["resource"], "sdk-archive").as_dict()
out["listed"] = [x.name for x in c.diagnostic_settings.list(cfg["resource"])]
out["categories"] = [x.name for x in c.diagnostic_settings_category.list(cfg["resource"])]
try:
    c.diagnostic_settings.create_or_update(cfg["resource"], "bad", {
        "workspace_id": "/subscriptions/x/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w",
        "logs": [{"category": "ContainerRegistryLoginEvents", "enabled": True}]})
    out["refused"] = None
except HttpResponseError as e:
    out["refused"] = {"status": e.status_code, "message": str(e.message)}
c.diagnostic_settings.delete(cfg["resource"], "sdk-archive")
out["after_delete"] = [x.name for x in c.diagnostic_settings.list(cfg["resource"])]
print(json.dumps(out))
"""


def test_azure_mgmt_monitor_creates_gets_lists_and_deletes(server, azurite, tmp_path):
    register_account(server, azurite, tmp_path)
    sp = sp_create(server, "diag-sdk", "Owner")
    arm = Arm(server, sp)
    cfg = {"tenant": sp["tenant"], "app_id": sp["appId"], "password": sp["password"], "base": server.base_url,
           "subscription": arm.subscription, "resource": default_registry_id(arm),
           "sa": storage_id(arm.subscription, azurite.account)}
    sdk = REPO_ROOT / ".tools" / "py-monitor6"
    assert (sdk / "azure/mgmt/monitor").is_dir(), f"{sdk} is missing: run scripts/test"
    p = subprocess.run([venv_python(".venv-transfer"), "-c", SDK_FLOW, json.dumps(cfg)], capture_output=True,
                       text=True, timeout=180, env=azure_env(server, PYTHONPATH=sdk))
    assert p.returncode == 0, p.stderr[-4000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["created"]["storage_account_id"] == cfg["sa"], out
    assert out["got"]["logs"][0]["category_group"] == "allLogs", out
    assert out["listed"] == ["sdk-archive"], out
    assert {"ContainerRegistryRepositoryEvents", "ContainerRegistryLoginEvents", "AllMetrics"} <= \
        set(out["categories"]), out
    assert out["refused"]["status"] == 400 and "Log Analytics" in out["refused"]["message"], out
    assert out["after_delete"] == [], out


def test_refusals_store_nothing_and_say_what_to_use(server, azurite, tmp_path):
    register_account(server, azurite, tmp_path)
    sp = sp_create(server, "diag-refusals", "Owner")
    arm = Arm(server, sp, api_version=MONITOR_API)
    reg_id = default_registry_id(arm)
    sub = arm.subscription
    sa = storage_id(sub, azurite.account)
    logs = [{"category": REPO_CAT, "enabled": True}]
    # A registered account whose endpoint answers nothing.
    server.moat("storage-account", "add", "--name", "deadacct", "--blob-endpoint", "http://127.0.0.1:9/deadacct/",
                "--key", azurite.key)
    cases = [
        ({"workspaceId": "/subscriptions/x/resourceGroups/r/providers/Microsoft.OperationalInsights/workspaces/w",
          "logs": logs}, "Log Analytics"),
        ({"eventHubAuthorizationRuleId": "/subscriptions/x/eh/authorizationrules/r", "logs": logs}, "Event Hubs"),
        ({"serviceBusRuleId": "/subscriptions/x/sb/r", "logs": logs}, "Service Bus"),
        ({"storageAccountId": sa, "logs": [{"category": "ContainerRegistryTaskLogs", "enabled": True}]},
         "is not supported"),
        ({"logs": logs}, "needs a destination"),
        ({"storageAccountId": storage_id(sub, "nobodysaccount"), "logs": logs}, "moat storage-account add"),
        ({"storageAccountId": storage_id(sub, "deadacct"), "logs": logs}, "cannot be written"),
        ({"marketplacePartnerId": "/subscriptions/x/resourceGroups/r/providers/Moat.Monitor/sinks/none",
          "logs": logs}, "moat monitor sink add"),
        ({"storageAccountId": sa, "logs": [{**logs[0], "retentionPolicy": {"enabled": True, "days": 30}}]},
         "lifecycle"),
    ]
    path = f"{reg_id}/providers/Microsoft.Insights/diagnosticSettings"
    for props, says in cases:
        r = arm.request("PUT", f"{path}/refused", {"properties": props})
        assert r.status_code == 400, (props, r.status_code, r.text)
        err = r.json()["error"]
        assert says in err["message"], (props, err)
        assert arm.request("GET", f"{path}/refused").status_code == 404
    assert arm.request("GET", path).json()["value"] == []
    refused = [e for e in server.audit(log="activity")
               if e["operationName"] == "Microsoft.Insights/diagnosticSettings/write"]
    assert len(refused) == len(cases) and all(e["status"] == "Failed" for e in refused), refused

    # One setting per account and category; a second name for the same pair is refused.
    r = arm.request("PUT", f"{path}/first", {"properties": {"storageAccountId": sa, "logs": logs}})
    assert r.status_code == 200, r.text
    r = arm.request("PUT", f"{path}/second", {"properties": {"storageAccountId": sa, "logs": logs}})
    assert r.status_code == 400 and "already used" in r.json()["error"]["message"], r.text
    # Replacing the first one (same name) is fine.
    r = arm.request("PUT", f"{path}/first", {"properties": {"storageAccountId": sa, "logs": [
        {"categoryGroup": "audit", "enabled": True}]}})
    assert r.status_code == 200 and r.json()["properties"]["logs"][0]["categoryGroup"] == "audit", r.text
    assert arm.request("DELETE", f"{path}/first").status_code == 200
    assert arm.request("DELETE", f"{path}/first").status_code == 204


def test_the_audit_group_archives_management_changes_and_signed_heads_and_goes_with_its_registry(
        moat_factory, azurite, tmp_path):
    """categoryGroup `audit` on a registry: its management changes reach `insights-activity-logs` in Azure's
    storage schema with their caller, its signed chain heads reach `insights-logs-moataudittrail` (the copy outside
    the server that proves the inside one), and deleting the registry deletes its settings."""
    server = moat_factory(extra_args=["--sink-interval-ms", "250", "--trail-checkpoint-interval-secs", "1"])
    register_account(server, azurite, tmp_path)
    sp = sp_create(server, "diag-audit", "Owner")
    arm = Arm(server, sp)
    r = arm.put_registry("audited", {"location": "westeurope", "sku": {"name": "Premium"}})
    assert r.status_code in (200, 201), r.text
    reg_id = arm.registry_path("audited")
    setting = f"{reg_id}/providers/Microsoft.Insights/diagnosticSettings/audit-copy"
    r = arm.request("PUT", setting, {"properties": {
        "storageAccountId": storage_id(arm.subscription, azurite.account),
        "logs": [{"categoryGroup": "audit", "enabled": True}]}}, api_version=MONITOR_API)
    assert r.status_code == 200, r.text

    # A management change after the setting, and data-plane traffic to move the registry's audit chain.
    r = arm.patch_registry("audited", {"tags": {"owner": "soc"}})
    assert r.status_code == 200, r.text
    c = server.client(host=f"audited.localhost:{server.port}")
    assert c.push_image("app", build_image(n_layers=1, seed="audited"), tag="v1").status_code == 201

    write = "Microsoft.ContainerRegistry/registries/write"
    got = wait_archived(azurite, "insights-activity-logs",
                        lambda recs: any(x["operationName"] == write and "owner" in x["properties"].get("after", "")
                                         for x in recs))
    records = [x for recs in got.values() for x in recs]
    # Azure archives the activity log by subscription, not by resource.
    for name, recs in got.items():
        for rec in recs:
            assert name == expected_blob(f"/subscriptions/{arm.subscription}", rec["time"]), (name, rec)
    change = next(x for x in records if x["operationName"] == write and "owner" in x["properties"].get("after", ""))
    assert change["category"] == "Administrative" and change["resultType"] == "Succeeded", change
    assert change["caller"] == sp["appId"] and change["identity"]["claims"]["appid"] == sp["appId"], change
    assert change["callerIpAddress"] == "127.0.0.1" and change["resourceId"].lower() == reg_id.lower(), change
    assert change["recordId"].startswith(f"{arm.subscription}/activity/"), change
    # Only this registry's changes: the setting is on it, not on the subscription.
    assert all(x["resourceId"].lower().startswith(reg_id.lower()) for x in records), records

    # Signed chain heads of this registry (and only this one), verifiable with the server's audit key.
    heads = wait_archived(azurite, "insights-logs-moataudittrail",
                          lambda recs: any(x["properties"]["chain"] == "audit/audited" for x in recs), timeout=60)
    heads = [x for recs in heads.values() for x in recs]
    assert all(x["category"] == "MoatAuditTrail" and x["properties"]["registry"] == "audited" for x in heads), heads
    head = next(x for x in heads if x["properties"]["chain"] == "audit/audited")["properties"]
    assert head["signature"] and head["keyId"] and head["lastSeq"] > 0, head
    assert server.moat("audit", "verify", "--registry", "audited", "-o", "json", check=False).returncode == 0

    # The registry deleted: its setting goes with it (a registry of the same name later starts with none).
    r = arm.request("DELETE", reg_id)
    assert r.status_code in (200, 202, 204), r.text
    r = arm.put_registry("audited", {"location": "westeurope", "sku": {"name": "Premium"}})
    assert r.status_code in (200, 201), r.text
    r = arm.request("GET", f"{reg_id}/providers/Microsoft.Insights/diagnosticSettings", api_version=MONITOR_API)
    assert r.status_code == 200 and r.json()["value"] == [], r.text
    r = arm.request("GET", setting, api_version=MONITOR_API)
    assert r.status_code == 404, r.text
