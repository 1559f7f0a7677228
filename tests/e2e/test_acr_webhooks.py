"""ACR webhooks (issue 12 item 4) with the real `az acr webhook` commands and a real HTTP receiver on loopback:
what is delivered (ACR's push and delete payloads, with the custom header), what is not (other scopes, untag,
disabled webhooks), ping and list-events, secrets only through get-config, deliveries that wait for a receiver
that is down, the SKU limit and refusals, and webhooks going with their registry.
"""
from __future__ import annotations

import json
import time

import pytest

from conftest import Arm, build_image, sp_create
from receivers import HttpReceiver
from test_arm_az import Az

INTERVAL_MS = 100
WEBHOOK_API = "2023-07-01"


@pytest.fixture
def server(moat_factory):
    return moat_factory(extra_args=["--webhook-interval-ms", str(INTERVAL_MS)])


def wait_for(rx: HttpReceiver, pred, timeout: float = 30, what: str = "a delivery"):
    ok = rx.wait_for(lambda reqs: any(pred(r) for r in reqs), timeout=timeout)
    assert ok, f"no {what} within {timeout}s; received: {[r.body[:300] for r in rx.requests]}"
    return next(r for r in rx.requests if pred(r))


def action(r, name: str, **target) -> bool:
    body = r.json()
    return body.get("action") == name and all(body.get("target", {}).get(k) == v for k, v in target.items())


def test_az_acr_webhook_delivers_acrs_payloads(server, tmp_path):
    az = Az(server, tmp_path / "azcfg")
    sp = sp_create(server, "hooks-owner", "Owner")
    az.register_and_login(sp)
    az("acr", "create", "-n", "hooksreg", "-g", "rg1", "--sku", "Basic", "-l", "westeurope")
    with HttpReceiver() as rx:
        uri = rx.url + "hook?code=s3cr3tcode"
        made = az("acr", "webhook", "create", "-r", "hooksreg", "-n", "hookpush", "--uri", uri,
                  "--actions", "push", "delete", "--headers", "X-Hook-Key=k3y-value", "--scope", "hello:*",
                  json_out=True).json
        assert made["name"] == "hookpush" and made["status"] == "enabled", made
        assert sorted(made["actions"]) == ["delete", "push"] and made["scope"] == "hello:*", made
        # The service URI and header values are secrets: never in create, show or list output.
        for out in (json.dumps(made),
                    az("acr", "webhook", "show", "-r", "hooksreg", "-n", "hookpush", "-o", "json").stdout,
                    az("acr", "webhook", "list", "-r", "hooksreg", "-o", "json").stdout):
            assert "s3cr3tcode" not in out and "k3y-value" not in out and rx.url not in out, out
        config = az("acr", "webhook", "get-config", "-r", "hooksreg", "-n", "hookpush", json_out=True).json
        assert config["serviceUri"] == uri and config["customHeaders"] == {"X-Hook-Key": "k3y-value"}, config

        c = server.client(host=f"hooksreg.localhost:{server.port}")
        other = build_image(1, seed="other")
        c.push_image("other", other, tag="v1")  # out of scope
        image = build_image(1, seed="hello")
        c.push_image("hello", image, tag="v1")
        push = wait_for(rx, lambda r: action(r, "push", repository="hello"), what="push delivery")
        body = push.json()
        assert push.path == "/hook?code=s3cr3tcode" and push.method == "POST"
        assert push.header("X-Hook-Key") == "k3y-value"
        assert push.header("Content-Type") == "application/json"
        t = body["target"]
        assert (t["tag"], t["digest"], t["mediaType"]) == ("v1", image.manifest_digest, image.media_type), body
        assert t["size"] == len(image.manifest_bytes) == t["length"], body
        assert body["request"]["method"] == "PUT" and body["request"]["host"] == f"hooksreg.localhost:{server.port}"
        assert body["id"] and body["timestamp"], body

        # Untag fires nothing; a manifest delete fires `delete`.
        c.push_image("hello", image, tag="v2")
        wait_for(rx, lambda r: action(r, "push", repository="hello", tag="v2"), what="second push")
        r = c.request("DELETE", "/v2/hello/manifests/v2", repo="hello")
        assert r.status_code == 202, r.text
        r = c.request("DELETE", f"/v2/hello/manifests/{image.manifest_digest}", repo="hello")
        assert r.status_code == 202, r.text
        deleted = wait_for(rx, lambda r: action(r, "delete", repository="hello"), what="delete delivery")
        assert deleted.json()["target"]["digest"] == image.manifest_digest
        assert deleted.json()["request"]["method"] == "DELETE"
        assert sum(1 for r in rx.requests if r.json().get("action") == "delete") == 1
        assert not [r for r in rx.requests if r.json().get("target", {}).get("repository") == "other"]

        ping = az("acr", "webhook", "ping", "-r", "hooksreg", "-n", "hookpush", json_out=True).json
        got = wait_for(rx, lambda r: r.json().get("action") == "ping", what="ping")
        assert got.json()["id"] == ping["id"], (ping, got.body)

        events = az("acr", "webhook", "list-events", "-r", "hooksreg", "-n", "hookpush", json_out=True).json
        by_id = {e["id"]: e for e in events}
        assert body["id"] in by_id and ping["id"] in by_id, events
        ev = by_id[body["id"]]
        assert ev["eventRequestMessage"]["content"]["action"] == "push", ev
        assert ev["eventRequestMessage"]["headers"]["X-Hook-Key"] == "******", ev
        assert ev["eventResponseMessage"]["statusCode"] == "200", ev
        assert "s3cr3tcode" not in json.dumps(events)

        # Disabled: nothing is delivered; enabled again: the next push is.
        az("acr", "webhook", "update", "-r", "hooksreg", "-n", "hookpush", "--status", "disabled")
        c.push_image("hello", image, tag="v3")
        az("acr", "webhook", "update", "-r", "hooksreg", "-n", "hookpush", "--status", "enabled")
        c.push_image("hello", image, tag="v4")
        wait_for(rx, lambda r: action(r, "push", tag="v4"), what="push after re-enabling")
        assert not [r for r in rx.requests if action(r, "push", tag="v3")]
        # The update kept the secrets.
        assert wait_for(rx, lambda r: action(r, "push", tag="v4")).header("X-Hook-Key") == "k3y-value"

        # Refusals: an action Moat does not serve, a bad name, Basic's limit of 2.
        p = az("acr", "webhook", "create", "-r", "hooksreg", "-n", "hookchart", "--uri", uri,
               "--actions", "chart_push", ok=False)
        assert p.returncode != 0 and "chart_push" in p.stderr, p.stderr
        p = az("acr", "webhook", "create", "-r", "hooksreg", "-n", "hook-1", "--uri", uri, "--actions", "push",
               ok=False)
        assert p.returncode != 0, p.stderr
        az("acr", "webhook", "create", "-r", "hooksreg", "-n", "hooktwo", "--uri", uri, "--actions", "push")
        p = az("acr", "webhook", "create", "-r", "hooksreg", "-n", "hookthree", "--uri", uri,
               "--actions", "push", ok=False)
        assert p.returncode != 0 and "QuotaExceeded" in p.stderr, p.stderr
        az("acr", "webhook", "delete", "-r", "hooksreg", "-n", "hooktwo")
        names = [w["name"] for w in az("acr", "webhook", "list", "-r", "hooksreg", json_out=True).json]
        assert names == ["hookpush"], names


def test_deliveries_wait_for_a_receiver_and_go_with_their_registry(server):
    sp = sp_create(server, "hooks-arm", "Owner")
    arm = Arm(server, sp)
    r = arm.put_registry("hooksdown", {"location": "westeurope", "sku": {"name": "Standard"}})
    assert r.status_code in (200, 201), r.text
    hook = arm.registry_path("hooksdown") + "/webhooks/hookdown"
    with HttpReceiver() as rx:
        r = arm.request("PUT", hook, {"location": "westeurope", "properties": {
            "serviceUri": rx.url, "actions": ["push"], "scope": ""}}, api_version=WEBHOOK_API)
        assert r.status_code in (200, 201), r.text
        assert "serviceUri" not in r.json()["properties"], r.json()
        # Refusals in ARM's form, nothing stored.
        for body, code in ((({"location": "westeurope", "properties": {"actions": ["push"]}}), "serviceUri"),
                           ({"location": "westeurope", "properties": {"serviceUri": rx.url, "actions": ["quarantine"]}},
                            "quarantine"),
                           ({"location": "eastus", "properties": {"serviceUri": rx.url, "actions": ["push"]}},
                            "location")):
            bad = arm.request("PUT", arm.registry_path("hooksdown") + "/webhooks/hookbad", body,
                              api_version=WEBHOOK_API)
            assert bad.status_code == 400 and code in bad.text, bad.text
        listed = arm.request("GET", arm.registry_path("hooksdown") + "/webhooks", api_version=WEBHOOK_API).json()
        assert [w["name"] for w in listed["value"]] == ["hookdown"], listed

        rx.stop()
        c = server.client(host=f"hooksdown.localhost:{server.port}")
        c.push_image("app", build_image(1, seed="down"), tag="v1")
        # The first attempt fails (connection refused) and is shown as such.
        deadline = time.time() + 20
        while time.time() < deadline:
            ev = arm.request("POST", hook + "/listEvents", api_version=WEBHOOK_API).json()["value"]
            if ev and ev[0].get("eventResponseMessage"):
                break
            time.sleep(0.2)
        assert ev and ev[0]["eventResponseMessage"]["statusCode"] == "", ev
        rx.start()
        got = wait_for(rx, lambda r: action(r, "push", repository="app", tag="v1"), timeout=30,
                       what="delivery after the receiver came back")
        assert got.json()["target"]["tag"] == "v1"

        # listEvents pages, newest first, through nextLink (POSTed as az does).
        pings = [arm.request("POST", hook + "/ping", api_version=WEBHOOK_API).json()["id"] for _ in range(2)]
        wait_for(rx, lambda r: r.json().get("id") == pings[-1], what="second ping")
        r = arm.request("POST", hook + "/listEvents", api_version=WEBHOOK_API, params={"$top": "1"})
        ids = []
        while True:
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["value"]) <= 1, page
            ids += [e["id"] for e in page["value"]]
            if not page.get("nextLink"):
                break
            r = arm.session.post(page["nextLink"], headers={"Authorization": "Bearer " + arm.token}, timeout=60)
        assert ids[:2] == pings[::-1] and len(ids) == 3 and len(set(ids)) == 3, (ids, pings)

    # A deleted registry takes its webhooks (and their queue) with it.
    r = arm.request("DELETE", arm.registry_path("hooksdown"))
    assert r.status_code in (200, 202, 204), r.text
    r = arm.put_registry("hooksdown", {"location": "westeurope", "sku": {"name": "Standard"}})
    assert r.status_code in (200, 201), r.text
    listed = arm.request("GET", arm.registry_path("hooksdown") + "/webhooks", api_version=WEBHOOK_API).json()
    assert listed["value"] == [], listed
