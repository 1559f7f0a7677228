"""The real az CLI (azure-cli from PyPI, in .venv-az with its own pinned SDKs) against Moat's ARM + AAD.

Each test gets its own AZURE_CONFIG_DIR, trusts Moat's CA through REQUESTS_CA_BUNDLE, turns MSAL instance
discovery and telemetry off, registers Moat as a cloud, and logs in with a service principal from `moat sp create`.
scripts/test installs az; when it is missing these tests fail.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import (EXPORTS_NEED_PE, LAST_PE_KEPT, REPO_ROOT, Arm, azure_env, connection_status,
                      create_private_endpoint, sp_create)

AZ_TIMEOUT = 180  # az starts slowly (seconds per command), more on a loaded machine


class Az:
    def __init__(self, server, config_dir):
        self.server = server
        self.bin = REPO_ROOT / ".venv-az" / "bin" / "az"
        assert self.bin.exists(), f"{self.bin} is missing: run scripts/test, which installs azure-cli into .venv-az"
        config_dir.mkdir(parents=True, exist_ok=True)
        self.env = azure_env(server, AZURE_CONFIG_DIR=config_dir, AZURE_CORE_NO_COLOR="true",
                             AZURE_CORE_ONLY_SHOW_ERRORS="false", AZURE_CORE_SURVEY_MESSAGE="false")
        self.log: list[str] = []

    def __call__(self, *args, ok=True, json_out=False) -> subprocess.CompletedProcess:
        cmd = [str(self.bin), *map(str, args)]
        if json_out:
            cmd += ["-o", "json"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=AZ_TIMEOUT, env=self.env,
                           stdin=subprocess.DEVNULL)
        shown = " ".join("***" if i > 0 and cmd[i - 1] in ("-p", "--password") else c for i, c in enumerate(cmd))
        self.log.append(f"$ {shown}\n-> exit {p.returncode}\n{p.stdout[-2000:]}{p.stderr[-3000:]}")
        if ok:
            assert p.returncode == 0, (f"az {' '.join(shown.split()[1:])} failed with exit {p.returncode}\n"
                                       f"--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-5000:]}")
        if json_out and p.returncode == 0:
            p.json = json.loads(p.stdout)
        return p

    def register_and_login(self, sp, *register_args):
        args = register_args or ("--endpoint-resource-manager", self.server.base_url)
        self("cloud", "register", "--name", "MoatLocal", *args)
        self("cloud", "set", "--name", "MoatLocal")
        p = self("login", "--service-principal", "-u", sp["appId"], "-p", sp["password"], "--tenant", sp["tenant"],
                 json_out=True)
        return p.json


@pytest.fixture
def az(moat, tmp_path):
    a = Az(moat, tmp_path / "azcfg")
    yield a


def test_az_acr_export_policy_flow(moat, az):
    sp = sp_create(moat, "az-owner", "Owner")
    accounts = az.register_and_login(sp)
    sub = Arm(moat, sp).subscription
    assert [a["id"] for a in accounts] == [sub], accounts
    assert accounts[0]["tenantId"] == sp["tenant"] and accounts[0]["user"]["type"] == "servicePrincipal", accounts
    assert az("account", "show", json_out=True).json["id"] == sub

    name = "azreg1"
    created = az("acr", "create", "-n", name, "-g", "rg1", "--sku", "Premium", "-l", "westeurope",
                 json_out=True).json
    assert created["name"] == name and created["sku"]["name"] == "Premium", created
    assert created["loginServer"] == f"{name}.localhost:{moat.port}", created
    assert created["provisioningState"] == "Succeeded", created
    assert created["policies"]["exportPolicy"]["status"] == "enabled", created

    # No -g: az finds the resource group through GET /subscriptions/{sub}/resources.
    shown = az("acr", "show", "-n", name, json_out=True).json
    assert shown["id"].lower() == (f"/subscriptions/{sub}/resourceGroups/rg1/providers/"
                                   f"Microsoft.ContainerRegistry/registries/{name}").lower(), shown
    assert shown["publicNetworkAccess"] == "Enabled"

    updated = az("acr", "update", "-n", name, "--public-network-enabled", "false", json_out=True).json
    assert updated["publicNetworkAccess"] == "Disabled", updated
    # Exports need an approved private endpoint connection first.
    p = az("acr", "update", "-n", name, "--allow-exports", "false", ok=False)
    assert p.returncode == 1 and EXPORTS_NEED_PE.format(name=name) in p.stderr, p.stderr
    assert az("acr", "show", "-n", name, json_out=True).json["policies"]["exportPolicy"]["status"] == "enabled"

    # The endpoint is created over raw ARM (`az network private-endpoint create` needs a VNet); a manual request
    # waits as Pending, and az's private-endpoint-connection commands see and approve it.
    pe = create_private_endpoint(Arm(moat, sp), name, "rg1", manual=True, request_message="from the az test")
    conns = az("acr", "private-endpoint-connection", "list", "-r", name, json_out=True).json
    assert [c["name"] for c in conns] == [pe["connectionName"]], conns
    assert conns[0]["privateLinkServiceConnectionState"]["status"] == "Pending", conns
    assert conns[0]["privateEndpoint"]["id"].lower() == pe["id"].lower(), conns
    p = az("acr", "update", "-n", name, "--allow-exports", "false", ok=False)
    assert p.returncode == 1 and EXPORTS_NEED_PE.format(name=name) in p.stderr, "a pending connection counted"
    approved = az("acr", "private-endpoint-connection", "approve", "-r", name, "-n", pe["connectionName"],
                  "--description", "approved with az", json_out=True).json
    assert approved["privateLinkServiceConnectionState"]["status"] == "Approved", approved
    shown = az("acr", "private-endpoint-connection", "show", "-r", name, "-n", pe["connectionName"],
               json_out=True).json
    assert shown["privateLinkServiceConnectionState"] == {"status": "Approved", "description": "approved with az",
                                                          "actionsRequired": "None"}, shown
    links = az("acr", "private-link-resource", "list", "-n", name, json_out=True).json
    assert [(lr["groupId"], lr["requiredMembers"][0]) for lr in links] == [("registry", "registry")], links

    updated = az("acr", "update", "-n", name, "--allow-exports", "false", json_out=True).json
    assert updated["policies"]["exportPolicy"]["status"] == "disabled", updated
    assert updated["publicNetworkAccess"] == "Disabled" and updated["sku"]["name"] == "Premium", updated

    p = az("acr", "update", "-n", name, "--public-network-enabled", "true", ok=False)
    msg = f"Enabling public network access is not supported because the registry '{name}' has exports disabled."
    assert p.returncode == 1, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    assert msg in p.stderr, p.stderr
    assert "(BadRequest)" in p.stderr, p.stderr
    # The SKU cannot leave Premium either.
    p = az("acr", "update", "-n", name, "--sku", "Standard", ok=False)
    assert p.returncode == 1 and "BadRequest" in p.stderr, p.stderr
    # Nor can the last approved connection go.
    last = LAST_PE_KEPT.format(name=name)
    p = az("acr", "private-endpoint-connection", "reject", "-r", name, "-n", pe["connectionName"], ok=False)
    assert p.returncode == 1 and last in p.stderr, p.stderr
    p = az("acr", "private-endpoint-connection", "delete", "-r", name, "-n", pe["connectionName"], ok=False)
    assert p.returncode == 1 and last in p.stderr, p.stderr
    shown = az("acr", "show", "-n", name, json_out=True).json
    assert (shown["sku"]["name"], shown["publicNetworkAccess"], shown["policies"]["exportPolicy"]["status"]) == \
        ("Premium", "Disabled", "disabled"), shown
    assert [connection_status(c) for c in Arm(moat, sp).connections(name)] == ["Approved"]

    # Both at once: one PATCH whose merged result is allowed.
    both = az("acr", "update", "-n", name, "--public-network-enabled", "true", "--allow-exports", "true",
              json_out=True).json
    assert (both["publicNetworkAccess"], both["policies"]["exportPolicy"]["status"]) == ("Enabled", "enabled")
    # With exports enabled again the connection may go: az deletes it, and the endpoint shows Disconnected.
    az("acr", "private-endpoint-connection", "delete", "-r", name, "-n", pe["connectionName"])
    assert az("acr", "private-endpoint-connection", "list", "-r", name, json_out=True).json == []
    r = Arm(moat, sp).endpoint_request("GET", pe["name"])
    assert r.status_code == 200, r.text
    state = r.json()["properties"]["privateLinkServiceConnections"][0]["properties"]
    assert state["privateLinkServiceConnectionState"]["status"] == "Disconnected", r.text

    table = az("acr", "list", "-o", "table").stdout
    assert name in table and "Premium" in table, table
    names = [r["name"] for r in az("acr", "list", "-g", "rg1", json_out=True).json]
    assert name in names, names

    # Admin user and credentials.
    az("acr", "update", "-n", name, "--admin-enabled", "true", json_out=True)
    cred = az("acr", "credential", "show", "-n", name, json_out=True).json
    assert cred["username"] == name and len(cred["passwords"]) == 2, cred
    renewed = az("acr", "credential", "renew", "-n", name, "--password-name", "password", json_out=True).json
    old = {p["name"]: p["value"] for p in cred["passwords"]}
    new = {p["name"]: p["value"] for p in renewed["passwords"]}
    assert new["password"] != old["password"] and new["password2"] == old["password2"], (old, new)
    usage = az("acr", "show-usage", "-n", name, json_out=True).json
    assert any(u["name"] == "Size" for u in usage["value"]), usage

    az("acr", "delete", "-n", name, "--yes")
    p = az("acr", "show", "-n", name, ok=False)
    assert p.returncode != 0 and "could not be found" in p.stderr, p.stderr
    assert name not in az("acr", "list", "-o", "table").stdout


def test_az_cloud_register_with_trailing_slash(moat, az):
    """`az cloud register --endpoint-resource-manager https://HOST:PORT/` (the usual way to write an ARM endpoint)
    makes az fetch `https://HOST:PORT//metadata/endpoints?api-version=2022-09-01` (it appends
    `/metadata/endpoints` to what it was given), so the double slash must be served too."""
    sp = sp_create(moat, "az-slash", "Reader")
    accounts = az.register_and_login(sp, "--endpoint-resource-manager", moat.base_url + "/")
    assert accounts and accounts[0]["tenantId"] == sp["tenant"], accounts
    assert az("acr", "list", json_out=True).json is not None


def test_az_cloud_register_without_discovery(moat, az):
    """`--skip-endpoint-discovery` with the three required endpoints, and the ACR suffix."""
    sp = sp_create(moat, "az-skip", "Reader")
    accounts = az.register_and_login(
        sp, "--skip-endpoint-discovery",
        "--endpoint-resource-manager", moat.base_url + "/",
        "--endpoint-active-directory", moat.base_url,
        "--endpoint-active-directory-resource-id", "https://management.core.windows.net/",
        "--suffix-acr-login-server-endpoint", f".localhost:{moat.port}")
    assert accounts and accounts[0]["tenantId"] == sp["tenant"], accounts
    assert isinstance(az("acr", "list", json_out=True).json, list)


def test_az_roles_and_bad_secret(moat, az):
    owner = sp_create(moat, "az-owner2", "Owner")
    Arm(moat, owner).put_registry("azroles1", {"location": "westeurope", "sku": {"name": "Premium"}})

    p = az("cloud", "register", "--name", "MoatLocal", "--endpoint-resource-manager", moat.base_url)
    az("cloud", "set", "--name", "MoatLocal")
    p = az("login", "--service-principal", "-u", owner["appId"], "-p", "wrong-secret", "--tenant", owner["tenant"],
           ok=False)
    assert p.returncode != 0 and "AADSTS7000215" in p.stderr, p.stderr

    reader = sp_create(moat, "az-reader", "Reader")
    az("login", "--service-principal", "-u", reader["appId"], "-p", reader["password"], "--tenant", reader["tenant"])
    assert az("acr", "show", "-n", "azroles1", json_out=True).json["name"] == "azroles1"
    p = az("acr", "update", "-n", "azroles1", "--public-network-enabled", "false", ok=False)
    assert p.returncode == 1 and "AuthorizationFailed" in p.stderr, p.stderr
