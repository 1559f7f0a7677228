"""The core export-policy flow with whatever azure-mgmt-containerregistry the running python has.

Run by test_arm_sdk.py with another venv's python (.venv-sdk14 for 14.0.0), so that two SDK versions can be
tested in one suite. Not a test module itself (pytest collects test_*.py only).

    python arm_sdk_flow.py '{"base": "https://127.0.0.1:PORT", "ca": "...", "tenant": "...", "app_id": "...",
                             "password": "...", "subscription": "...", "name": "reg14", "rg": "rg1",
                             "pe_address": "127.0.0.10"}'

Exports can be disabled only with an approved private endpoint connection: the flow checks the refusal without
one, then creates an endpoint on `pe_address` with a raw ARM PUT (the SDK has no Microsoft.Network client here),
authenticated with the same credential's token.

Prints one JSON object per step (`{"step": ..., ...}`) and finally `{"step": "done", "ok": true, ...}`; exits 1
with a traceback on the first failed check. Trust comes from REQUESTS_CA_BUNDLE only (no connection_verify), so
this also checks the environment-variable way of trusting Moat's CA.
"""
from __future__ import annotations

import importlib
import json
import sys
import time
import urllib.parse

MAX_LRO_SECONDS = 10.0  # the SDK's default poll interval is 30 s: any LRO over this means Retry-After was ignored


def out(**kw):
    print(json.dumps(kw, default=str), flush=True)


def main() -> int:
    cfg = json.loads(sys.argv[1])
    from azure.core.exceptions import HttpResponseError
    from azure.core.pipeline.policies import SansIOHTTPPolicy
    from azure.identity import ClientSecretCredential
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient as C

    try:
        from azure.mgmt.containerregistry import __version__ as sdk_version
    except ImportError:  # pragma: no cover
        from azure.mgmt.containerregistry._version import VERSION as sdk_version
    models = C.models() if hasattr(C, "models") else importlib.import_module("azure.mgmt.containerregistry.models")
    out(step="versions", sdk=sdk_version, models=models.__name__)

    seen = []

    class Record(SansIOHTTPPolicy):
        def on_response(self, request, response):
            r = request.http_request
            seen.append((r.method, r.url, response.http_response.status_code,
                         response.http_response.headers.get("Retry-After")))

    cred = ClientSecretCredential(cfg["tenant"], cfg["app_id"], cfg["password"], authority=cfg["base"],
                                  disable_instance_discovery=True)
    client = C(cred, cfg["subscription"], base_url=cfg["base"], per_call_policies=[Record()])
    rg, name = cfg["rg"], cfg["name"]

    def timed(what, poller):
        t0 = time.monotonic()
        result = poller.result()
        dt = time.monotonic() - t0
        out(step=what, seconds=round(dt, 2))
        assert dt < MAX_LRO_SECONDS, f"{what}: the poller took {dt:.1f}s (Retry-After ignored?)"
        return result

    def state(reg):
        return {"sku": reg.sku.name, "public": reg.public_network_access,
                "exports": reg.policies.export_policy.status if reg.policies and reg.policies.export_policy else None,
                "login_server": reg.login_server, "provisioning_state": reg.provisioning_state}

    reg = timed("create", client.registries.begin_create(
        rg, name, models.Registry(location="westeurope", sku=models.Sku(name="Premium"), admin_user_enabled=False)))
    s = state(reg)
    out(step="created", **s)
    assert reg.name == name and s["sku"] == "Premium" and s["exports"] == "enabled" and s["public"] == "Enabled", s
    assert s["provisioning_state"] == "Succeeded", s

    s = state(client.registries.get(rg, name))
    out(step="get", **s)
    assert s["sku"] == "Premium", s

    reg = timed("disable_public", client.registries.begin_update(
        rg, name, models.RegistryUpdateParameters(public_network_access="Disabled")))
    assert state(reg)["public"] == "Disabled", state(reg)

    disable = models.RegistryUpdateParameters(
        policies=models.Policies(export_policy=models.ExportPolicy(status="disabled")))
    needs_pe = (f"Export policy can only be disabled when registry '{name}' has at least one approved private "
                "endpoint connection. Create and approve a private endpoint first.")
    try:
        client.registries.begin_update(rg, name, disable).result()
    except HttpResponseError as e:
        out(step="disable_exports_refused_without_endpoint", status=e.status_code,
            code=e.error.code if e.error else None, message=e.error.message if e.error else None)
        assert e.status_code == 400 and e.error is not None and e.error.code == "BadRequest", str(e)
        assert e.error.message == needs_pe, f"{e.error.message!r} != {needs_pe!r}"
    else:
        raise AssertionError("exports were disabled without a private endpoint")

    import requests  # azure-core's transport; trusts REQUESTS_CA_BUNDLE like the SDK does here

    token = cred.get_token("https://management.azure.com/.default").token
    registry_id = f"/subscriptions/{cfg['subscription']}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}"
    pe_url = (f"{cfg['base']}/subscriptions/{cfg['subscription']}/resourceGroups/{rg}/providers/"
              f"Microsoft.Network/privateEndpoints/pe-{name}")
    r = requests.put(pe_url, params={"api-version": "2023-09-01"}, headers={"Authorization": "Bearer " + token},
                     json={"location": "westeurope", "properties": {
                         "privateLinkServiceConnections": [{"name": "conn", "properties": {
                             "privateLinkServiceId": registry_id, "groupIds": ["registry"]}}],
                         "ipConfigurations": [{"name": "registry",
                                               "properties": {"privateIPAddress": cfg["pe_address"]}}]}},
                     timeout=30)
    assert r.status_code == 201, f"PUT private endpoint: {r.status_code} {r.text[:500]}"
    conn = r.json()["properties"]["privateLinkServiceConnections"][0]
    out(step="endpoint_created", connection=conn["name"],
        status=conn["properties"]["privateLinkServiceConnectionState"]["status"])
    assert conn["properties"]["privateLinkServiceConnectionState"]["status"] == "Approved", r.text
    reg = client.registries.get(rg, name)
    assert [c.name for c in (reg.private_endpoint_connections or [])] == [conn["name"]], \
        reg.private_endpoint_connections

    reg = timed("disable_exports", client.registries.begin_update(rg, name, disable))
    s = state(reg)
    out(step="exports_disabled", **s)
    assert s["exports"] == "disabled" and s["public"] == "Disabled" and s["sku"] == "Premium", s
    s = state(client.registries.get(rg, name))
    assert s["exports"] == "disabled" and s["public"] == "Disabled", s

    expected = f"Enabling public network access is not supported because the registry '{name}' has exports disabled."
    try:
        client.registries.begin_update(
            rg, name, models.RegistryUpdateParameters(public_network_access="Enabled")).result()
    except HttpResponseError as e:
        out(step="enable_public_refused", status=e.status_code, code=e.error.code if e.error else None,
            message=e.error.message if e.error else None, text=str(e))
        assert e.status_code == 400, e.status_code
        assert e.error is not None and e.error.code == "BadRequest", str(e)
        assert e.error.message == expected, f"{e.error.message!r} != {expected!r}"
    else:
        raise AssertionError("re-enabling public network access with exports disabled was accepted")
    s = state(client.registries.get(rg, name))
    assert s["public"] == "Disabled" and s["exports"] == "disabled", s

    api_versions = sorted({urllib.parse.parse_qs(urllib.parse.urlsplit(u).query).get("api-version", ["?"])[0]
                           for _, u, _, _ in seen if "/registries/" in u})
    polled = any("operationstatuses" in u.lower() for _, u, _, _ in seen)
    lro_retry_after = sorted({ra for m, _, _, ra in seen if m in ("PUT", "PATCH")}, key=str)
    out(step="done", ok=True, api_versions=api_versions, polled_operation_status=polled,
        retry_after=lro_retry_after, requests=len(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
