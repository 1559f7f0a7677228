"""Security suite, findings 5 and 6 of issue 9: every management change and every refused management request
leaves exactly one activity-log row (ARM's Activity Log shape), written with the change; and no client can forge
`moat audit` output with newlines or terminal escapes."""
from __future__ import annotations

import base64
import json
import re
import time
import uuid

import requests

from conftest import (Arm, approve_connection, assert_arm_error, create_private_endpoint, make_session,
                      protect_registry, reject_connection, sp_create)

REG_WRITE = "Microsoft.ContainerRegistry/registries/write"
# Any control character (C0, DEL, C1) — none may reach a terminal from `moat audit`'s table.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def call(arm: Arm, method: str, path: str, body=None, api_version: str | None = None) -> requests.Response:
    """One ARM request with its own correlation id (sent as x-ms-correlation-request-id, as the Azure SDK does)."""
    corr = str(uuid.uuid4())
    params = {"api-version": api_version or arm.api_version}
    r = arm.session.request(method, arm.server.base_url + path, params=params, json=body, timeout=60,
                            headers={"Authorization": "Bearer " + arm.token, "x-ms-correlation-request-id": corr,
                                     "User-Agent": "moat-e2e/activity"})
    r.correlation = corr
    return r


def activity(server, **filters) -> list[dict]:
    return server.audit(log="activity", **filters)


def row_of(server, r: requests.Response) -> dict:
    """The one activity row of response `r` (matched by correlation id), checked for the common fields."""
    assert r.headers.get("x-ms-correlation-request-id") == r.correlation, dict(r.headers)
    rows = [e for e in activity(server) if e["correlationId"] == r.correlation]
    assert len(rows) == 1, f"{r.request.method} {r.request.url} -> {r.status_code}: rows {rows}"
    row = rows[0]
    assert row["category"] == "Administrative"
    assert row["callerIpAddress"] == "127.0.0.1", row
    assert row["httpStatusCode"] == r.status_code, row
    assert row["eventDataId"] and row["time"], row
    want = "Succeeded" if r.status_code < 300 and r.status_code != 202 else (
        "Started" if r.status_code == 202 else "Failed")
    assert row["status"] == want, row
    assert row["level"] == ("Informational" if r.status_code < 400 else "Warning"), row
    assert row["properties"].get("userAgent", "").startswith("moat-e2e/activity"), row
    return row


def test_registry_changes_each_leave_one_row(moat):
    sp = sp_create(moat, "owner-activity")
    arm = Arm(moat, sp)
    path = arm.registry_path("actreg")

    r = call(arm, "PUT", path, {"location": "local", "sku": {"name": "Premium"}})
    assert r.status_code == 201, r.text
    row = row_of(moat, r)
    assert row["operationName"] == REG_WRITE and row["resourceId"] == path, row
    assert row["caller"] == sp["appId"] and row["registry"] == "actreg", row
    assert row["subStatus"] == "Created" and row["properties"]["before"] is None, row
    assert row["properties"]["after"]["public_network_access"] is True, row

    # network rules and public access: the policy before and after
    r = call(arm, "PATCH", path, {"properties": {"publicNetworkAccess": "Disabled", "networkRuleSet": {
        "defaultAction": "Deny", "ipRules": [{"action": "Allow", "value": "10.1.0.0/16"}]}}})
    assert r.status_code == 200, r.text
    row = row_of(moat, r)
    before, after = row["properties"]["before"], row["properties"]["after"]
    assert before["public_network_access"] is True and after["public_network_access"] is False, row
    assert before["network_rule_set"]["default_action"] == "Allow", row
    assert after["network_rule_set"]["default_action"] == "Deny", row
    assert [i["value"] for i in after["network_rule_set"]["ip_rules"]] == ["10.1.0.0/16"], row

    # admin user, credential listing and regeneration
    r = call(arm, "PATCH", path, {"properties": {"adminUserEnabled": True}})
    assert r.status_code == 200 and row_of(moat, r)["properties"]["after"]["admin_user_enabled"] is True
    r = call(arm, "POST", path + "/listCredentials")
    assert r.status_code == 200, r.text
    assert row_of(moat, r)["operationName"] == "Microsoft.ContainerRegistry/registries/listCredentials/action"
    r = call(arm, "POST", path + "/regenerateCredential", {"name": "password2"})
    assert r.status_code == 200, r.text
    row = row_of(moat, r)
    assert row["operationName"] == "Microsoft.ContainerRegistry/registries/regenerateCredential/action", row
    assert row["resourceId"] == path
    # no secret goes into the log
    assert all(p["value"] not in json.dumps(activity(moat)) for p in r.json()["passwords"])

    # a validation refusal: Failed, with ARM's error, and nothing changed
    r = call(arm, "PUT", path, {"location": "elsewhere", "sku": {"name": "Premium"}})
    assert r.status_code == 400, r.text
    row = row_of(moat, r)
    assert row["operationName"] == REG_WRITE and row["subStatus"] == "BadRequest", row
    assert row["properties"]["error"]["code"] == r.json()["error"]["code"], row

    r = call(arm, "DELETE", path)
    assert r.status_code == 200, r.text
    row = row_of(moat, r)
    assert row["operationName"] == "Microsoft.ContainerRegistry/registries/delete" and row["resourceId"] == path

    # --registry selects the registry's rows; the table shows them beside the data-plane events
    ops = [e["operationName"] for e in activity(moat, registry="actreg")]
    assert ops.count(REG_WRITE) == 4 and "Microsoft.ContainerRegistry/registries/delete" in ops, ops
    table = moat.moat("audit", "--registry", "actreg").stdout
    assert "activity" in table and REG_WRITE in table and sp["appId"] in table, table


def test_private_endpoint_changes_and_exports_are_recorded(moat):
    sp = sp_create(moat, "owner-pe")
    arm = Arm(moat, sp)
    assert arm.put_registry("perecord", {"location": "local", "sku": {"name": "Premium"}}).status_code == 201
    n_before = len(activity(moat))
    pe = protect_registry(arm, "perecord")  # endpoint create (auto-approved), then exports + public access off
    rows = activity(moat)[n_before:]
    assert [e["operationName"] for e in rows] == ["Microsoft.Network/privateEndpoints/write", REG_WRITE], rows
    create, patch = rows
    assert create["resourceId"] == arm.endpoint_path(pe["name"]) and create["caller"] == sp["appId"], create
    assert create["properties"]["after"]["status"] == "Approved", create
    assert patch["properties"]["before"]["policies"]["export"] == "enabled", patch
    assert patch["properties"]["after"]["policies"]["export"] == "disabled", patch

    # a manual endpoint: approve, reject, remove the connection, delete the endpoint: one row each
    manual = create_private_endpoint(arm, "perecord", manual=True)
    conn = manual["connectionName"]
    approve_connection(arm, "perecord", conn)
    reject_connection(arm, "perecord", conn)
    r = call(arm, "DELETE", arm.connections_path("perecord", connection=conn))
    assert r.status_code == 200, r.text
    row_of(moat, r)
    r = call(arm, "DELETE", arm.endpoint_path(manual["name"]), api_version="2023-09-01")
    assert r.status_code == 200, r.text
    assert row_of(moat, r)["operationName"] == "Microsoft.Network/privateEndpoints/delete"
    conn_op = "Microsoft.ContainerRegistry/registries/privateEndpointConnections/write"
    states = [(e["properties"]["before"]["status"], e["properties"]["after"]["status"])
              for e in activity(moat, operation=conn_op)]
    assert states == [("Pending", "Approved"), ("Approved", "Rejected")], states
    assert len(activity(moat, operation="Microsoft.Network/privateEndpoints/write")) == 2
    assert len(activity(moat, operation="Microsoft.ContainerRegistry/registries/privateEndpointConnections/delete")) == 1

    # refused: removing the last approved connection of a protected registry. Failed row, connection kept.
    r = call(arm, "DELETE", arm.connections_path("perecord", connection=pe["connectionName"]))
    assert r.status_code == 400, r.text
    row = row_of(moat, r)
    assert row["status"] == "Failed" and row["properties"]["error"]["code"] == r.json()["error"]["code"], row
    assert [c["name"] for c in arm.connections("perecord") if c["name"] == pe["connectionName"]]


def test_refused_changes_leave_a_failed_row_and_no_change(moat):
    owner = Arm(moat, sp_create(moat, "owner-refusals"))
    assert owner.put_registry("refused", {"location": "local", "sku": {"name": "Premium"}}).status_code == 201
    reader_sp = sp_create(moat, "reader-refusals", role="Reader")
    reader = Arm(moat, reader_sp)
    path = reader.registry_path("refused")

    # AuthorizationFailed: a Reader turning public access off
    r = call(reader, "PATCH", path, {"properties": {"publicNetworkAccess": "Disabled"}})
    assert_arm_error(r, 403, "AuthorizationFailed")
    row = row_of(moat, r)
    assert row["caller"] == reader_sp["appId"] and row["operationName"] == REG_WRITE, row
    assert row["resourceId"] == path and row["subStatus"] == "Forbidden", row
    assert row["properties"]["error"]["code"] == "AuthorizationFailed", row
    r = call(reader, "POST", path + "/listCredentials")
    assert_arm_error(r, 403, "AuthorizationFailed")
    assert row_of(moat, r)["operationName"] == "Microsoft.ContainerRegistry/registries/listCredentials/action"

    # the export-policy prerequisites: refused, recorded, nothing changed
    r = call(owner, "PATCH", path, {"properties": {"policies": {"exportPolicy": {"status": "disabled"}}}})
    assert r.status_code == 400, r.text
    row = row_of(moat, r)
    assert row["status"] == "Failed" and row["caller"] != reader_sp["appId"], row
    assert row["properties"]["error"]["code"] == r.json()["error"]["code"], row
    reg = owner.get_registry("refused").json()
    assert reg["properties"]["policies"]["exportPolicy"]["status"] == "enabled", reg
    assert reg["properties"]["publicNetworkAccess"] == "Enabled", reg

    # no token at all: refused and recorded with no caller
    corr = str(uuid.uuid4())
    r = make_session(moat.base_url, verify=moat.verify).patch(
        moat.base_url + path, params={"api-version": owner.api_version}, json={"properties": {}},
        headers={"x-ms-correlation-request-id": corr})
    assert r.status_code == 401, r.text
    rows = [e for e in activity(moat) if e["correlationId"] == corr]
    assert len(rows) == 1 and rows[0]["caller"] == "-" and rows[0]["status"] == "Failed", rows

    # an import request that is refused for its content is recorded too
    r = call(owner, "POST", path + "/importImage", {"source": {}})
    assert r.status_code == 400, r.text
    assert row_of(moat, r)["operationName"] == "Microsoft.ContainerRegistry/registries/importImage/action"


def test_service_principals_and_role_assignments_are_recorded(moat):
    sp = sp_create(moat, "recorded-sp", role="Contributor", scope=None)
    rows = activity(moat)
    made = [e for e in rows if e["operationName"] == "Microsoft.Graph/servicePrincipals/write"
            and e["resourceId"].endswith(sp["appId"])]
    assert len(made) == 1 and made[0]["caller"].startswith("local:"), made
    assert made[0]["properties"]["displayName"] == "recorded-sp"
    roles = [e for e in rows if e["operationName"] == "Microsoft.Authorization/roleAssignments/write"
             and e["properties"]["after"]["principalId"] == sp["appId"]]
    assert len(roles) == 1 and roles[0]["properties"]["after"]["role"] == "Contributor", roles
    moat.moat("registry", "create", "opcreated", "--listen", moat.login_server)
    created = activity(moat, registry="opcreated")
    assert [e["operationName"] for e in created] == [REG_WRITE] and created[0]["caller"].startswith("local:")


def test_a_change_is_recorded_in_its_own_transaction(moat):
    arm = Arm(moat, sp_create(moat, "owner-kill"))
    assert arm.put_registry("killreg", {"location": "local", "sku": {"name": "Premium"}}).status_code == 201
    r = call(arm, "PATCH", arm.registry_path("killreg"), {"properties": {"adminUserEnabled": True}})
    assert r.status_code == 200, r.text
    moat.kill9()
    moat.start()
    rows = [e for e in activity(moat) if e["correlationId"] == r.correlation]
    assert len(rows) == 1 and rows[0]["status"] == "Succeeded", rows
    assert rows[0]["properties"]["after"]["admin_user_enabled"] is True


def _forged_jwt(alg: str) -> str:
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    header = enc(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{enc(b'{}')}.{enc(b'sig')}"


FORGED = "HS256\n2026-01-01T00:00:00Z      Success  Pull      library/forged\x1b[2J\x1b]0;owned\x07\u202e"


def test_audit_output_cannot_be_forged(moat):
    s = make_session(moat.base_url, verify=moat.verify)
    long_tail = "A" * 5000
    r = s.get(moat.base_url + "/v2/", headers={"Authorization": "Bearer " + _forged_jwt(FORGED + long_tail),
                                                "User-Agent": "agent\twith\ttabs"})
    assert r.status_code == 401, r.text
    r = s.get(moat.base_url + "/oauth2/token", params={"service": moat.login_server, "scope": "repository:x:pull"},
              auth=("nobody", "wrong"), headers={"User-Agent": "ua\tforged"})
    assert r.status_code == 401, r.text
    # a management refusal whose message quotes the request (an unknown route) carries the same text
    r = s.put(moat.base_url + "/subscriptions/x/" + "y%0A%1B%5B2J", params={"api-version": "2025-11-01"})
    assert r.status_code in (401, 404), r.text

    events = moat.audit(log="all")
    texts = json.dumps(events)
    assert "\x1b" not in texts and "\\u001b" not in texts, "raw escape stored"
    denied = [e for e in events if "Success  Pull" in e.get("ResultDescription", "")]
    assert len(denied) == 1, events
    desc = denied[0]["ResultDescription"]
    # stored bounded and with its control characters written out, and JSON gives exactly that text back
    assert len(desc.encode()) <= 1024 and desc.endswith("…"), desc
    assert "HS256\\n2026-01-01T00:00:00Z" in desc and "\\x1b[2J\\x1b]0;owned\\x07\\u{202e}" in desc, desc
    assert not CONTROL.search(desc)
    uas = {e.get("UserAgent") for e in events}
    assert "agent\\twith\\ttabs" in uas and "ua\\tforged" in uas, uas

    out = moat.moat("audit", "--log", "all").stdout
    assert not CONTROL.search(out.replace("\n", "")), repr(out)
    assert "\u202e" not in out
    lines = out.splitlines()
    # one header line and one line per event: the newline in the stored text made no row of its own
    assert len(lines) == 1 + len(events), out
    assert not any(l.startswith("2026-01-01T00:00:00Z") for l in lines), out


def test_changes_without_a_store_record_of_their_own_are_recorded(moat):
    arm = Arm(moat, sp_create(moat, "owner-misc"))
    # a resource group
    r = call(arm, "PUT", f"/subscriptions/{arm.subscription}/resourceGroups/rgact", {"location": "local"},
             api_version="2022-09-01")
    assert r.status_code in (200, 201), r.text
    assert row_of(moat, r)["operationName"] == "Microsoft.Resources/subscriptions/resourceGroups/write"
    # deletes of what does not exist change nothing, and are still one row each
    r = call(arm, "DELETE", arm.endpoint_path("nosuchpe"), api_version="2023-09-01")
    assert r.status_code in (200, 204), r.text
    assert row_of(moat, r)["operationName"] == "Microsoft.Network/privateEndpoints/delete"
    assert arm.put_registry("miscreg", {"location": "local", "sku": {"name": "Premium"}}).status_code == 201
    r = call(arm, "DELETE", arm.connections_path("miscreg", connection="miscreg.nosuch"))
    assert r.status_code in (200, 204), r.text
    row_of(moat, r)

    # a remote import: its request, and (when it ran as an operation) how it ended
    r = call(arm, "POST", arm.registry_path("miscreg") + "/importImage",
             {"source": {"registryUri": "127.0.0.1:1", "sourceImage": "nothing/here:1"},
              "targetTags": ["x/y:1"]})
    assert r.status_code in (202, 400), r.text
    op = "Microsoft.ContainerRegistry/registries/importImage/action"
    if r.status_code == 400:
        assert row_of(moat, r)["operationName"] == op
        return
    end = time.monotonic() + 60
    while True:
        rows = [e for e in activity(moat) if e["correlationId"] == r.correlation]
        if len(rows) == 2 or time.monotonic() > end:
            break
        time.sleep(0.3)
    assert [(e["operationName"], e["status"]) for e in rows] == [(op, "Started"), (op, "Failed")], rows
    assert rows[1]["properties"]["error"]["code"], rows


def test_moat_acr_changes_and_refusals_are_recorded(moat, tmp_path):
    """The az-like CLI: each change it makes is one row with the logged-in principal as caller, and a refused
    change (exports off without a private endpoint) is a Failed row that changes nothing."""
    from test_moat_acr import Cli
    owner = sp_create(moat, "owner-cli")
    cli = Cli(moat, tmp_path / "moat-config")
    cli.login(owner)
    cli.json("acr", "create", "-n", "cliact", "-g", "rg1", "--sku", "Premium")
    cli.json("acr", "update", "-n", "cliact", "--public-network-enabled", "false")
    p = cli("acr", "update", "-n", "cliact", "--allow-exports", "false", rc=None)
    assert p.returncode == 1, p.stderr
    rows = activity(moat, registry="cliact", operation=REG_WRITE)
    assert [(e["status"], e["httpStatusCode"]) for e in rows] == [
        ("Succeeded", 201), ("Succeeded", 200), ("Failed", 400)], rows
    assert {e["caller"] for e in rows} == {owner["appId"]}, rows
    assert rows[1]["properties"]["before"]["public_network_access"] is True
    assert rows[1]["properties"]["after"]["public_network_access"] is False
    assert len({e["correlationId"] for e in rows}) == 3, rows
    table = moat.moat("audit", "--log", "activity", "--registry", "cliact").stdout.splitlines()
    assert len(table) == 4 and all("cliact" in line for line in table[1:]), table
