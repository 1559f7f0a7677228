"""The activity log API (issue 12 item 5): `az monitor activity-log list` against Moat shows a registry change
with its caller (the service principal's app id) and before/after, filters by caller and correlation id, pages
with nextLink, shows each caller only what it may read, and refuses a $filter it cannot read in ARM's form.
"""
from __future__ import annotations

import json

from conftest import Arm, sp_create
from test_arm_az import Az

API = "2015-04-01"


def find_key(value, name: str):
    """The value of the first key spelled `name` in any case, with or without underscores, in nested JSON."""
    want = name.replace("_", "").lower()
    if isinstance(value, dict):
        for k, v in value.items():
            if k.replace("_", "").lower() == want:
                return v
        for v in value.values():
            found = find_key(v, name)
            if found is not None:
                return found
    return None


def values_path(arm: Arm) -> str:
    return f"/subscriptions/{arm.subscription}/providers/Microsoft.Insights/eventtypes/management/values"


def test_az_monitor_activity_log_list_shows_changes_with_caller_and_before_after(moat, tmp_path):
    az = Az(moat, tmp_path / "azcfg")
    sp = sp_create(moat, "act-owner", "Owner")
    az.register_and_login(sp)
    arm = Arm(moat, sp)
    az("acr", "create", "-n", "actreg", "-g", "rg1", "--sku", "Premium", "-l", "westeurope")
    az("acr", "update", "-n", "actreg", "--admin-enabled", "true")
    reg_id = arm.registry_path("actreg")

    events = az("monitor", "activity-log", "list", "--resource-id", reg_id, "--offset", "1h", json_out=True).json
    writes = [e for e in events if e["operationName"]["value"] == "Microsoft.ContainerRegistry/registries/write"]
    assert len(writes) == 2, json.dumps(events, indent=1)[:3000]
    update = next(e for e in writes if json.loads(e["properties"]["before"] or "null") is not None)
    assert update["caller"] == sp["appId"], update
    assert update["status"]["value"] == "Succeeded" and update["category"]["value"] == "Administrative", update
    assert update["resourceId"].lower() == reg_id.lower() and update["resourceGroupName"] == "rg1", update
    assert update["subscriptionId"] == arm.subscription and update["eventDataId"], update
    before, after = json.loads(update["properties"]["before"]), json.loads(update["properties"]["after"])
    assert find_key(before, "adminUserEnabled") is False and find_key(after, "adminUserEnabled") is True, update
    assert all(isinstance(v, str) for v in update["properties"].values()), update["properties"]

    # Filters: by caller (every record is this principal's), by correlation id (only that request's record).
    mine = az("monitor", "activity-log", "list", "--caller", sp["appId"], "--offset", "1h", json_out=True).json
    assert mine and all(e["caller"] == sp["appId"] for e in mine), mine
    assert update["eventDataId"] in {e["eventDataId"] for e in mine}
    nobody = az("monitor", "activity-log", "list", "--caller", "someone-else", "--offset", "1h", json_out=True).json
    assert nobody == [], nobody
    corr = az("monitor", "activity-log", "list", "--correlation-id", update["correlationId"], "--offset", "1h",
              json_out=True).json
    assert [e["eventDataId"] for e in corr] == [update["eventDataId"]], corr

    # Paging: one record a page, followed through nextLink, gives every record once.
    window = "eventTimestamp ge '{}' and eventTimestamp le '{}'".format(
        min(e["eventTimestamp"] for e in events)[:19], "2100-01-01T00:00:00Z")
    r = arm.request("GET", values_path(arm), params={"$filter": window}, api_version=API)
    assert r.status_code == 400 and "longer than 90 days" in r.json()["error"]["message"], r.text
    start = min(e["eventTimestamp"] for e in events)[:19]
    end = _plus_minute(max(e["eventTimestamp"] for e in events))
    window = f"eventTimestamp ge '{start}Z' and eventTimestamp le '{end}Z' and resourceUri eq '{reg_id}'"
    r = arm.request("GET", values_path(arm), params={"$filter": window, "$top": "1"}, api_version=API)
    assert r.status_code == 200, r.text
    seen = []
    page = r.json()
    while True:
        assert len(page["value"]) <= 1, page
        seen += [e["eventDataId"] for e in page["value"]]
        if not page.get("nextLink"):
            break
        nxt = arm.session.get(page["nextLink"], headers={"Authorization": "Bearer " + arm.token}, timeout=60)
        assert nxt.status_code == 200, nxt.text
        page = nxt.json()
    assert sorted(seen) == sorted(e["eventDataId"] for e in events), (seen, events)

    # $select keeps only the named fields.
    r = arm.request("GET", values_path(arm), params={"$filter": window, "$select": "caller,eventDataId"},
                    api_version=API)
    assert r.status_code == 200 and all(set(e) == {"caller", "eventDataId"} for e in r.json()["value"]), r.text

    # A $filter it cannot read is refused in ARM's form, saying what it accepts.
    for bad in ("level eq 'Error'", window.replace(" and eventTimestamp le", " or eventTimestamp le"),
                window + " and operationName eq 'x'"):
        r = arm.request("GET", values_path(arm), params={"$filter": bad}, api_version=API)
        assert r.status_code == 400, (bad, r.status_code, r.text)
        err = r.json()["error"]
        assert err["code"] and "accepts" in err["message"], err
    p = az("monitor", "activity-log", "list", "--resource-id", reg_id, "--start-time", "2020-01-01T00:00:00Z",
           "--end-time", "2021-01-01T00:00:00Z", ok=False)
    assert p.returncode != 0 and "longer than 90 days" in p.stderr, p.stderr

    # A principal that may read nothing of rg1 sees none of its records.
    other = sp_create(moat, "act-other", "Reader", scope=f"/subscriptions/{arm.subscription}/resourceGroups/rg2")
    r = Arm(moat, other).request("GET", values_path(arm), params={"$filter": window}, api_version=API)
    assert r.status_code == 200 and r.json()["value"] == [], r.text


def _plus_minute(ts: str) -> str:
    """`ts` (as the API prints it) plus one minute, as `YYYY-MM-DDTHH:MM:SS` (seconds precision, UTC)."""
    from datetime import datetime, timedelta
    t = datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S") + timedelta(minutes=1)
    return t.strftime("%Y-%m-%dT%H:%M:%S")
