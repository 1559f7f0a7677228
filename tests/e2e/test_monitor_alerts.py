"""Issue 12 item 3, alerts: the real az CLI creates an action group with a webhook receiver, a metric alert on
PulledBytes split by identity (the seed's "one identity pulling more than N bytes within M minutes") and an
activity-log alert on registries/write; a receiver started by the test gets Azure's common alert schema. The server
runs with --alert-interval-secs 1, so rules are evaluated every second instead of every minute."""
from __future__ import annotations

import json
import time

import pytest

from conftest import Arm, build_image, protect_registry, sp_create
from receivers import HttpReceiver
from test_arm_az import Az

REG_WRITE = "Microsoft.ContainerRegistry/registries/write"
FAST = ["--alert-interval-secs", "1", "--metrics-interval-ms", "500"]


@pytest.fixture
def server(moat_factory):
    return moat_factory(extra_args=FAST)


@pytest.fixture
def az(server, tmp_path):
    return Az(server, tmp_path / "azcfg")


def alerts_of(rx: HttpReceiver, rule: str, condition: str | None = None) -> list[dict]:
    out = []
    for r in list(rx.requests):
        body = r.json()
        ess = body["data"]["essentials"]
        if ess["alertRule"] == rule and (condition is None or ess["monitorCondition"] == condition):
            out.append(body)
    return out


def wait_alerts(rx: HttpReceiver, rule: str, n: int = 1, timeout: float = 60, condition: str | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = alerts_of(rx, rule, condition)
        if len(got) >= n:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{rule}: {len(alerts_of(rx, rule, condition))} alerts after {timeout}s, want {n}; "
                         f"receiver got {[r.body[:300] for r in rx.requests]}")


def pull_image(server, login_server: str, sp: dict, repo: str, tag: str, times: int) -> int:
    """Pulls the manifest and every blob `times` times as `sp`; returns the bytes pulled."""
    c = server.client(host=login_server, user=sp["appId"], password=sp["password"])
    scope = f"repository:{repo}:pull"
    total = 0
    for _ in range(times):
        r = c.request("GET", f"/v2/{repo}/manifests/{tag}", scopes=[scope],
                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200, r.text
        total += len(r.content)
        m = r.json()
        for d in [m["config"]["digest"]] + [l["digest"] for l in m["layers"]]:
            b = c.request("GET", f"/v2/{repo}/blobs/{d}", scopes=[scope])
            assert b.status_code == 200, b.status_code
            total += len(b.content)
    return total


def setup_registry(server, az, name: str):
    owner = sp_create(server, "alerts-owner", "Owner")
    az.register_and_login(owner)
    reg = az("acr", "create", "-n", name, "-g", "rg1", "--sku", "Premium", "-l", "westeurope", json_out=True).json
    return owner, reg


def test_metric_alert_fires_once_for_the_identity_over_the_threshold(server, az):
    owner, reg = setup_registry(server, az, "alertreg")
    login = reg["loginServer"]
    with HttpReceiver() as rx:
        group = az("monitor", "action-group", "create", "-g", "rg1", "-n", "ops", "--short-name", "ops",
                   "--action", "webhook", "hook", rx.url + "alerts?token=s3cret", "usecommonalertschema",
                   json_out=True).json
        hooks = group["webhookReceivers"]
        assert [h["name"] for h in hooks] == ["hook"], group
        # The URL is a secret: GET shows its host only.
        assert "s3cret" not in json.dumps(group) and hooks[0]["serviceUri"].startswith("http://127.0.0.1:"), group
        shown = az("monitor", "action-group", "show", "-g", "rg1", "-n", "ops", json_out=True).json
        assert "s3cret" not in json.dumps(shown)

        # Push one image (~48 KiB), then: identity A pulls it three times, identity B once.
        admin = server.client(host=login)
        img = build_image(n_layers=2, seed="alerts-big", layer_size=24 * 1024)
        assert admin.push_image("team/app", img, tag="v1").status_code == 201
        a = sp_create(server, "puller-a", "AcrPull", scope=reg["id"])
        b = sp_create(server, "puller-b", "AcrPull", scope=reg["id"])
        once = pull_image(server, login, b, "team/app", "v1", 1)
        threshold = int(once * 2)  # B (1x) stays under, A (3x) goes over

        rule = az("monitor", "metrics", "alert", "create", "-g", "rg1", "-n", "big-puller", "--scopes", reg["id"],
                  "--condition", f"total PulledBytes > {threshold} where Identity includes *",
                  "--window-size", "5m", "--evaluation-frequency", "1m", "--action", "ops",
                  "--description", "one identity pulled more than it should", json_out=True).json
        assert rule["criteria"]["allOf"][0]["metricName"] == "PulledBytes", rule
        assert rule["windowSize"] == "PT5M" and rule["evaluationFrequency"] == "PT1M", rule

        pulled = pull_image(server, login, a, "team/app", "v1", 3)
        assert pulled > threshold > once

        fired = wait_alerts(rx, "big-puller", 1, timeout=60)
        time.sleep(4)  # several more evaluations: still one notification (fires on the transition only)
        fired = alerts_of(rx, "big-puller")
        assert len(fired) == 1, fired
        body = fired[0]
        assert body["schemaId"] == "azureMonitorCommonAlertSchema"
        ess = body["data"]["essentials"]
        assert ess["signalType"] == "Metric" and ess["monitorCondition"] == "Fired", ess
        assert ess["monitoringService"] == "Platform" and ess["severity"] == "Sev2", ess
        assert ess["alertTargetIDs"] == [reg["id"].lower()] and ess["configurationItems"] == ["alertreg"], ess
        assert ess["alertId"].startswith(f"/subscriptions/{Arm(server, owner).subscription}/providers/"
                                         "Microsoft.AlertsManagement/alerts/"), ess
        assert ess["description"] == "one identity pulled more than it should"
        assert ess["essentialsVersion"] == "1.0" and ess["alertContextVersion"] == "1.0"
        cond = body["data"]["alertContext"]["condition"]
        assert cond["windowSize"] == "PT5M" and cond["windowStartTime"] < cond["windowEndTime"], cond
        c0 = cond["allOf"][0]
        assert c0["metricName"] == "PulledBytes" and c0["operator"] == "GreaterThan", c0
        assert c0["timeAggregation"] == "Total" and float(c0["threshold"]) == threshold, c0
        assert c0["dimensions"] == [{"name": "Identity", "value": a["appId"]}], c0
        assert c0["metricValue"] >= pulled, c0
        # The receiver got it at the path it was configured with (token included).
        assert rx.requests[0].path == "/alerts?token=s3cret"
        assert not [x for x in rx.requests if b["appId"] in x.body.decode()], "B stayed under the threshold"

        # A restart neither forgets the firing nor fires again.
        server.restart()
        time.sleep(4)
        assert len(alerts_of(rx, "big-puller")) == 1, alerts_of(rx, "big-puller")


def test_activity_log_alert_fires_on_export_policy_change_and_survives_a_dead_receiver(server, az):
    owner, reg = setup_registry(server, az, "protreg")
    with HttpReceiver() as rx:
        az("monitor", "action-group", "create", "-g", "rg1", "-n", "sec", "--short-name", "sec",
           "--action", "webhook", "hook", rx.url + "sec")
        created = az("monitor", "activity-log", "alert", "create", "-g", "rg1", "-n", "registry-changed",
                     "--scope", reg["id"], "--condition",
                     f"category=Administrative and operationName={REG_WRITE}", "--action-group", "sec",
                     json_out=True).json
        assert created["enabled"] is True, created
        assert {c["field"] for c in created["condition"]["allOf"]} == {"category", "operationName"}, created

        arm = Arm(server, owner)
        protect_registry(arm, "protreg")  # disables exports: one registries/write by the owner
        got = wait_alerts(rx, "registry-changed", 1, timeout=60)
        body = got[0]
        ess = body["data"]["essentials"]
        assert ess["signalType"] == "Activity Log", ess
        assert ess["monitoringService"] == "Activity Log - Administrative", ess
        assert ess["alertTargetIDs"] == [reg["id"].lower()], ess
        ctx = body["data"]["alertContext"]
        assert ctx["caller"] == owner["appId"], ctx
        assert ctx["operationName"] == REG_WRITE and ctx["status"] == "Succeeded", ctx
        assert ctx["eventSource"] == "Administrative" and ctx["eventDataId"], ctx
        # The change itself, before and after, as the activity log recorded it.
        assert ctx["properties"]["before"]["policies"]["export"] == "enabled", ctx
        assert ctx["properties"]["after"]["policies"]["export"] == "disabled", ctx

        # Receiver down while the next change is made: delivered once it is back, exactly once.
        rx.stop()
        r = arm.patch_registry("protreg", {"tags": {"owner": "secops"}})
        assert r.status_code == 200, r.text
        time.sleep(5)
        assert len(alerts_of(rx, "registry-changed")) == 1
        rx.start()
        got = wait_alerts(rx, "registry-changed", 2, timeout=60)
        time.sleep(3)
        assert len(alerts_of(rx, "registry-changed")) == 2
        assert got[1]["data"]["alertContext"]["correlationId"] != got[0]["data"]["alertContext"]["correlationId"]


def test_refusals_store_nothing(server, az):
    owner, reg = setup_registry(server, az, "refusereg")
    arm = Arm(server, owner)
    base = f"/subscriptions/{arm.subscription}/resourceGroups/rg1/providers/Microsoft.Insights"

    p = az("monitor", "action-group", "create", "-g", "rg1", "-n", "mail", "--short-name", "mail",
           "--action", "email", "boss", "boss@example.com", ok=False)
    assert p.returncode != 0 and "does not send email" in p.stderr, p.stderr

    with HttpReceiver() as rx:
        az("monitor", "action-group", "create", "-g", "rg1", "-n", "ops", "--short-name", "ops",
           "--action", "webhook", "hook", rx.url)
        common = ["-g", "rg1", "--scopes", reg["id"], "--window-size", "5m", "--evaluation-frequency", "1m",
                  "--action", "ops"]
        p = az("monitor", "metrics", "alert", "create", "-n", "dyn", *common,
               "--condition", "avg PulledBytes > dynamic medium 2 of 4", ok=False)
        assert p.returncode != 0 and "static thresholds" in p.stderr, p.stderr
        p = az("monitor", "metrics", "alert", "create", "-n", "cpu", *common,
               "--condition", "avg CpuPercent > 90", ok=False)
        assert p.returncode != 0 and "CpuPercent" in p.stderr and "not a metric" in p.stderr, p.stderr

        good = {"location": "global", "properties": {
            "severity": 3, "enabled": True, "scopes": [reg["id"]], "evaluationFrequency": "PT1M",
            "windowSize": "PT5M", "criteria": {
                "odata.type": "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria",
                "allOf": [{"criterionType": "StaticThresholdCriterion", "name": "c", "metricName": "PulledBytes",
                           "operator": "GreaterThan", "threshold": 5, "timeAggregation": "Total"}]},
            "actions": []}}
        bad_cases = {
            "operator": ("/properties/criteria/allOf/0/operator", "Bigger", "InvalidOperator"),
            "threshold": ("/properties/criteria/allOf/0/threshold", "lots", "InvalidThreshold"),
            "window": ("/properties/windowSize", "PT7M", "InvalidDuration"),
            "aggregation": ("/properties/criteria/allOf/0/timeAggregation", "Median", "InvalidTimeAggregation"),
        }
        for name, (pointer, value, code) in bad_cases.items():
            body = json.loads(json.dumps(good))
            parts = pointer.strip("/").split("/")
            cur = body
            for k in parts[:-1]:
                cur = cur[int(k)] if k.isdigit() else cur[k]
            cur[parts[-1]] = value
            r = arm.request("PUT", f"{base}/metricAlerts/bad-{name}", body, api_version="2018-03-01")
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == code, r.text
        # An email receiver through the REST API, and a rule naming a missing action group.
        r = arm.request("PUT", f"{base}/actionGroups/mail2", {"location": "Global", "properties": {
            "groupShortName": "m", "enabled": True, "emailReceivers": [{"name": "e", "emailAddress": "a@b.c"}]}},
            api_version="2023-01-01")
        assert r.status_code == 400 and r.json()["error"]["code"] == "UnsupportedReceiver", r.text
        missing = json.loads(json.dumps(good))
        missing["properties"]["actions"] = [{"actionGroupId": f"{base}/actionGroups/nope"}]
        r = arm.request("PUT", f"{base}/metricAlerts/orphan", missing, api_version="2018-03-01")
        assert r.status_code == 400 and r.json()["error"]["code"] == "ActionGroupNotFound", r.text

        # Nothing of it was stored; the valid rule is.
        r = arm.request("PUT", f"{base}/metricAlerts/fine", good, api_version="2018-03-01")
        assert r.status_code == 200, r.text
        names = [x["name"] for x in az("monitor", "metrics", "alert", "list", "-g", "rg1", json_out=True).json]
        assert names == ["fine"], names
        groups = [x["name"] for x in az("monitor", "action-group", "list", "-g", "rg1", json_out=True).json]
        assert groups == ["ops"], groups
        # Disable and delete as az does them.
        shown = az("monitor", "metrics", "alert", "update", "-g", "rg1", "-n", "fine", "--enabled", "false",
                   json_out=True).json
        assert shown["enabled"] is False, shown
        az("monitor", "metrics", "alert", "delete", "-g", "rg1", "-n", "fine")
        assert az("monitor", "metrics", "alert", "list", "-g", "rg1", json_out=True).json == []
