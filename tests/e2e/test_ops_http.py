"""Operating Moat over HTTP: plain answers for the management routes Moat does not serve (with the real az), ARM
paths in any case, health endpoints on every listener, the access log and JSON logs."""
from __future__ import annotations

import pytest

from conftest import ARM_API_VERSION, Arm, assert_arm_error, make_session, sp_create
from test_arm_az import Az

UNSUPPORTED = ["replications/r1", "webhooks", "webhooks/h1", "tasks", "taskRuns/t1", "runs", "agentPools",
               "connectedRegistries/c1", "cacheRules", "credentialSets/c", "scopeMaps", "tokens/t",
               "exportPipelines", "importPipelines/p", "pipelineRuns", "somethingElse"]


@pytest.fixture
def az(moat, tmp_path):
    return Az(moat, tmp_path / "azcfg")


def _feature(route: str) -> str:
    return route.split("/")[0]


def test_unsupported_management_routes_name_the_feature(moat):
    arm = Arm(moat, sp_create(moat, "ops-unsupported"))
    assert arm.put_registry("opsfeat", {"location": "local", "sku": {"name": "Premium"}}).status_code == 201
    reg = arm.registry_path("opsfeat")
    for route in UNSUPPORTED:
        feature = _feature(route)
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            for path in (f"{reg}/{route}", f"{reg}/{route}".upper().replace("/OPSFEAT/", "/opsfeat/")):
                r = arm.request(method, path, {} if method in ("PUT", "PATCH") else None)
                body = assert_arm_error(r, 400, "FeatureNotSupported")
                msg = body["message"]
                assert msg.lower() == (f"Moat does not support {feature} "
                                       f"(Microsoft.ContainerRegistry/registries/{feature}).").lower(), (path, msg)
        # an action on one of them, with an api-version only that feature's SDK sends
        r = arm.request("POST", f"{reg}/{route}/x/listEvents", api_version="2019-06-01-preview")
        assert_arm_error(r, 400, "FeatureNotSupported")
    # the registry's own operations Moat does not serve are named by operation
    r = arm.request("DELETE", f"{reg}/listUsages")
    body = assert_arm_error(r, 400, "FeatureNotSupported")
    assert "Microsoft.ContainerRegistry/registries/listUsages/delete" in body["message"], body
    # another provider
    r = arm.request("PUT", f"/subscriptions/{arm.subscription}/resourceGroups/rg1/providers/Microsoft.Storage/"
                           f"storageAccounts/acct", {"location": "local"}, api_version="2023-01-01")
    body = assert_arm_error(r, 400, "FeatureNotSupported")
    assert body["message"] == "Moat does not support storageAccounts (Microsoft.Storage/storageAccounts).", body
    # a change Moat refused is in the activity log with the refusal
    rows = [e for e in moat.audit(log="activity", registry="opsfeat")
            if e["operationName"] == "Microsoft.ContainerRegistry/registries/webhooks/write"]
    assert rows and rows[0]["properties"]["error"]["code"] == "FeatureNotSupported", rows
    # unauthenticated callers still get 401 first
    anon = make_session(moat.base_url, verify=moat.verify)
    r = anon.get(moat.base_url + f"{reg}/webhooks", params={"api-version": ARM_API_VERSION})
    assert r.status_code == 401, r.text


def test_replications_list_is_empty_for_a_registry_the_caller_may_read(moat):
    arm = Arm(moat, sp_create(moat, "ops-repl"))
    assert arm.put_registry("opsrepl", {"location": "local", "sku": {"name": "Premium"}}).status_code == 201
    r = arm.request("GET", arm.registry_path("opsrepl") + "/REPLICATIONS")
    assert r.status_code == 200 and r.json() == {"value": []}, r.text
    r = arm.request("GET", arm.registry_path("nosuchreg") + "/replications")
    assert r.status_code == 404, r.text


def test_arm_paths_in_uppercase_reach_the_management_api(moat):
    arm = Arm(moat, sp_create(moat, "ops-upper"))
    assert arm.put_registry("opsupper", {"location": "local", "sku": {"name": "Premium"}}).status_code == 201
    for path in (arm.registry_path("opsupper").upper().replace("OPSUPPER", "opsupper"),
                 arm.registry_path("opsupper").replace("/subscriptions/", "/Subscriptions/"),
                 arm.registry_path("opsupper").replace("/subscriptions/", "/sUbScRiPtIoNs/")
                 .replace("resourceGroups", "RESOURCEGROUPS").replace("providers", "Providers")
                 .replace("Microsoft.ContainerRegistry", "microsoft.containerregistry")
                 .replace("registries", "Registries")):
        r = arm.request("GET", path)
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert r.json()["name"] == "opsupper", r.text
    r = arm.request("GET", "/SUBSCRIPTIONS", api_version="2022-12-01")
    assert r.status_code == 200 and r.json()["value"][0]["subscriptionId"] == arm.subscription, r.text


def test_az_show_endpoints_and_unsupported_commands(moat, az):
    sp = sp_create(moat, "ops-az", "Owner")
    az.register_and_login(sp)
    name = "opsazreg"
    az("acr", "create", "-n", name, "-g", "rg1", "--sku", "Premium", "-l", "local")
    # without dedicated data endpoints az lists replications (none) and prints the login server
    shown = az("acr", "show-endpoints", "-n", name, json_out=True).json
    assert shown["loginServer"] == f"{name}.localhost:{moat.port}", shown
    assert [d["region"] for d in shown["dataEndpoints"]] == ["local"], shown
    az("acr", "update", "-n", name, "--data-endpoint-enabled", "true")
    shown = az("acr", "show-endpoints", "-n", name, json_out=True).json
    assert shown["dataEndpoints"] == [{"region": "local", "endpoint": f"{name}.local.data.localhost:{moat.port}"}], \
        shown
    assert az("acr", "replication", "list", "-r", name, json_out=True).json == []
    for args, feature in ((["webhook", "list", "-r", name], "webhooks"),
                          (["task", "list", "-r", name], "tasks"),
                          (["scope-map", "list", "-r", name], "scopeMaps")):
        p = az("acr", *args, ok=False)
        assert p.returncode != 0, p.stdout
        want = f"Moat does not support {feature} (Microsoft.ContainerRegistry/registries/{feature})."
        assert want in p.stderr, (args, p.stderr)
