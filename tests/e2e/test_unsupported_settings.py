"""Every ACR setting Moat accepts is enforced; one it does not enforce is refused when a request turns it on.

The refusal is ARM's JSON, 400 `FeatureNotSupported`, naming the setting ("Moat does not enforce
quarantinePolicy; it cannot be enabled ..."), through the real `az acr config ...` commands, the SDK and raw
requests in several spellings; a request that sends the inert values (az acr create, a PUT of every default, a
GET echoed back) keeps working, and nothing a refused request names is stored. `azureADAuthenticationAsArmPolicy`
is enforced: disabled, `/oauth2/exchange` takes tokens for ACR's audience only.
"""
from __future__ import annotations

import pytest

from conftest import ARM_SCOPE, Arm, aad_token, assert_arm_error, make_session, sp_create
from test_acr_v1 import ACR_SCOPE
from test_arm_az import Az
from test_arm_sdk import env, expect_http_error, sdk  # noqa: F401  (env and sdk are fixtures)


def not_enforced(name: str) -> str:
    return f"Moat does not enforce {name}; it cannot be enabled"


@pytest.fixture
def az(moat, tmp_path):
    return Az(moat, tmp_path / "azcfg")


def test_az_config_commands_refuse_what_moat_does_not_enforce(moat, az):
    sp = sp_create(moat, "az-unsupported", "Owner")
    az.register_and_login(sp)
    name = "unsupp1"
    az("acr", "create", "-n", name, "-g", "rg1", "--sku", "Premium", "-l", "westeurope", json_out=True)

    # az 2.91 itself allows only `--status disabled` for content trust (deprecated); enabling it is refused
    # below through the SDK and raw requests, and the inert value goes through az here.
    trust = az("acr", "config", "content-trust", "update", "-r", name, "--status", "disabled", "--yes",
               json_out=True).json
    assert trust["status"] == "disabled", trust

    # Nothing of the refused requests was stored; the same commands with the inert value work.
    assert az("acr", "config", "retention", "show", "-r", name, json_out=True).json["status"] == "disabled"
    assert az("acr", "config", "content-trust", "show", "-r", name, json_out=True).json["status"] == "disabled"
    kept = az("acr", "config", "retention", "update", "-r", name, "--status", "disabled", "--days", "30",
              "--type", "UntaggedManifests", json_out=True).json
    assert (kept["status"], kept["days"]) == ("disabled", 30), kept
    shown = az("acr", "show", "-n", name, json_out=True).json
    policies = shown["policies"]
    assert [policies[k]["status"] for k in ("quarantinePolicy", "trustPolicy", "retentionPolicy",
                                            "softDeletePolicy")] == ["disabled"] * 4, policies
    assert shown["zoneRedundancy"] == "Disabled", shown

    p = az("acr", "create", "-n", "unsupp2", "-g", "rg1", "--sku", "Premium", "--zone-redundancy", "Enabled",
           ok=False)
    assert p.returncode != 0 and not_enforced("zoneRedundancy") in p.stderr, p.stderr
    assert az("acr", "show", "-n", "unsupp2", ok=False).returncode != 0, "a refused create must create nothing"


def test_sdk_patch_of_quarantine_is_refused_and_a_put_of_every_default_works(env, sdk):  # noqa: F811
    m = sdk.models
    c = env.client()
    name, rg = "unsupp3", "rg1"
    defaults = m.Policies(
        quarantine_policy=m.QuarantinePolicy(status="disabled"),
        trust_policy=m.TrustPolicy(type="Notary", status="disabled"),
        retention_policy=m.RetentionPolicy(days=7, status="disabled"),
        export_policy=m.ExportPolicy(status="enabled"),
        azure_ad_authentication_as_arm_policy=m.AzureADAuthenticationAsArmPolicy(status="enabled"))
    reg = c.registries.begin_create(rg, name, m.Registry(
        location="westeurope", sku=m.Sku(name="Premium"), admin_user_enabled=False, policies=defaults,
        identity=m.IdentityProperties(type="None"), encryption=m.EncryptionProperty(status="disabled"),
        zone_redundancy="Disabled", network_rule_bypass_options="AzureServices", public_network_access="Enabled",
        anonymous_pull_enabled=False, data_endpoint_enabled=False,
        network_rule_bypass_allowed_for_tasks=False, role_assignment_mode="LegacyRegistryPermissions")).result()
    assert reg.provisioning_state == "Succeeded" and reg.policies.quarantine_policy.status == "disabled"

    for policies, setting in [
        (m.Policies(quarantine_policy=m.QuarantinePolicy(status="enabled")), "quarantinePolicy"),
        (m.Policies(trust_policy=m.TrustPolicy(type="Notary", status="enabled")), "trustPolicy"),
    ]:
        e = expect_http_error(sdk, lambda: c.registries.begin_update(
            rg, name, m.RegistryUpdateParameters(policies=policies)), 400, "FeatureNotSupported")
        assert e.error.message.startswith(not_enforced(setting)), e.error.message
        assert e.error.target == f"policies.{setting}", e.error.target
    e = expect_http_error(sdk, lambda: c.registries.begin_update(
        rg, name, m.RegistryUpdateParameters(identity=m.IdentityProperties(type="SystemAssigned"))),
        400, "FeatureNotSupported")
    assert e.error.message.startswith(not_enforced("identity")), e.error.message
    e = expect_http_error(sdk, lambda: c.registries.begin_update(
        rg, name, m.RegistryUpdateParameters(role_assignment_mode="AbacRepositoryPermissions")),
        400, "FeatureNotSupported")
    assert e.error.message.startswith(not_enforced("roleAssignmentMode")), e.error.message
    got = c.registries.get(rg, name)
    assert (got.policies.quarantine_policy.status, got.policies.trust_policy.status,
            got.policies.retention_policy.status) == ("disabled", "disabled", "disabled")


# (body, setting) for raw PATCHes: casings, nesting and the settings the SDK does not model.
RAW_REFUSALS = [
    ({"properties": {"policies": {"quarantinePolicy": {"status": "Enabled"}}}}, "quarantinePolicy"),
    ({"properties": {"policies": {"quarantinePolicy": {"status": "ENABLED"}}}}, "quarantinePolicy"),
    ({"properties": {"zoneRedundancy": "enabled"}}, "zoneRedundancy"),
    ({"properties": {"encryption": {"status": "enabled", "keyVaultProperties": {"keyIdentifier": "https://kv/k"}}}},
     "encryption"),
    ({"identity": {"type": "UserAssigned", "userAssignedIdentities": {"/subscriptions/x/id": {}}}}, "identity"),
    ({"properties": {"networkRuleSet": {"defaultAction": "Allow",
                                        "virtualNetworkRules": [{"id": "/subnets/a", "action": "Allow"}]}}},
     "virtualNetworkRules"),
    ({"properties": {"networkRuleBypassAllowedForTasks": True}}, "networkRuleBypassAllowedForTasks"),
    ({"properties": {"metadataSearch": "Enabled"}}, "metadataSearch"),
    ({"properties": {"regionalEndpoints": "enabled"}}, "regionalEndpoints"),
    ({"properties": {"autoGeneratedDomainNameLabelScope": "NoReuse"}}, "autoGeneratedDomainNameLabelScope"),
]


def test_raw_requests_in_every_spelling(moat):
    sp = sp_create(moat, "raw-unsupported", "Owner")
    arm = Arm(moat, sp)
    name = "unsupp4"
    r = arm.put_registry(name, {"location": "westeurope", "sku": {"name": "Premium"}})
    assert r.status_code in (200, 201), r.text
    before = arm.get_registry(name).json()
    for body, setting in RAW_REFUSALS:
        r = arm.patch_registry(name, body)
        assert_arm_error(r, 400, "FeatureNotSupported")
        assert r.json()["error"]["message"].startswith(not_enforced(setting)), (body, r.text)
        # A PUT that turns it on is refused the same way, and a refused PUT changes nothing.
        put = {"location": "westeurope", "sku": {"name": "Premium"}, **body}
        if "properties" in body:
            put["properties"] = {**body["properties"], "adminUserEnabled": True}
        r = arm.put_registry(name, put)
        assert_arm_error(r, 400, "FeatureNotSupported")
    after = arm.get_registry(name).json()
    assert after["properties"] == before["properties"], "a refused request changed the registry"
    # The GET echoed back whole (what a read-modify-write client sends) is accepted.
    echo = {k: after[k] for k in ("location", "sku", "tags", "properties")}
    r = arm.put_registry(name, echo)
    assert r.status_code in (200, 201), r.text


def test_arm_audience_tokens_follow_azure_ad_authentication_as_arm_policy(moat):
    owner = sp_create(moat, "aadarm-owner", "Owner")
    puller = sp_create(moat, "aadarm-puller", "AcrPull")
    arm = Arm(moat, owner)
    s = make_session(moat.base_url, verify=moat.verify)

    def exchange(scope):
        return s.post(f"{moat.base_url}/oauth2/exchange", timeout=30,
                      data={"grant_type": "access_token", "service": moat.login_server,
                            "access_token": aad_token(moat, puller, scope=scope)})

    assert exchange(ARM_SCOPE).status_code == 200, "the policy is enabled by default"
    r = arm.patch_registry("default", {"properties": {"policies": {
        "azureADAuthenticationAsArmPolicy": {"status": "disabled"}}}}, rg="moat")
    assert r.status_code == 200, r.text
    assert r.json()["properties"]["policies"]["azureADAuthenticationAsArmPolicy"]["status"] == "disabled"
    refused = exchange(ARM_SCOPE)
    assert refused.status_code == 401 and "azureADAuthenticationAsArmPolicy" in refused.text, refused.text
    assert exchange(ACR_SCOPE).status_code == 200, "ACR-audience tokens are still exchanged"
    r = arm.patch_registry("default", {"properties": {"policies": {
        "azureADAuthenticationAsArmPolicy": {"status": "enabled"}}}}, rg="moat")
    assert r.status_code == 200 and exchange(ARM_SCOPE).status_code == 200
