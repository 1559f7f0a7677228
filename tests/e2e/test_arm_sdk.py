"""The real Azure management SDK against Moat's ARM + AAD endpoints.

azure-identity's ClientSecretCredential gets its token from Moat's AAD-shaped token service, and
azure-mgmt-containerregistry 15.0.0 (api-version 2025-11-01, in .venv, the suite's own python) drives the
registries API: create, read, update (public network access, the export policy, admin user), the export rule's
refusals, lists, name checks, credentials, usages, delete, roles. SDK 14.0.0 (api-version 2025-04-01) runs the core
flow from its own venv (.venv-sdk14) through arm_sdk_flow.py. scripts/test installs both; a missing SDK fails.
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.parse

import pytest

from conftest import (EXPORTS_NEED_PE, LAST_PE_KEPT, REPO_ROOT, Arm, assert_arm_error, azure_env,
                      connection_status, create_private_endpoint, make_session, next_pe_address, sp_create,
                      venv_python)

MAX_LRO_SECONDS = 10.0  # generous; the SDK's default poll interval is 30 s, so a missing Retry-After shows


@pytest.fixture
def sdk():
    """The azure SDK modules (15.0.0), or a failure saying how to get them."""
    try:
        import azure.core.exceptions as exceptions
        import azure.identity as identity
        import azure.mgmt.containerregistry as acr
        from azure.core.pipeline.policies import SansIOHTTPPolicy
        from azure.mgmt.containerregistry import models
    except ImportError as e:
        pytest.fail(f"the Azure SDK is not installed in this python ({e}): run scripts/test")
    assert acr.__version__ == "15.0.0", f"expected azure-mgmt-containerregistry 15.0.0, got {acr.__version__}"

    class Record(SansIOHTTPPolicy):
        """Records (method, url, status, headers) of every request a client sends, polls included."""

        def __init__(self):
            self.seen = []

        def on_response(self, request, response):
            r = request.http_request
            self.seen.append((r.method, r.url, response.http_response.status_code,
                              dict(response.http_response.headers)))

    class Sdk:
        pass

    s = Sdk()
    s.exceptions, s.identity, s.acr, s.models, s.Record = exceptions, identity, acr, models, Record
    return s


class Env:
    """A server with an Owner and a Reader service principal and SDK clients for them."""

    def __init__(self, server, sdk, monkeypatch):
        self.server, self.sdk = server, sdk
        # Trust comes from connection_verify= alone here (the machine may set REQUESTS_CA_BUNDLE to the system
        # bundle; requests would prefer it for verify=True): arm_sdk_flow.py covers the REQUESTS_CA_BUNDLE way.
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        self.ca = str(server.ca_path)
        self.base = server.base_url
        self.owner = sp_create(server, "sdk-owner", "Owner")
        self.subscription = Arm(server, self.owner).subscription
        self.record = sdk.Record()

    def credential(self, sp, password=None):
        return self.sdk.identity.ClientSecretCredential(
            sp["tenant"], sp["appId"], password or sp["password"], authority=self.base,
            disable_instance_discovery=True, connection_verify=self.ca)

    def client(self, sp=None, password=None, **kw):
        sp = sp or self.owner
        return self.sdk.acr.ContainerRegistryManagementClient(
            self.credential(sp, password), self.subscription, base_url=self.base, connection_verify=self.ca,
            per_call_policies=[self.record], **kw)


@pytest.fixture
def env(moat, sdk, monkeypatch):
    return Env(moat, sdk, monkeypatch)


def timed(what, poller):
    t0 = time.monotonic()
    result = poller.result()
    dt = time.monotonic() - t0
    assert dt < MAX_LRO_SECONDS, f"{what}: the LRO took {dt:.1f}s (is Retry-After sent?)"
    return result


def exports(reg):
    return reg.policies.export_policy.status if reg.policies and reg.policies.export_policy else None


def expect_http_error(sdk, fn, status, code, message=None):
    with pytest.raises(sdk.exceptions.HttpResponseError) as ei:
        r = fn()
        if hasattr(r, "result"):
            r.result()
    e = ei.value
    assert e.status_code == status, f"expected {status} {code}, got {e.status_code}: {e}"
    assert e.error is not None and e.error.code == code, f"expected code {code}: {e}"
    if message is not None:
        assert e.error.message == message, f"{e.error.message!r} != {message!r}"
    return e


def test_sdk15_export_policy_flow(env, sdk):
    m = sdk.models
    c = env.client()
    name, rg = "sdkreg15", "rg1"
    port = env.server.port

    reg = timed("create", c.registries.begin_create(
        rg, name, m.Registry(location="westeurope", sku=m.Sku(name="Premium"), admin_user_enabled=False)))
    assert reg.name == name and reg.sku.name == "Premium" and reg.location == "westeurope"
    assert reg.provisioning_state == "Succeeded", reg.provisioning_state
    assert reg.login_server == f"{name}.localhost:{port}", reg.login_server
    assert reg.public_network_access == "Enabled" and exports(reg) == "enabled"
    assert reg.id == (f"/subscriptions/{env.subscription}/resourceGroups/{rg}/providers/"
                      f"Microsoft.ContainerRegistry/registries/{name}"), reg.id

    # The SDK's wire traffic: api-version 2025-11-01; PUT answered 201 + Azure-AsyncOperation + Retry-After.
    puts = [x for x in env.record.seen if x[0] == "PUT"]
    assert puts and puts[0][2] == 201, puts
    hdrs = {k.lower(): v for k, v in puts[0][3].items()}
    assert hdrs.get("retry-after") == "1" and hdrs.get("azure-asyncoperation"), hdrs
    versions = {urllib.parse.parse_qs(urllib.parse.urlsplit(u).query).get("api-version", [None])[0]
                for meth, u, _, _ in env.record.seen if "/registries/" in u and meth in ("PUT", "GET")}
    assert versions == {"2025-11-01"}, versions

    got = c.registries.get(rg, name)
    assert got.name == name and got.sku.name == "Premium" and exports(got) == "enabled"

    reg = timed("disable public access", c.registries.begin_update(
        rg, name, m.RegistryUpdateParameters(public_network_access="Disabled")))
    assert reg.public_network_access == "Disabled" and exports(reg) == "enabled"

    # Exports need an approved private endpoint connection first (the endpoint is made over raw ARM).
    disable = m.RegistryUpdateParameters(policies=m.Policies(export_policy=m.ExportPolicy(status="disabled")))
    e = expect_http_error(sdk, lambda: c.registries.begin_update(rg, name, disable), 400, "BadRequest",
                          EXPORTS_NEED_PE.format(name=name))
    assert e.error.target == "policies.exportPolicy", e.error.target
    assert exports(c.registries.get(rg, name)) == "enabled"
    pe = create_private_endpoint(Arm(env.server, env.owner), name, rg)
    got = c.registries.get(rg, name)
    assert [(x.name, x.private_link_service_connection_state.status) for x in got.private_endpoint_connections] \
        == [(pe["connectionName"], "Approved")], got.private_endpoint_connections

    reg = timed("disable exports", c.registries.begin_update(rg, name, disable))
    assert exports(reg) == "disabled" and reg.public_network_access == "Disabled" and reg.sku.name == "Premium"
    got = c.registries.get(rg, name)
    assert exports(got) == "disabled" and got.public_network_access == "Disabled"

    # While exports are disabled: no public access, no SKU change.
    e = expect_http_error(sdk, lambda: c.registries.begin_update(
        rg, name, m.RegistryUpdateParameters(public_network_access="Enabled")), 400, "BadRequest",
        f"Enabling public network access is not supported because the registry '{name}' has exports disabled.")
    assert e.error.target, "the refusal names no target"
    expect_http_error(sdk, lambda: c.registries.begin_update(
        rg, name, m.RegistryUpdateParameters(sku=m.Sku(name="Standard"))), 400, "BadRequest")
    got = c.registries.get(rg, name)
    assert (got.sku.name, got.public_network_access, exports(got)) == ("Premium", "Disabled", "disabled")

    # Both at once (as `az acr update --public-network-enabled true --allow-exports true` sends): allowed.
    reg = timed("enable both", c.registries.begin_update(rg, name, m.RegistryUpdateParameters(
        public_network_access="Enabled", policies=m.Policies(export_policy=m.ExportPolicy(status="enabled")))))
    assert (reg.public_network_access, exports(reg)) == ("Enabled", "enabled")

    # PUT (replacing the existing registry, whose approved endpoint stays) with public access disabled and exports
    # disabled in the body: allowed.
    reg = timed("put disabled", c.registries.begin_create(rg, name, m.Registry(
        location="westeurope", sku=m.Sku(name="Premium"), public_network_access="Disabled",
        policies=m.Policies(export_policy=m.ExportPolicy(status="disabled")))))
    assert (reg.sku.name, reg.public_network_access, exports(reg)) == ("Premium", "Disabled", "disabled")
    # A PUT is a replacement: without `policies` exports are enabled again (as ACR does).
    reg = timed("put without policies", c.registries.begin_create(rg, name, m.Registry(
        location="westeurope", sku=m.Sku(name="Premium"), public_network_access="Disabled")))
    assert (reg.public_network_access, exports(reg)) == ("Disabled", "enabled")
    assert exports(c.registries.get(rg, name)) == "enabled"

    # A PUT that asks for exports disabled with public access enabled: refused.
    expect_http_error(sdk, lambda: c.registries.begin_create(rg, name, m.Registry(
        location="westeurope", sku=m.Sku(name="Premium"),
        policies=m.Policies(export_policy=m.ExportPolicy(status="disabled")))), 400, "BadRequest")

    # A PUT creating a new registry with exports disabled: refused (it cannot have an endpoint yet), nothing made.
    expect_http_error(sdk, lambda: c.registries.begin_create(rg, "sdknew15", m.Registry(
        location="westeurope", sku=m.Sku(name="Premium"), public_network_access="Disabled",
        policies=m.Policies(export_policy=m.ExportPolicy(status="disabled")))), 400, "BadRequest",
        EXPORTS_NEED_PE.format(name="sdknew15"))
    with pytest.raises(sdk.exceptions.ResourceNotFoundError):
        c.registries.get(rg, "sdknew15")

    # Standard registry (another resource group): exports cannot be disabled, even with public access off.
    std = timed("create standard", c.registries.begin_create(
        "rg2", "sdkstd15", m.Registry(location="westeurope", sku=m.Sku(name="Standard"))))
    assert std.sku.name == "Standard"
    e = expect_http_error(sdk, lambda: c.registries.begin_update("rg2", "sdkstd15", m.RegistryUpdateParameters(
        public_network_access="Disabled", policies=m.Policies(export_policy=m.ExportPolicy(status="disabled")))),
        400, "BadRequest")
    assert e.error.target, "the refusal names no target"
    assert exports(c.registries.get("rg2", "sdkstd15")) == "enabled"

    # Lists.
    all_names = sorted(r.name for r in c.registries.list())
    assert all_names.count(name) == 1 and all_names.count("sdkstd15") == 1, all_names
    rg1 = [r.name for r in c.registries.list_by_resource_group(rg)]
    assert name in rg1 and "sdkstd15" not in rg1, rg1
    rg2 = [r.name for r in c.registries.list_by_resource_group("rg2")]
    assert rg2 == ["sdkstd15"], rg2

    # Name availability.
    req = lambda n: m.RegistryNameCheckRequest(name=n, type="Microsoft.ContainerRegistry/registries")  # noqa: E731
    taken = c.registries.check_name_availability(req(name))
    assert taken.name_available is False and taken.reason == "AlreadyExists", taken
    free = c.registries.check_name_availability(req("sdkfree15"))
    assert free.name_available is True, free
    bad = c.registries.check_name_availability(req("no-dashes_allowed"))
    assert bad.name_available is False and bad.reason == "Invalid", bad

    # Usages.
    usages = {u.name: u for u in c.registries.list_usages(rg, name).value}
    assert "Size" in usages and usages["Size"].limit > 0 and usages["Size"].current_value >= 0, usages

    # Delete; a second delete of a missing registry is fine (204), a GET is 404.
    timed("delete", c.registries.begin_delete("rg2", "sdkstd15"))
    with pytest.raises(sdk.exceptions.ResourceNotFoundError):
        c.registries.get("rg2", "sdkstd15")
    timed("delete again", c.registries.begin_delete("rg2", "sdkstd15"))
    assert [r.name for r in c.registries.list()] == [name] or "sdkstd15" not in [r.name for r in c.registries.list()]


def test_sdk15_admin_credentials(env, sdk):
    m = sdk.models
    c = env.client()
    name, rg = "sdkadmin15", "rg1"
    timed("create", c.registries.begin_create(rg, name, m.Registry(location="westeurope", sku=m.Sku(name="Basic"))))

    # Admin user disabled: no credentials.
    with pytest.raises(sdk.exceptions.HttpResponseError) as ei:
        c.registries.list_credentials(rg, name)
    assert ei.value.status_code == 400, ei.value

    reg = timed("enable admin", c.registries.begin_update(rg, name, m.RegistryUpdateParameters(admin_user_enabled=True)))
    assert reg.admin_user_enabled is True
    creds = c.registries.list_credentials(rg, name)
    assert creds.username == name, creds.username
    pw = {p.name: p.value for p in creds.passwords}
    assert set(pw) == {"password", "password2"} and pw["password"] and pw["password2"] != pw["password"], pw

    regen = c.registries.regenerate_credential(rg, name, m.RegenerateCredentialParameters(name="password"))
    new = {p.name: p.value for p in regen.passwords}
    assert new["password"] != pw["password"] and new["password2"] == pw["password2"], (pw, new)
    again = {p.name: p.value for p in c.registries.list_credentials(rg, name).passwords}
    assert again == new
    regen2 = c.registries.regenerate_credential(rg, name, m.RegenerateCredentialParameters(name="password2"))
    new2 = {p.name: p.value for p in regen2.passwords}
    assert new2["password"] == new["password"] and new2["password2"] != new["password2"], (new, new2)

    # Admin user disabled again: no credentials.
    timed("disable admin", c.registries.begin_update(rg, name, m.RegistryUpdateParameters(admin_user_enabled=False)))
    with pytest.raises(sdk.exceptions.HttpResponseError) as ei:
        c.registries.list_credentials(rg, name)
    assert ei.value.status_code == 400, ei.value

    timed("delete", c.registries.begin_delete(rg, name))


def test_sdk15_admin_credentials_log_in_to_the_registry(env, sdk):
    """What listCredentials returns is what `docker login NAME.localhost:PORT -u NAME -p PASSWORD` uses (as on ACR):
    the admin user's passwords must open the registry's data plane, and a regenerated-away one must not."""
    m = sdk.models
    c = env.client()
    name, rg = "sdklogin15", "rg1"
    login_server = f"{name}.localhost:{env.server.port}"
    reg = timed("create", c.registries.begin_create(rg, name, m.Registry(
        location="westeurope", sku=m.Sku(name="Basic"), admin_user_enabled=True)))
    assert reg.admin_user_enabled is True and reg.login_server == login_server
    pw = {p.name: p.value for p in c.registries.list_credentials(rg, name).passwords}

    def token_status(password):
        s = make_session(env.base, login_server, env.ca)
        r = s.get(env.base + "/oauth2/token", params={"service": login_server, "scope": "repository:app:pull,push"},
                  auth=(name, password), headers={"Host": login_server}, timeout=30)
        return r.status_code, r.text[:300]

    assert token_status(pw["password"])[0] == 200, f"admin password refused: {token_status(pw['password'])}"
    assert token_status(pw["password2"])[0] == 200, f"admin password2 refused: {token_status(pw['password2'])}"
    regen = c.registries.regenerate_credential(rg, name, m.RegenerateCredentialParameters(name="password"))
    new = {p.name: p.value for p in regen.passwords}
    assert token_status(new["password"])[0] == 200, token_status(new["password"])
    assert token_status(pw["password"])[0] == 401, "a regenerated-away password still works"
    timed("disable admin", c.registries.begin_update(rg, name, m.RegistryUpdateParameters(admin_user_enabled=False)))
    assert token_status(new["password"])[0] == 401, "admin password works with the admin user disabled"


def test_sdk15_roles_and_authentication(env, sdk):
    m = sdk.models
    c = env.client()
    name, rg = "sdkroles15", "rg1"
    timed("create", c.registries.begin_create(rg, name, m.Registry(location="westeurope", sku=m.Sku(name="Premium"))))

    reader = sp_create(env.server, "sdk-reader", "Reader")
    rc = env.client(reader)
    assert rc.registries.get(rg, name).name == name
    assert name in [r.name for r in rc.registries.list()]
    e = expect_http_error(sdk, lambda: rc.registries.begin_update(
        rg, name, m.RegistryUpdateParameters(public_network_access="Disabled")), 403, "AuthorizationFailed")
    assert reader["appId"] in e.error.message, e.error.message
    expect_http_error(sdk, lambda: rc.registries.begin_create(
        rg, "sdkroles15b", m.Registry(location="westeurope", sku=m.Sku(name="Basic"))), 403, "AuthorizationFailed")
    expect_http_error(sdk, lambda: rc.registries.begin_delete(rg, name), 403, "AuthorizationFailed")
    assert c.registries.get(rg, name).public_network_access == "Enabled"

    nobody = sp_create(env.server, "sdk-nobody", role=None)
    nc = env.client(nobody)
    with pytest.raises(sdk.exceptions.HttpResponseError) as ei:
        nc.registries.get(rg, name)
    assert ei.value.status_code == 403, ei.value

    # A registry-scoped Contributor can change that registry but not another one.
    timed("create other", c.registries.begin_create(rg, "sdkother15",
                                                    m.Registry(location="westeurope", sku=m.Sku(name="Basic"))))
    scoped = sp_create(env.server, "sdk-scoped", "Contributor",
                       scope=f"/subscriptions/{env.subscription}/resourceGroups/{rg}/providers/"
                             f"Microsoft.ContainerRegistry/registries/{name}")
    sc = env.client(scoped)
    reg = timed("scoped update", sc.registries.begin_update(rg, name, m.RegistryUpdateParameters(tags={"k": "v"})))
    assert reg.tags == {"k": "v"}
    with pytest.raises(sdk.exceptions.HttpResponseError) as ei:
        sc.registries.begin_update(rg, "sdkother15", m.RegistryUpdateParameters(tags={"k": "v"})).result()
    assert ei.value.status_code == 403, ei.value

    # Wrong secret: azure-identity raises ClientAuthenticationError with AAD's description.
    bad = env.client(env.owner, password="not-the-secret")
    with pytest.raises(sdk.exceptions.ClientAuthenticationError) as ei:
        bad.registries.get(rg, name)
    assert "7000215" in str(ei.value) or "secret" in str(ei.value).lower(), str(ei.value)
    # Unknown client id.
    ghost = dict(env.owner, appId="00000000-0000-0000-0000-00000000dead")
    with pytest.raises(sdk.exceptions.ClientAuthenticationError):
        env.client(ghost).registries.get(rg, name)


def test_sdk15_request_validation(env, sdk):
    """The ARM error envelopes for malformed requests, through the SDK where it can send them, else raw."""
    m = sdk.models
    c = env.client()
    rg = "rg1"
    expect_http_error(sdk, lambda: c.registries.begin_create(
        rg, "bad-name", m.Registry(location="westeurope", sku=m.Sku(name="Premium"))), 400, "InvalidResourceName")
    expect_http_error(sdk, lambda: c.registries.begin_create(
        rg, "classic15", m.Registry(location="westeurope", sku=m.Sku(name="Classic"))), 400, "InvalidSku")
    with pytest.raises(sdk.exceptions.ResourceNotFoundError):
        c.registries.get(rg, "missing15")

    timed("create", c.registries.begin_create(rg, "valid15", m.Registry(location="westeurope",
                                                                         sku=m.Sku(name="Premium"))))
    old = env.client(api_version="2019-05-01")
    expect_http_error(sdk, lambda: old.registries.get(rg, "valid15"), 400, "NoRegisteredProviderFound")

    arm = Arm(env.server, env.owner)
    path = arm.registry_path("valid15", rg)
    assert_arm_error(arm.request("GET", path, api_version=None), 400, "MissingApiVersionParameter")
    assert_arm_error(arm.request("GET", path, api_version="2019-05-01"), 400, "NoRegisteredProviderFound")
    assert_arm_error(arm.request("PATCH", path, {"properties": {"noSuchProperty": True}}), 400,
                     "InvalidRequestContent")
    assert_arm_error(arm.request("PUT", arm.registry_path("classic15b", rg),
                                 {"location": "westeurope", "sku": {"name": "Classic"}}), 400, "InvalidSku")
    # Without a token: 401 with an ARM envelope.
    r = make_session(env.base, verify=env.ca).get(env.base + path, params={"api-version": "2025-11-01"},
                                                  timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"], r.text


def test_sdk15_private_endpoint_connections(env, sdk):
    """The registry side of private endpoints through the SDK: privateEndpointConnections list/get/approve/reject/
    delete and privateLinkResources, with the export rule's hold on the last approved connection."""
    m = sdk.models
    c = env.client()
    arm = Arm(env.server, env.owner)
    name, rg = "sdkpe15", "rg1"
    timed("create", c.registries.begin_create(rg, name, m.Registry(
        location="westeurope", sku=m.Sku(name="Premium"), public_network_access="Disabled")))
    assert list(c.private_endpoint_connections.list(rg, name)) == []

    pending = create_private_endpoint(arm, name, rg, manual=True, request_message="please")
    auto = create_private_endpoint(arm, name, rg)
    conns = {x.name: x for x in c.private_endpoint_connections.list(rg, name)}
    assert set(conns) == {pending["connectionName"], auto["connectionName"]}, conns
    p = conns[pending["connectionName"]]
    assert (p.private_link_service_connection_state.status, p.private_link_service_connection_state.description) \
        == ("Pending", "please"), p
    assert p.private_endpoint.id.lower() == pending["id"].lower() and p.provisioning_state == "Succeeded", p
    assert conns[auto["connectionName"]].private_link_service_connection_state.status == "Approved"

    def set_state(conn_name, status, description):
        return c.private_endpoint_connections.begin_create_or_update(rg, name, conn_name, m.PrivateEndpointConnection(
            private_link_service_connection_state=m.PrivateLinkServiceConnectionState(
                status=status, description=description)))

    got = timed("approve", set_state(pending["connectionName"], "Approved", "ok by sdk"))
    assert got.private_link_service_connection_state.status == "Approved", got
    assert c.private_endpoint_connections.get(rg, name, pending["connectionName"]) \
        .private_link_service_connection_state.description == "ok by sdk"

    reg = timed("disable exports", c.registries.begin_update(rg, name, m.RegistryUpdateParameters(
        policies=m.Policies(export_policy=m.ExportPolicy(status="disabled")))))
    assert exports(reg) == "disabled"
    # Two approved: one may be rejected; then the other is the last and stays.
    got = timed("reject", set_state(auto["connectionName"], "Rejected", "no"))
    assert got.private_link_service_connection_state.status == "Rejected", got
    last = LAST_PE_KEPT.format(name=name)
    expect_http_error(sdk, lambda: set_state(pending["connectionName"], "Rejected", "no"), 400, "BadRequest", last)
    expect_http_error(sdk, lambda: c.private_endpoint_connections.begin_delete(rg, name, pending["connectionName"]),
                      400, "BadRequest", last)
    # A rejected connection cannot be approved again.
    expect_http_error(sdk, lambda: set_state(auto["connectionName"], "Approved", "again"), 400, "BadRequest",
                      "A rejected private endpoint connection cannot be approved. Delete the private endpoint and "
                      "create it again.")
    states = {x.name: x.private_link_service_connection_state.status
              for x in c.private_endpoint_connections.list(rg, name)}
    assert states == {pending["connectionName"]: "Approved", auto["connectionName"]: "Rejected"}, states
    with pytest.raises(sdk.exceptions.ResourceNotFoundError):
        c.private_endpoint_connections.get(rg, name, name + ".00000000000000000000000000000000")

    # privateLinkResources
    links = list(c.registries.list_private_link_resources(rg, name))
    assert [(x.name, x.properties.group_id, x.properties.required_members, x.properties.required_zone_names)
            for x in links] == \
        [("registry", "registry", ["registry", "registry_data_westeurope"], ["privatelink.localhost"])], links
    one = c.registries.get_private_link_resource(rg, name, "registry")
    assert one.properties.group_id == "registry", one
    with pytest.raises(sdk.exceptions.ResourceNotFoundError):
        c.registries.get_private_link_resource(rg, name, "blob")

    # Exports enabled again: the last connection may go.
    timed("enable exports", c.registries.begin_update(rg, name, m.RegistryUpdateParameters(
        policies=m.Policies(export_policy=m.ExportPolicy(status="enabled")))))
    timed("delete connection", c.private_endpoint_connections.begin_delete(rg, name, pending["connectionName"]))
    assert [x.name for x in c.private_endpoint_connections.list(rg, name)] == [auto["connectionName"]]
    assert [connection_status(x) for x in arm.connections(name, rg)] == ["Rejected"]


@pytest.mark.parametrize("venv,sdk_version,api_version", [
    (".venv-sdk14", "14.0.0", "2025-04-01"),
    (".venv", "15.0.0", "2025-11-01"),
])
def test_sdk_core_flow_subprocess(moat, venv, sdk_version, api_version):
    """The core flow (create, disable public access, a private endpoint, disable exports, refused re-enable) with
    each SDK version, in its own venv, trusting Moat's CA through REQUESTS_CA_BUNDLE."""
    py = venv_python(venv)
    owner = sp_create(moat, "flow-owner", "Contributor")
    sub = Arm(moat, owner).subscription
    name = "flowreg" + sdk_version.split(".")[0]
    cfg = {"base": moat.base_url, "ca": str(moat.ca_path), "tenant": owner["tenant"], "app_id": owner["appId"],
           "password": owner["password"], "subscription": sub, "name": name, "rg": "rg1",
           "pe_address": next_pe_address(moat)}
    p = subprocess.run([py, str(REPO_ROOT / "tests" / "e2e" / "arm_sdk_flow.py"), json.dumps(cfg)],
                       capture_output=True, text=True, timeout=300, env=azure_env(moat))
    detail = f"exit {p.returncode}\n--- stdout\n{p.stdout[-6000:]}\n--- stderr\n{p.stderr[-6000:]}"
    assert p.returncode == 0, detail
    steps = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    by = {s["step"]: s for s in steps}
    assert by["versions"]["sdk"] == sdk_version, detail
    assert by.get("done", {}).get("ok") is True, detail
    assert by["done"]["api_versions"] == [api_version], detail
    assert by["done"]["polled_operation_status"] is True, detail
    assert by["enable_public_refused"]["code"] == "BadRequest", detail
    assert by["disable_exports_refused_without_endpoint"]["message"] == EXPORTS_NEED_PE.format(name=name), detail
    # The endpoint the flow made over raw ARM is the registry's one approved connection.
    conns = Arm(moat, owner).connections(name)
    assert [(c["name"], connection_status(c)) for c in conns] == \
        [(by["endpoint_created"]["connection"], "Approved")], conns
