"""`moat login` + `moat acr …` end to end: the real `moat` binary, run as a user would (a subprocess with its own
credential cache in MOAT_CONFIG_DIR), against a real HTTPS `moat serve`. Assertions are on what the user sees:
exit codes, stdout (json / table / tsv) and the `ERROR: …` lines on stderr.

The machine may set REQUESTS_CA_BUNDLE (the system bundle) globally, which the CLI would honour; every command here
runs without it (and without proxies) unless a test puts it back on purpose, and `moat login` gets
`--ca-bundle <data dir>/tls/ca.pem` explicitly.
"""
from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import EXPORTS_NEED_PE, Arm, create_private_endpoint, moat_bin, sp_create

CLI_TIMEOUT = 90  # seconds per CLI call; each is a handful of local HTTPS requests

ACR_TYPE = "Microsoft.ContainerRegistry/registries"
TABLE_COLUMNS = ["NAME", "RESOURCE GROUP", "LOCATION", "SKU", "LOGIN SERVER", "CREATION DATE", "ADMIN ENABLED"]
# The registry every server has (`127.0.0.1:PORT` itself), listed by ARM in resource group `moat`.
BUILTIN = ["default"]
SYSTEM_CA_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]


def reg_name(prefix: str = "moatacr") -> str:
    """A fresh valid registry name (letters and digits, lowercase so it reads the same in the login server)."""
    return prefix + secrets.token_hex(4)


class Cli:
    """The `moat` CLI as one user on one machine: a private MOAT_CONFIG_DIR (credential cache), no
    REQUESTS_CA_BUNDLE / proxies inherited from this machine."""

    def __init__(self, server, config_dir: Path):
        self.server = server
        self.config_dir = Path(config_dir)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MOAT_")}
        for k in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY",
                  "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
            self.env.pop(k, None)
        self.env["MOAT_CONFIG_DIR"] = str(self.config_dir)
        self.env["NO_PROXY"] = self.env["no_proxy"] = "127.0.0.1,localhost,.localhost"

    def __call__(self, *args, rc: int | None = 0, env: dict | None = None, timeout: float = CLI_TIMEOUT,
                 stdin: str | None = "") -> subprocess.CompletedProcess:
        """Runs `moat ARGS`; with `rc` set, fails unless the exit code is exactly that (showing both streams)."""
        full_env = dict(self.env)
        for k, v in (env or {}).items():
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = str(v)
        cmd = [moat_bin(), *map(str, args)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, input=stdin)
        if rc is not None:
            assert p.returncode == rc, (f"`moat {' '.join(map(str, args))}` exited {p.returncode}, expected {rc}\n"
                                        f"--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}")
        return p

    def json(self, *args, **kw):
        p = self(*args, "-o", "json", **kw)
        try:
            return json.loads(p.stdout)
        except ValueError:
            raise AssertionError(f"`moat {' '.join(args)} -o json` printed no JSON:\n{p.stdout!r}\n{p.stderr!r}")

    def login(self, sp: dict, *extra, rc: int | None = 0, ca=True, **kw) -> subprocess.CompletedProcess:
        args = ["login", "--service-principal", "-u", sp["appId"], "-p", sp["password"], "--tenant", sp["tenant"],
                "--server", self.server.base_url]
        if ca:
            args += ["--ca-bundle", str(self.server.ca_path)]
        return self(*args, *extra, rc=rc, **kw)


@pytest.fixture
def cli_factory(moat, tmp_path):
    n = [0]

    def make(server=None) -> Cli:
        n[0] += 1
        d = tmp_path / f"moat-config-{n[0]}"
        return Cli(server or moat, d)

    return make


@pytest.fixture
def cli(cli_factory) -> Cli:
    return cli_factory()


def assert_error(p: subprocess.CompletedProcess, rc: int, *needles: str):
    """Exit code `rc`, an `ERROR: ` line on stderr containing every needle, nothing on stdout."""
    desc = f"exit {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}"
    assert p.returncode == rc, f"expected exit {rc}: {desc}"
    assert "ERROR: " in p.stderr, f"no 'ERROR: ' line on stderr: {desc}"
    for n in needles:
        assert n in p.stderr, f"stderr lacks {n!r}: {desc}"
    assert "panicked" not in p.stderr and "RUST_BACKTRACE" not in p.stderr, f"the CLI panicked: {desc}"
    assert p.stdout.strip() == "", f"an error printed output on stdout: {desc}"


def export_status(reg: dict) -> str | None:
    return (((reg.get("properties") or {}).get("policies") or {}).get("exportPolicy") or {}).get("status")


# ---------------------------------------------------------------------------------------------------------------
# 1. The whole flow


def test_whole_flow(moat, cli):
    owner = sp_create(moat, "cli-owner", "Owner")

    # -- login: prints the az-style account list and caches the credentials privately.
    p = cli.login(owner)
    accounts = json.loads(p.stdout)
    assert isinstance(accounts, list) and accounts, p.stdout
    assert accounts[0]["isDefault"] is True and accounts[0]["tenantId"] == owner["tenant"], accounts
    assert accounts[0]["user"] == {"name": owner["appId"], "type": "servicePrincipal"}, accounts
    subscription = accounts[0]["id"]
    cache = cli.config_dir / "credentials.json"
    assert cache.exists(), list(cli.config_dir.iterdir())
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600, oct(cache.stat().st_mode)
    assert owner["password"] not in p.stdout and owner["password"] not in p.stderr

    # -- create
    name = reg_name()
    reg = cli.json("acr", "create", "-n", name, "-g", "rg1", "--sku", "Premium", "-l", "westeurope")
    assert reg["name"] == name, reg
    assert reg["type"] == ACR_TYPE, reg
    assert reg["location"] == "westeurope", reg
    assert reg["sku"]["name"] == "Premium", reg
    assert reg["id"] == (f"/subscriptions/{subscription}/resourceGroups/rg1/providers/{ACR_TYPE}/{name}"), reg
    props = reg["properties"]
    assert props["loginServer"] == f"{name}.localhost:{moat.port}", props
    assert props["provisioningState"] == "Succeeded", props
    assert props["adminUserEnabled"] is False, props
    assert props["publicNetworkAccess"] == "Enabled", props
    assert export_status(reg) == "enabled", props

    # -- show without -g: the resource group is looked up from the name.
    shown = cli.json("acr", "show", "-n", name)
    assert shown["id"] == reg["id"] and shown["properties"]["loginServer"] == props["loginServer"], shown

    # -- protect it: public network off, then exports off.
    p = cli("acr", "update", "-n", name, "--public-network-enabled", "false", "-o", "json")
    upd = json.loads(p.stdout)
    assert upd["properties"]["publicNetworkAccess"] == "Disabled", upd
    assert upd["properties"]["networkRuleSet"]["defaultAction"] == "Deny", upd
    assert export_status(upd) == "enabled", upd
    assert "WARNING: Disabling the public endpoint overrides all firewall configurations." in p.stderr, p.stderr

    # Exports can be disabled only with an approved private endpoint connection (created over ARM here).
    p = cli("acr", "update", "-n", name, "--allow-exports", "false", rc=None)
    assert_error(p, 1, "(BadRequest)", EXPORTS_NEED_PE.format(name=name), "Target: policies.exportPolicy")
    assert export_status(cli.json("acr", "show", "-n", name)) == "enabled"
    pe = create_private_endpoint(Arm(moat, owner), name, "rg1")
    shown = cli.json("acr", "show", "-n", name)
    assert [c["name"] for c in shown["properties"]["privateEndpointConnections"]] == [pe["connectionName"]], shown

    upd = cli.json("acr", "update", "-n", name, "--allow-exports", "false")
    assert export_status(upd) == "disabled", upd
    assert upd["properties"]["publicNetworkAccess"] == "Disabled", upd

    shown = cli.json("acr", "show", "-n", name)
    assert shown["properties"]["publicNetworkAccess"] == "Disabled", shown
    assert export_status(shown) == "disabled", shown
    assert shown["sku"]["name"] == "Premium", shown

    # -- what the export rule refuses, as az shows an ARM error.
    p = cli("acr", "update", "-n", name, "--public-network-enabled", "true", rc=None)
    assert_error(p, 1,
                 f"Enabling public network access is not supported because the registry '{name}' has exports "
                 "disabled.",
                 "(BadRequest)")
    assert "Code: BadRequest" in p.stderr, p.stderr

    p = cli("acr", "update", "-n", name, "--sku", "Standard", rc=None)
    assert_error(p, 1, "(BadRequest)", "exports disabled")

    # Neither refused change landed.
    shown = cli.json("acr", "show", "-n", name, "-g", "rg1")
    assert shown["sku"]["name"] == "Premium", shown
    assert shown["properties"]["publicNetworkAccess"] == "Disabled", shown
    assert export_status(shown) == "disabled", shown

    # -- list: table with az's columns, tsv without a header.
    table = cli("acr", "list", "-o", "table").stdout
    lines = table.splitlines()
    assert len(lines) >= 3, table
    header = lines[0]
    for col in TABLE_COLUMNS:
        assert col in header, f"column {col!r} missing from the header {header!r}"
    starts = [header.index(c) for c in TABLE_COLUMNS]
    assert starts == sorted(starts), f"columns out of order: {header!r}"
    assert set(lines[1].replace(" ", "")) == {"-"}, f"no dashed rule under the header:\n{table}"
    rows = [ln for ln in lines[2:] if ln.split() and ln.split()[0] == name]
    assert len(rows) == 1, table
    row = rows[0].split()
    assert row[1:4] == ["rg1", "westeurope", "Premium"], rows[0]
    assert f"{name}.localhost:{moat.port}" in row, rows[0]
    assert row[-1] == "False", rows[0]
    assert all(ln == ln.rstrip() for ln in lines), "trailing blanks in the table"

    tsv = cli("acr", "list", "-o", "tsv").stdout
    tsv_rows = [ln.split("\t") for ln in tsv.splitlines() if ln]
    assert tsv_rows, repr(tsv)
    assert not any("NAME" in r or "LOGIN SERVER" in r for r in tsv_rows), f"tsv has a header:\n{tsv}"
    mine = [r for r in tsv_rows if r[0] == name]
    assert len(mine) == 1, tsv
    assert mine[0][:5] == [name, "rg1", "westeurope", "Premium", f"{name}.localhost:{moat.port}"], mine[0]
    assert len(mine[0]) == len(TABLE_COLUMNS), mine[0]

    # The list in JSON is the registries themselves.
    listed = cli.json("acr", "list")
    assert sorted(r["name"] for r in listed) == sorted([name, *BUILTIN]), listed
    assert cli.json("acr", "list", "-g", "rg1")[0]["id"] == reg["id"]

    # -- admin user and its credentials
    upd = cli.json("acr", "update", "-n", name, "--admin-enabled", "true")
    assert upd["properties"]["adminUserEnabled"] is True, upd
    creds = cli.json("acr", "credential", "show", "-n", name)
    assert creds["username"] == name, creds
    pw = {p["name"]: p["value"] for p in creds["passwords"]}
    assert set(pw) == {"password", "password2"} and all(pw.values()), creds
    assert pw["password"] != pw["password2"], creds

    ctsv = cli("acr", "credential", "show", "-n", name, "-o", "tsv").stdout
    assert ctsv == f"{name}\t{pw['password']}\t{pw['password2']}\n", repr(ctsv)

    renewed = cli.json("acr", "credential", "renew", "-n", name, "--password-name", "password2")
    assert renewed["username"] == name, renewed
    pw2 = {p["name"]: p["value"] for p in renewed["passwords"]}
    assert pw2["password"] == pw["password"], "renewing password2 changed password"
    assert pw2["password2"] and pw2["password2"] != pw["password2"], "password2 was not renewed"
    again = cli.json("acr", "credential", "show", "-n", name)
    assert {p["name"]: p["value"] for p in again["passwords"]} == pw2, again

    # -- delete, then it is gone as az says it.
    p = cli("acr", "delete", "-n", name, "--yes")
    assert p.stdout.strip() == "", p.stdout
    p = cli("acr", "show", "-n", name, rc=None)
    assert_error(p, 3, f"The resource with name '{name}' and type '{ACR_TYPE}' could not be found in subscription",
                 subscription)
    # With -g the GET itself answers 404, worded as ARM does.
    p = cli("acr", "show", "-n", name, "-g", "rg1", rc=None)
    assert_error(p, 3, "(ResourceNotFound)", f"'{ACR_TYPE}/{name}' under resource group 'rg1' was not found")
    assert name not in cli("acr", "list", "-o", "table").stdout
    assert [ln.split("\t")[0] for ln in cli("acr", "list", "-o", "tsv").stdout.splitlines()] == BUILTIN
    assert cli("acr", "list", "-g", "rg1", "-o", "tsv").stdout == ""


# ---------------------------------------------------------------------------------------------------------------
# 2. Errors a user meets


def test_acr_before_login_says_to_log_in(moat, cli):
    p = cli("acr", "create", "-n", reg_name(), "-g", "rg1", "--sku", "Premium", rc=None)
    assert_error(p, 1, "moat login --service-principal")
    assert "setup account" in p.stderr or "log in" in p.stderr.lower(), p.stderr
    assert not (cli.config_dir / "credentials.json").exists()
    # Same for a read.
    assert_error(cli("acr", "list", rc=None), 1, "moat login")


def test_reader_cannot_update(moat, cli_factory):
    owner_cli, reader_cli = cli_factory(), cli_factory()
    owner = sp_create(moat, "cli-owner", "Owner")
    reader = sp_create(moat, "cli-reader", "Reader")
    owner_cli.login(owner)
    reader_cli.login(reader)
    name = reg_name()
    owner_cli.json("acr", "create", "-n", name, "-g", "rg1", "--sku", "Premium", "-l", "westeurope")

    # A reader reads...
    assert reader_cli.json("acr", "show", "-n", name)["name"] == name
    assert sorted(r["name"] for r in reader_cli.json("acr", "list")) == sorted([name, *BUILTIN])
    # ...and is refused every write.
    p = reader_cli("acr", "update", "-n", name, "--public-network-enabled", "false", rc=None)
    assert_error(p, 1, "(AuthorizationFailed)", reader["appId"])
    p = reader_cli("acr", "update", "-n", name, "--admin-enabled", "true", rc=None)
    assert_error(p, 1, "(AuthorizationFailed)")
    p = reader_cli("acr", "create", "-n", reg_name(), "-g", "rg1", "--sku", "Basic", rc=None)
    assert_error(p, 1, "(AuthorizationFailed)")
    p = reader_cli("acr", "credential", "show", "-n", name, rc=None)
    assert_error(p, 1, "(AuthorizationFailed)")
    p = reader_cli("acr", "delete", "-n", name, "--yes", rc=None)
    assert_error(p, 1, "(AuthorizationFailed)")
    # Nothing changed.
    shown = owner_cli.json("acr", "show", "-n", name)
    assert shown["properties"]["publicNetworkAccess"] == "Enabled", shown
    assert shown["properties"]["adminUserEnabled"] is False, shown


def test_bad_registry_name(moat, cli):
    cli.login(sp_create(moat, "cli-owner", "Owner"))
    p = cli("acr", "create", "-n", "ab", "-g", "rg1", "--sku", "Premium", rc=None)
    assert_error(p, 1, "(InvalidResourceName)")
    p = cli("acr", "create", "-n", "bad-name", "-g", "rg1", "--sku", "Premium", rc=None)
    assert_error(p, 1, "(InvalidResourceName)")
    assert [r["name"] for r in cli.json("acr", "list")] == BUILTIN


def test_login_with_wrong_secret(moat, cli):
    owner = sp_create(moat, "cli-owner", "Owner")
    p = cli.login(dict(owner, password="not-the-secret-" + secrets.token_hex(4)), rc=None)
    assert_error(p, 1, "AADSTS7000215")
    assert "not-the-secret" not in p.stderr, "the CLI echoed the secret"
    assert not (cli.config_dir / "credentials.json").exists(), "a failed login left a credential cache"
    # and the user still is not logged in
    assert_error(cli("acr", "list", rc=None), 1, "moat login")


def test_login_with_unknown_tenant(moat, cli):
    owner = sp_create(moat, "cli-owner", "Owner")
    p = cli.login(dict(owner, tenant="00000000-0000-0000-0000-000000000001"), rc=None)
    assert_error(p, 1, "--tenant")


def test_login_without_ca_names_ca_bundle(moat, cli):
    owner = sp_create(moat, "cli-owner", "Owner")
    p = cli.login(owner, ca=False, rc=None)
    assert_error(p, 1, "--ca-bundle", "not trusted")
    assert not (cli.config_dir / "credentials.json").exists()


def test_login_with_the_wrong_ca_names_ca_bundle(moat, moat_factory, cli):
    """A CA bundle of another Moat server: the message says which bundle did not work and how to fix it."""
    other = moat_factory(https=True)
    owner = sp_create(moat, "cli-owner", "Owner")
    p = cli.login(owner, "--ca-bundle", str(other.ca_path), ca=False, rc=None)
    assert_error(p, 1, "--ca-bundle", str(other.ca_path))


def test_missing_ca_file_names_ca_bundle(moat, cli, tmp_path):
    owner = sp_create(moat, "cli-owner", "Owner")
    p = cli.login(owner, "--ca-bundle", str(tmp_path / "nope.pem"), ca=False, rc=None)
    assert_error(p, 1, "--ca-bundle")


def test_system_requests_ca_bundle_does_not_hide_the_login_ca(moat, cli):
    """With the CA given at login, later commands still trust it when REQUESTS_CA_BUNDLE points at the system
    bundle (as it does machine-wide here)."""
    bundle = next((b for b in SYSTEM_CA_BUNDLES if os.path.exists(b)), None)
    if bundle is None:
        pytest.skip("no system CA bundle on this machine")
    cli.login(sp_create(moat, "cli-owner", "Owner"))
    name = reg_name()
    p = cli("acr", "create", "-n", name, "-g", "rg1", "--sku", "Basic", "-o", "json",
            env={"REQUESTS_CA_BUNDLE": bundle})
    assert json.loads(p.stdout)["name"] == name
    assert cli.json("acr", "show", "-n", name, env={"REQUESTS_CA_BUNDLE": bundle})["name"] == name


def test_usage_errors(moat, cli):
    """Flag mistakes are caught before anything reaches the network (exit 2)."""
    cli.login(sp_create(moat, "cli-owner", "Owner"))
    name = reg_name()
    cli.json("acr", "create", "-n", name, "-g", "rg1", "--sku", "Premium")
    p = cli("acr", "update", "-n", name, rc=None)
    assert_error(p, 2, "nothing to update")
    p = cli("acr", "create", "-n", reg_name(), "-g", "rg1", "--sku", "Gold", rc=None)
    assert p.returncode == 2 and "Gold" in p.stderr, p.stderr
    p = cli("acr", "credential", "renew", "-n", name, "--password-name", "password3", rc=None)
    assert p.returncode == 2 and "password3" in p.stderr, p.stderr
    # delete without --yes and without a terminal refuses rather than hanging or deleting
    p = cli("acr", "delete", "-n", name, rc=None)
    assert_error(p, 2, "--yes")
    assert cli.json("acr", "show", "-n", name)["name"] == name


# ---------------------------------------------------------------------------------------------------------------
# 3. Both protections in one call


def test_both_flags_in_one_update(moat, cli):
    owner = sp_create(moat, "cli-owner", "Owner")
    cli.login(owner)
    name = reg_name()
    reg = cli.json("acr", "create", "-n", name, "-g", "rg1", "--sku", "Premium", "-l", "westeurope")
    assert export_status(reg) == "enabled" and reg["properties"]["publicNetworkAccess"] == "Enabled", reg
    # Without an approved private endpoint connection, the pair is refused as a whole (nothing lands).
    p = cli("acr", "update", "-n", name, "--public-network-enabled", "false", "--allow-exports", "false", rc=None)
    assert_error(p, 1, "(BadRequest)", EXPORTS_NEED_PE.format(name=name))
    shown = cli.json("acr", "show", "-n", name)
    assert shown["properties"]["publicNetworkAccess"] == "Enabled" and export_status(shown) == "enabled", shown
    create_private_endpoint(Arm(moat, owner), name, "rg1")

    p = cli("acr", "update", "-n", name, "--public-network-enabled", "false", "--allow-exports", "false",
            "-o", "json")
    upd = json.loads(p.stdout)
    assert upd["properties"]["publicNetworkAccess"] == "Disabled", upd
    assert export_status(upd) == "disabled", upd
    shown = cli.json("acr", "show", "-n", name)
    assert shown["properties"]["publicNetworkAccess"] == "Disabled" and export_status(shown) == "disabled", shown

    # And back in one call: the rule is checked against the state the request produces.
    upd = cli.json("acr", "update", "-n", name, "--public-network-enabled", "true", "--allow-exports", "true")
    assert upd["properties"]["publicNetworkAccess"] == "Enabled", upd
    assert export_status(upd) == "enabled", upd


def test_disabling_exports_alone_on_an_open_registry_explains_what_to_do(moat, cli):
    cli.login(sp_create(moat, "cli-owner", "Owner"))
    name = reg_name()
    cli.json("acr", "create", "-n", name, "-g", "rg1", "--sku", "Premium")
    p = cli("acr", "update", "-n", name, "--allow-exports", "false", rc=None)
    assert_error(p, 1, "(BadRequest)", "--public-network-enabled false --allow-exports false")
    assert export_status(cli.json("acr", "show", "-n", name)) == "enabled"


def test_create_protected_in_one_call_is_refused(moat, cli):
    """`acr create` with both flags cannot make a protected registry at once any more: a new registry has no
    private endpoint yet, and exports can be disabled only with an approved one. The refusal says so and creates
    nothing; the valid order (create closed, add an endpoint, then disable exports) works."""
    owner = sp_create(moat, "cli-owner", "Owner")
    cli.login(owner)
    name = reg_name()
    p = cli("acr", "create", "-n", name, "-g", "rg1", "--sku", "Premium", "--public-network-enabled", "false",
            "--allow-exports", "false", rc=None)
    assert_error(p, 1, "(BadRequest)", EXPORTS_NEED_PE.format(name=name))
    assert name not in [r["name"] for r in cli.json("acr", "list")], "a refused create left a registry"

    p = cli("acr", "create", "-n", name, "-g", "rg1", "--sku", "Premium", "--public-network-enabled", "false",
            "-o", "json")
    reg = json.loads(p.stdout)
    assert reg["properties"]["publicNetworkAccess"] == "Disabled" and export_status(reg) == "enabled", reg
    create_private_endpoint(Arm(moat, owner), name, "rg1")
    reg = cli.json("acr", "update", "-n", name, "--allow-exports", "false")
    assert reg["properties"]["publicNetworkAccess"] == "Disabled" and export_status(reg) == "disabled", reg

    p = cli("acr", "create", "-n", reg_name(), "-g", "rg1", "--sku", "Basic", "--allow-exports", "false", rc=None)
    assert_error(p, 1, "(BadRequest)", "Premium")


# ---------------------------------------------------------------------------------------------------------------
# The other settings flags


def test_other_settings_flags(moat, cli):
    cli.login(sp_create(moat, "cli-owner", "Owner"))
    name = reg_name()
    reg = cli.json("acr", "create", "-n", name, "-g", "rg1", "--sku", "Premium", "-l", "westeurope",
                   "--tags", "env=test", "team")
    assert reg.get("tags") == {"env": "test", "team": ""}, reg

    upd = cli.json("acr", "update", "-n", name, "--data-endpoint-enabled", "true")
    assert upd["properties"]["dataEndpointEnabled"] is True, upd
    # The region is the second label, where `az acr show-endpoints` reads it.
    assert upd["properties"]["dataEndpointHostNames"] == [f"{name}.westeurope.data.localhost:{moat.port}"], upd
    upd = cli.json("acr", "update", "-n", name, "--default-action", "Deny")
    assert upd["properties"]["networkRuleSet"]["defaultAction"] == "Deny", upd
    assert upd["properties"]["publicNetworkAccess"] == "Enabled", upd
    upd = cli.json("acr", "update", "-n", name, "--default-action", "allow", "--tags")
    assert upd["properties"]["networkRuleSet"]["defaultAction"] == "Allow", upd
    assert not upd.get("tags"), upd

    # One registry shown as a table: the header, the rule, one row.
    t = cli("acr", "show", "-n", name, "-o", "table").stdout.splitlines()
    assert len(t) == 3 and t[0].startswith("NAME") and t[2].split()[:2] == [name, "rg1"], t

    # Network rules are a Premium feature.
    basic = reg_name()
    cli.json("acr", "create", "-n", basic, "-g", "rg1", "--sku", "Basic")
    p = cli("acr", "update", "-n", basic, "--default-action", "Deny", rc=None)
    assert_error(p, 1, "(BadRequest)", "Premium")
    p = cli("acr", "update", "-n", basic, "--data-endpoint-enabled", "true", rc=None)
    assert_error(p, 1, "(BadRequest)", "Premium")
