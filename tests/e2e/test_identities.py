"""Operator commands that cannot pick the wrong data, and identities with a lifecycle (issue 10, items 2 and 3).

- Commands that act on a server's data refuse a data directory that does not exist or holds no Moat data, and
  create nothing; a second `moat serve` on a served directory is refused.
- While a server serves the directory, commands use its address, domain and scheme (from `<data dir>/serve.lock`)
  and tell it to serve their change at once (SIGHUP); without one, a server started later re-stamps every login
  server with the address it answers on.
- `moat registry delete`: refusals, the activity record, what goes with the registry.
- `moat sp list|show|reset-credentials|delete`: a reset or deleted principal's tokens (registry access and refresh
  tokens, Entra tokens, refresh tokens exchanged for them) are refused at once; its role assignments go with it.
- Role assignments with `moat role assignment`, over ARM (`Microsoft.Authorization/roleAssignments` and
  `roleDefinitions`), and with the real `az role assignment create/list/delete`.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest
import requests

from conftest import (Arm, aad_token, assert_arm_error, build_image, make_session, moat_bin, parse_json_lines,
                      protect_registry, repo_scope, run_concurrently, sp_create)
from test_arm_az import Az

NO_DATA = "start `moat serve` first or pass --data-dir"


def cli(*args, cwd=None, check=False, env=None, input=None) -> subprocess.CompletedProcess:
    """`moat ARGS` with no MOAT_ variable set, stdin not a terminal."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("MOAT_")}
    e.update(env or {})
    p = subprocess.run([moat_bin(), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=e,
                       input=input if input is not None else "")
    if check:
        assert p.returncode == 0, f"moat {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


def activity(server, **filters) -> list[dict]:
    return server.audit(log="activity", **filters)


# Every operator command that reads or changes a data directory, with arguments that would otherwise work.
OPERATOR_COMMANDS = [
    ["sp", "create", "--name", "ci"],
    ["registry", "create", "team2"],
    ["registry", "list"],
    ["registry", "delete", "team2", "--yes"],
    ["sp", "list"],
    ["sp", "show", "--id", "ci"],
    ["sp", "reset-credentials", "--id", "ci"],
    ["sp", "delete", "--id", "ci"],
    ["role", "assignment", "list"],
    ["role", "assignment", "create", "--assignee", "ci", "--role", "AcrPull", "--scope", "/subscriptions/x"],
    ["role", "assignment", "delete", "--assignee", "ci"],
    ["keys", "list"],
    ["keys", "rotate", "--purpose", "secrets"],
    ["audit"],
    ["gc", "--dry-run"],
    ["jobs", "list"],
    ["jobs", "show", "0f6c1f4e-0000-4000-8000-000000000000"],
    ["jobs", "cancel", "0f6c1f4e-0000-4000-8000-000000000000"],
    ["secret", "set", "--id", "https://kv1.vault.azure.net/secrets/sas", "--value", "x"],
    ["secret", "show", "--id", "https://kv1.vault.azure.net/secrets/sas", "--reveal"],
    ["secret", "list"],
    ["secret", "delete", "--vault-name", "kv1", "--name", "sas"],
    ["storage-account", "add", "--name", "acct1", "--key", "c2VjcmV0"],
    ["storage-account", "list"],
    ["storage-account", "delete", "--name", "acct1"],
]


@pytest.mark.parametrize("command", OPERATOR_COMMANDS, ids=lambda c: " ".join(c[:3]))
def test_commands_refuse_a_directory_without_moat_data_and_create_nothing(tmp_path, command):
    # The default ./moat-data, run elsewhere than the server's directory.
    p = cli(*command, cwd=tmp_path)
    assert p.returncode != 0, p.stdout
    assert f"no Moat data at ./moat-data: {NO_DATA}" in p.stderr, p.stderr
    assert p.stdout == "", "a refused command printed a result (credentials that can never log in?)"
    assert list(tmp_path.iterdir()) == [], "the refused command created something"
    # A --data-dir that does not exist, nested or not.
    for missing in (tmp_path / "nowhere", tmp_path / "a" / "b"):
        p = cli(*command, "--data-dir", str(missing))
        assert p.returncode != 0 and f"no Moat data at {missing}: {NO_DATA}" in p.stderr, p.stderr
        assert not missing.exists() and not (tmp_path / "a").exists(), "the refused command made the directory"
    # The wrong directory: one that exists but holds no Moat data (stays empty), and a file.
    wrong = tmp_path / "wrong"
    wrong.mkdir(mode=0o700)
    p = cli(*command, "--data-dir", str(wrong))
    assert p.returncode != 0 and f"no Moat data at {wrong} (no moat.db in it): {NO_DATA}" in p.stderr, p.stderr
    assert list(wrong.iterdir()) == [], "the refused command wrote into a directory that holds no Moat data"
    afile = tmp_path / "file"
    afile.write_text("x")
    p = cli(*command, "--data-dir", str(afile))
    assert p.returncode != 0 and "(it is not a directory)" in p.stderr, p.stderr


def test_a_second_server_on_a_served_directory_is_refused(moat):
    lock = json.loads((moat.data_dir / "serve.lock").read_text())
    assert lock["pid"] == moat.proc.pid and lock["listen"] == moat.login_server, lock
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    port = other.getsockname()[1]
    other.close()
    p = subprocess.run([moat_bin(), "serve", "--data-dir", str(moat.data_dir), "--listen", f"127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=60, env=moat.process_env())
    assert p.returncode != 0, p.stderr
    assert f"another `moat serve` (pid {moat.proc.pid}, https://{moat.login_server}) serves" in p.stderr, p.stderr
    # The first server still serves, and still owns the lock.
    assert moat.client().push_blob("still/here", b"first server") and moat.running()
    assert json.loads((moat.data_dir / "serve.lock").read_text())["pid"] == moat.proc.pid


def test_registry_created_beside_a_running_server_gets_its_port_and_serves_at_once(moat):
    # The command's own --listen and --domain say something else: the running server's address wins, since that
    # is where the registry will be served.
    for name, flags in (("cliport", []), ("cliflags", ["--listen", "127.0.0.1:1", "--domain", "elsewhere.test"])):
        p = moat.moat("registry", "create", name, *flags)
        made = json.loads(p.stdout)
        login = f"{name}.localhost:{moat.port}"
        assert made["loginServer"] == login, made
        # Served at once (no retry): a push through its login server lands in it, not in `default`.
        c = moat.client(host=login)
        c.push_image("app", build_image(1, seed=name), tag="v1")
        assert c.tags("app") == ["v1"]
        r = moat.client().request("GET", "/v2/app/tags/list", repo="app")
        assert r.status_code == 404, f"the push fell to the default registry: {r.status_code} {r.text}"
    listed = {r["name"]: r["login_server"] for r in parse_json_lines(moat.moat("registry", "list", "-o", "json").stdout)}
    assert listed["cliport"] == f"cliport.localhost:{moat.port}" and listed["default"] == moat.login_server, listed


def test_registry_created_offline_follows_the_server_that_starts_later(moat_factory):
    s = moat_factory(https=True)
    s.stop()
    # No server: the command's own --listen (default 127.0.0.1:5000) is used...
    made = json.loads(s.moat("registry", "create", "offreg").stdout)
    assert made["loginServer"] == "offreg.localhost:5000", made
    # ...until a server starts on the directory: every login server is the one it answers on.
    s.start()
    listed = {r["name"]: r["login_server"] for r in parse_json_lines(s.moat("registry", "list", "-o", "json").stdout)}
    assert listed["offreg"] == f"offreg.localhost:{s.port}", listed
    c = s.client(host=f"offreg.localhost:{s.port}")
    c.push_image("app", build_image(1), tag="v1")
    assert c.tags("app") == ["v1"]
    assert s.client().request("GET", "/v2/app/tags/list", repo="app").status_code == 404


def test_operator_commands_beside_a_busy_server_do_not_race_it(moat):
    """Changes made by commands are WAL transactions beside the server's: all of them and all the pushes made
    meanwhile succeed, and each new registry serves."""
    errors: list[str] = []

    def create(i):
        def go():
            p = moat.moat("registry", "create", f"race{i}", check=False)
            if p.returncode != 0:
                errors.append(p.stderr)
            p = moat.moat("sp", "create", "--name", f"race-sp{i}", "--role", "AcrPull", check=False)
            if p.returncode != 0:
                errors.append(p.stderr)
        return go

    def push(i):
        def go():
            c = moat.client()
            for k in range(6):
                c.push_image(f"busy/{i}", build_image(1, layer_size=256), tag=f"t{k}")
        return go

    run_concurrently([create(i) for i in range(4)] + [push(i) for i in range(3)])
    assert errors == [], errors
    for i in range(4):
        c = moat.client(host=f"race{i}.localhost:{moat.port}")
        dg = c.push_blob("x/y", f"race {i}".encode())
        assert c.head_blob("x/y", dg).status_code == 200
        assert moat.client().head_blob("x/y", dg).status_code == 404, "the push fell to the default registry"
    for i in range(3):
        assert len(moat.client().tags(f"busy/{i}")) == 6


def test_registry_delete(moat):
    arm = Arm(moat, sp_create(moat, "owner-delete"))
    sub = arm.subscription
    # Refusals: the default registry, an unknown name (the registries are listed), no confirmation.
    p = moat.moat("registry", "delete", "default", "--yes", check=False)
    assert p.returncode != 0 and "the default registry cannot be deleted" in p.stderr, p.stderr
    p = moat.moat("registry", "delete", "nosuchreg", "--yes", check=False)
    assert p.returncode != 0 and "no registry named 'nosuchreg'" in p.stderr and "default" in p.stderr, p.stderr
    moat.moat("registry", "create", "gonereg")
    login = f"gonereg.localhost:{moat.port}"
    p = cli("registry", "delete", "gonereg", "--data-dir", str(moat.data_dir), input="y\n")
    assert p.returncode != 0 and "pass --yes" in p.stderr, p.stderr
    assert "gonereg" in moat.moat("registry", "list").stdout, "a refused delete deleted"

    # A principal with a role on the registry; the registry holds an image.
    reg_id = f"/subscriptions/{sub}/resourceGroups/moat/providers/Microsoft.ContainerRegistry/registries/gonereg"
    puller = sp_create(moat, "gonereg-puller", role="AcrPull", scope=reg_id)
    moat.client(host=login).push_image("app", build_image(1), tag="v1")
    assert moat.client(host=login, user=puller["appId"], password=puller["password"]) \
        .get_manifest("app", "v1").status_code == 200

    moat.moat("registry", "delete", "GoneReg", "--yes")  # names in any case
    assert "gonereg" not in moat.moat("registry", "list").stdout
    # At once, its host falls to `default`, which does not hold its repository.
    r = moat.client(host=login).request("GET", "/v2/app/tags/list", repo="app")
    assert r.status_code == 404, r.text
    [rec] = [e for e in activity(moat, registry="gonereg")
             if e["operationName"] == "Microsoft.ContainerRegistry/registries/delete"]
    assert rec["caller"].startswith("local:") and rec["status"] == "Succeeded", rec
    assert rec["resourceId"] == reg_id and rec["properties"]["before"]["sku"] and \
        rec["properties"]["roleAssignmentsRemoved"] == 1, rec
    # Its role assignments went with it: a registry made again under the name does not inherit them.
    moat.moat("registry", "create", "gonereg")
    moat.client(host=login).push_image("app", build_image(1), tag="v1")
    r = moat.client(host=login, user=puller["appId"], password=puller["password"]).get_manifest("app", "v1")
    assert r.status_code in (401, 403), f"the re-created registry inherited a role assignment: {r.status_code}"


def test_deleting_a_protected_registry_removes_its_data_and_is_recorded(moat):
    """Deleting a registry whose exports are disabled is allowed (its data is removed, nothing leaves) and recorded
    with the settings it had; its private endpoint stops listening at once."""
    arm = Arm(moat, sp_create(moat, "owner-protected"))
    r = arm.put_registry("lockedreg", {"location": "local", "sku": {"name": "Premium"}})
    assert r.status_code == 201, r.text
    pe = protect_registry(arm, "lockedreg")
    with socket.create_connection((pe["address"], moat.port), timeout=5):
        pass
    moat.moat("registry", "delete", "lockedreg", "--yes")
    # The server has re-read its endpoints when the command returns; the listener's task ends a moment later.
    deadline = time.monotonic() + 3
    while True:
        try:
            socket.create_connection((pe["address"], moat.port), timeout=5).close()
        except OSError:
            break
        assert time.monotonic() < deadline, "the deleted registry's private endpoint still listens"
        time.sleep(0.02)
    assert arm.get_registry("lockedreg").status_code == 404
    [rec] = [e for e in activity(moat, registry="lockedreg")
             if e["operationName"] == "Microsoft.ContainerRegistry/registries/delete"]
    assert rec["properties"]["before"]["policies"]["export"] == "disabled", rec


# ------------------------------------------------------------------------------------------------ service principals

def registry_token(server, sp: dict, repo: str, actions: str = "pull,push") -> requests.Response:
    """GET /oauth2/token with the principal's appId and password (what `docker login` does)."""
    s = make_session(server.base_url, verify=server.verify)
    return s.get(server.base_url + "/oauth2/token", auth=(sp["appId"], sp["password"]), timeout=30,
                 params={"service": server.login_server, "scope": repo_scope(repo, actions)})


def refresh_token(server, sp: dict) -> str:
    """POST /oauth2/token with the password grant: a refresh token (3 hours)."""
    s = make_session(server.base_url, verify=server.verify)
    r = s.post(server.base_url + "/oauth2/token", timeout=30, data={
        "grant_type": "password", "service": server.login_server, "username": sp["appId"],
        "password": sp["password"], "scope": repo_scope("life/app", "pull")})
    assert r.status_code == 200 and r.json().get("refresh_token"), r.text
    return r.json()["refresh_token"]


def exchange(server, entra: str) -> requests.Response:
    """POST /oauth2/exchange: an Entra access token for a registry refresh token (`az acr login`)."""
    s = make_session(server.base_url, verify=server.verify)
    return s.post(server.base_url + "/oauth2/exchange", timeout=30, data={
        "grant_type": "access_token", "service": server.login_server, "access_token": entra})


def refreshed(server, rt: str) -> requests.Response:
    s = make_session(server.base_url, verify=server.verify)
    return s.post(server.base_url + "/oauth2/token", timeout=30, data={
        "grant_type": "refresh_token", "service": server.login_server, "refresh_token": rt,
        "scope": repo_scope("life/app", "pull")})


def v2_with(server, token: str) -> requests.Response:
    s = make_session(server.base_url, verify=server.verify)
    return s.get(server.base_url + "/v2/life/app/tags/list", headers={"Authorization": "Bearer " + token}, timeout=30)


def arm_with(server, entra: str) -> requests.Response:
    s = make_session(server.base_url, verify=server.verify)
    return s.get(server.base_url + "/subscriptions?api-version=2022-12-01",
                 headers={"Authorization": "Bearer " + entra}, timeout=30)


class Tokens:
    """Every kind of token a principal can hold: registry access and refresh tokens (from its password and from an
    Entra token) and an Entra token for the management API."""

    def __init__(self, server, sp: dict):
        r = registry_token(server, sp, "life/app")
        assert r.status_code == 200, r.text
        self.access = r.json()["token"]
        self.refresh = refresh_token(server, sp)
        self.entra = aad_token(server, sp)
        r = exchange(server, self.entra)
        assert r.status_code == 200, r.text
        self.exchanged = r.json()["refresh_token"]

    def all_work(self, server):
        assert v2_with(server, self.access).status_code == 200
        for rt in (self.refresh, self.exchanged):
            r = refreshed(server, rt)
            assert r.status_code == 200, r.text
        assert arm_with(server, self.entra).status_code == 200
        assert exchange(server, self.entra).status_code == 200

    def all_refused(self, server, why: str):
        r = v2_with(server, self.access)
        assert r.status_code == 401 and "revoked" in r.text, f"{why}: access token {r.status_code} {r.text}"
        for rt in (self.refresh, self.exchanged):
            r = refreshed(server, rt)
            assert r.status_code == 401, f"{why}: refresh token {r.status_code} {r.text}"
        r = arm_with(server, self.entra)
        assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken" \
            and "revoked" in r.json()["error"]["message"], f"{why}: Entra token on ARM {r.status_code} {r.text}"
        r = exchange(server, self.entra)
        assert r.status_code == 401, f"{why}: Entra token at /oauth2/exchange {r.status_code} {r.text}"


def test_service_principal_lifecycle_and_tokens(moat):
    moat.client().push_image("life/app", build_image(1), tag="v1")
    sp = sp_create(moat, "life-sp", role="AcrPush")
    other = sp_create(moat, "bystander", role="AcrPull")
    # list and show, by appId or display name in any case
    rows = {r["displayName"]: r for r in parse_json_lines(moat.moat("sp", "list", "-o", "json").stdout)}
    assert rows["life-sp"]["appId"] == sp["appId"] and \
        [a["roleDefinitionName"] for a in rows["life-sp"]["roleAssignments"]] == ["AcrPush"], rows
    table = moat.moat("sp", "list").stdout
    assert table.splitlines()[0].split() == ["APP", "ID", "DISPLAY", "NAME", "CREATED", "ROLES"], table
    assert f"{sp['appId']}  life-sp" in table and "AcrPush@subscription" in table, table
    for key in (sp["appId"], "LIFE-SP"):
        shown = json.loads(moat.moat("sp", "show", "--id", key).stdout)
        assert shown["appId"] == sp["appId"] and shown["credentialsResetDateTime"] is None, shown
    p = moat.moat("sp", "show", "--id", "nobody", check=False)
    assert p.returncode != 0 and "no service principal 'nobody'" in p.stderr and "life-sp" in p.stderr, p.stderr

    before = Tokens(moat, sp)
    before.all_work(moat)
    bystander = Tokens(moat, other)

    # Reset: a new password, shown once; every token issued before is refused at once, the new password works.
    reset = json.loads(moat.moat("sp", "reset-credentials", "--id", sp["appId"]).stdout)
    assert set(reset) == {"appId", "password", "tenant"} and reset["appId"] == sp["appId"], reset
    assert reset["password"] != sp["password"] and reset["tenant"] == sp["tenant"]
    before.all_refused(moat, "after reset")
    assert registry_token(moat, sp, "life/app").status_code == 401, "the old password still signs in"
    renewed = dict(sp, password=reset["password"])
    after = Tokens(moat, renewed)
    after.all_work(moat)
    bystander.all_work(moat)  # another principal's tokens are untouched
    assert json.loads(moat.moat("sp", "show", "--id", "life-sp").stdout)["credentialsResetDateTime"]

    # Delete: its tokens and its password stop working, its role assignments go with it.
    moat.moat("sp", "delete", "--id", "life-sp")
    after.all_refused(moat, "after delete")
    assert registry_token(moat, renewed, "life/app").status_code == 401
    r = make_session(moat.base_url, verify=moat.verify).post(
        f"{moat.base_url}/{sp['tenant']}/oauth2/v2.0/token", timeout=30,
        data={"client_id": sp["appId"], "client_secret": reset["password"], "grant_type": "client_credentials",
              "scope": "https://management.azure.com/.default"})
    assert r.status_code == 400 and "was not found" in r.text, r.text
    assert "life-sp" not in moat.moat("sp", "list").stdout
    p = moat.moat("sp", "delete", "--id", sp["appId"], check=False)
    assert p.returncode != 0 and "no service principal" in p.stderr, p.stderr
    bystander.all_work(moat)

    rows = [e for e in activity(moat) if e["resourceId"] == f"/servicePrincipals/{sp['appId']}"]
    ops = [e["operationName"] for e in rows]
    assert ops == ["Microsoft.Graph/servicePrincipals/write",
                   "Microsoft.Graph/servicePrincipals/resetCredentials/action",
                   "Microsoft.Graph/servicePrincipals/delete"], ops
    assert all(e["caller"].startswith("local:") and e["status"] == "Succeeded" for e in rows), rows
    assert rows[1]["properties"]["credentialGeneration"] == 1, rows[1]
    assert len(rows[2]["properties"]["roleAssignmentsRemoved"]) == 1 and \
        rows[2]["properties"]["displayName"] == "life-sp", rows[2]
    assert not any("password" in json.dumps(e).lower() and reset["password"] in json.dumps(e) for e in rows)


def test_sp_create_refusals_leave_nothing_behind(moat):
    sub = Arm(moat, sp_create(moat, "owner-refusals")).subscription
    missing = f"/subscriptions/{sub}/resourceGroups/moat/providers/Microsoft.ContainerRegistry/registries/nosuchreg"
    for args, needle in (
        (["--role", "AcrPull", "--scope", missing], "registry 'nosuchreg' does not exist"),
        (["--role", "Writer"], "unknown role 'Writer'"),
        (["--scope", f"/subscriptions/{sub}"], "--scope needs --role"),
        (["--role", "AcrPull", "--scope", "/subscriptions/other"], "is not a scope of subscription"),
    ):
        p = moat.moat("sp", "create", "--name", "refused-sp", *args, check=False)
        assert p.returncode != 0 and needle in p.stderr, (args, p.stderr)
        assert p.stdout == ""
        assert "refused-sp" not in moat.moat("sp", "list").stdout, f"{args}: a refused create made a principal"


# ------------------------------------------------------------------------------------------------ role assignments

def registry_id(sub: str, name: str, rg: str = "moat") -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}"


def may_push(server, sp: dict, login: str) -> bool:
    """Whether a fresh token of the principal lets it push a blob into `login`'s registry."""
    c = server.client(host=login, user=sp["appId"], password=sp["password"])
    r = c.start_upload("roles/app")
    return r.status_code == 202


def test_role_assignments_with_moat_role(moat):
    owner = sp_create(moat, "roles-owner")
    sub = Arm(moat, owner).subscription
    moat.moat("registry", "create", "rolesreg")
    login = f"rolesreg.localhost:{moat.port}"
    reg = registry_id(sub, "rolesreg")
    pusher = sp_create(moat, "roles-pusher", role=None)
    assert not may_push(moat, pusher, login)

    made = json.loads(moat.moat("role", "assignment", "create", "--assignee", "roles-pusher", "--role", "acrpush",
                                "--scope", reg).stdout)
    assert made["principalId"] == pusher["appId"] and made["roleDefinitionName"] == "AcrPush", made
    assert made["scope"] == reg and made["id"] == f"{reg}/providers/Microsoft.Authorization/roleAssignments/" \
        f"{made['name']}", made
    assert made["roleDefinitionId"].endswith("/roleDefinitions/8311e382-0749-4cb8-b61a-304f252e45ec"), made
    assert may_push(moat, pusher, login), "the new role does not hold on the next token"
    # Assigning it again answers the same assignment (as az does); nothing doubles.
    again = json.loads(moat.moat("role", "assignment", "create", "--assignee", pusher["appId"], "--role", "AcrPush",
                                 "--scope", reg).stdout)
    assert again["name"] == made["name"], again
    moat.moat("role", "assignment", "create", "--assignee", "roles-pusher", "--role", "Reader", "--scope",
              f"/subscriptions/{sub}/resourceGroups/moat")

    def listed(*args):
        return parse_json_lines(moat.moat("role", "assignment", "list", "-o", "json", *args).stdout)

    mine = listed("--assignee", "roles-pusher")
    assert sorted(a["roleDefinitionName"] for a in mine) == ["AcrPush", "Reader"], mine
    assert all(a["principalName"] == "roles-pusher" for a in mine), mine
    assert [a["name"] for a in listed("--scope", reg)] == [made["name"]]
    inherited = {a["roleDefinitionName"] for a in listed("--scope", reg, "--include-inherited")}
    assert inherited == {"AcrPush", "Reader", "Owner"}, inherited  # the owner's is at the subscription
    assert [a["roleDefinitionName"] for a in listed("--role", "reader")] == ["Reader"]
    table = moat.moat("role", "assignment", "list", "--assignee", "roles-pusher").stdout.splitlines()
    assert table[0].split() == ["NAME", "PRINCIPAL", "DISPLAY", "NAME", "ROLE", "SCOPE"], table
    assert any(line.split()[-2:] == ["AcrPush", "moat/rolesreg"] for line in table), table

    # Refusals: each says what to do, and changes nothing.
    for args, needle in (
        (["create", "--assignee", "nobody", "--role", "AcrPull", "--scope", reg], "no service principal 'nobody'"),
        (["create", "--assignee", "roles-pusher", "--role", "Writer", "--scope", reg], "unknown role 'Writer'"),
        (["create", "--assignee", "roles-pusher", "--role", "AcrPull", "--scope", reg + "/x"], "is not a scope"),
        (["create", "--assignee", "roles-pusher", "--role", "AcrPull", "--scope", registry_id(sub, "nosuchreg")],
         "registry 'nosuchreg' does not exist"),
        (["delete"], "say which assignments to delete"),
        (["delete", "--assignee", "roles-pusher", "--role", "AcrDelete"], "no matched assignments"),
        (["delete", "--ids", "/subscriptions/x"], "is not a role assignment id"),
    ):
        p = moat.moat("role", "assignment", *args, check=False)
        assert p.returncode != 0 and needle in p.stderr, (args, p.stderr)
    assert len(listed("--assignee", "roles-pusher")) == 2

    # Delete by selection and by id; the next token no longer has the role.
    moat.moat("role", "assignment", "delete", "--assignee", "roles-pusher", "--scope", reg)
    assert not may_push(moat, pusher, login), "a deleted role assignment still holds"
    [reader] = listed("--assignee", "roles-pusher")
    moat.moat("role", "assignment", "delete", "--ids", reader["id"])
    assert listed("--assignee", "roles-pusher") == []

    rows = [e for e in activity(moat) if "/providers/Microsoft.Authorization/roleAssignments/" in e["resourceId"]
            and e["caller"].startswith("local:")]
    ours = [(e["operationName"].rsplit("/", 1)[1], e["resourceId"]) for e in rows
            if e["resourceId"] in (made["id"], reader["id"])]
    assert ours == [("write", made["id"]), ("write", reader["id"]), ("delete", made["id"]),
                    ("delete", reader["id"])], ours
    regs = [e["registry"] for e in rows if e["resourceId"] == made["id"]]
    assert regs == ["rolesreg", "rolesreg"], regs


def test_role_assignments_over_arm(moat):
    """The ARM shapes and rules, with a plain HTTP client: PUT/GET/list/DELETE at every scope kind, role definitions,
    Owner-only writes, and the refusals."""
    owner = Arm(moat, sp_create(moat, "arm-roles-owner"))
    sub = owner.subscription
    assert owner.put_registry("armroles", {"location": "local", "sku": {"name": "Premium"}}).status_code == 201
    reg = owner.registry_path("armroles")
    target = sp_create(moat, "arm-roles-target", role=None)
    contributor = Arm(moat, sp_create(moat, "arm-roles-contrib", role="Contributor"))
    auth = "/providers/Microsoft.Authorization"
    api = "2022-04-01"

    defs = owner.request("GET", f"{reg}{auth}/roleDefinitions", api_version=api,
                         params={"$filter": "roleName eq 'AcrPush'"})
    assert defs.status_code == 200, defs.text
    [d] = defs.json()["value"]
    push_def = f"/subscriptions/{sub}{auth}/roleDefinitions/8311e382-0749-4cb8-b61a-304f252e45ec"
    assert d["id"] == push_def and d["properties"]["roleName"] == "AcrPush" and \
        d["properties"]["type"] == "BuiltInRole", d
    names = {x["properties"]["roleName"] for x in owner.request(
        "GET", f"/subscriptions/{sub}{auth}/roleDefinitions", api_version=api).json()["value"]}
    assert names == {"Owner", "Contributor", "Reader", "AcrPush", "AcrPull", "AcrDelete"}, names
    r = owner.request("GET", f"/subscriptions/{sub}{auth}/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7",
                      api_version=api)
    assert r.status_code == 200 and r.json()["properties"]["roleName"] == "Reader", r.text

    name = "0b2f4e1c-1111-4a2b-9c3d-000000000001"
    path = f"{reg}{auth}/roleAssignments/{name}"
    body = {"properties": {"roleDefinitionId": push_def, "principalId": target["appId"],
                           "principalType": "ServicePrincipal"}}
    # Only an Owner of the scope (or above) assigns roles: a Contributor is refused, naming the action.
    r = contributor.request("PUT", path, body, api_version=api)
    err = assert_arm_error(r, 403, "AuthorizationFailed")
    assert "Microsoft.Authorization/roleAssignments/write" in err["message"] and path in err["message"], err
    r = owner.request("PUT", path, body, api_version=api)
    assert r.status_code == 201, r.text
    a = r.json()
    assert a["id"] == path and a["name"] == name and a["type"] == "Microsoft.Authorization/roleAssignments", a
    assert a["properties"]["roleDefinitionId"] == push_def and a["properties"]["principalId"] == target["appId"]
    assert a["properties"]["scope"] == reg and a["properties"]["createdBy"] == owner.sp["appId"], a
    assert owner.request("PUT", path, body, api_version=api).status_code == 200, "the same PUT again"
    assert_arm_error(owner.request("PUT", f"{reg}{auth}/roleAssignments/0b2f4e1c-1111-4a2b-9c3d-000000000002",
                                   body, api_version=api), 409, "RoleAssignmentExists")
    other = dict(body, properties=dict(body["properties"], roleDefinitionId=push_def.replace(
        "8311e382-0749-4cb8-b61a-304f252e45ec", "7f951dda-4ed3-4680-a7ca-43fe172d538d")))
    assert_arm_error(owner.request("PUT", path, other, api_version=api), 409, "RoleAssignmentUpdateNotPermitted")
    assert may_push(moat, target, f"armroles.localhost:{moat.port}")

    # Reads: one, at the scope (atScope(): the owner's subscription assignment above it too), by principal.
    assert owner.request("GET", path, api_version=api).json()["id"] == path
    at = owner.request("GET", f"{reg}{auth}/roleAssignments", api_version=api,
                       params={"$filter": "atScope()"}).json()["value"]
    assert {x["properties"]["principalId"] for x in at} >= {target["appId"], owner.sp["appId"]}, at
    sub_at = owner.request("GET", f"/subscriptions/{sub}{auth}/roleAssignments", api_version=api,
                           params={"$filter": "atScope()"}).json()["value"]
    assert path not in [x["id"] for x in sub_at], "atScope() listed an assignment below the scope"
    by_principal = owner.request("GET", f"/subscriptions/{sub}{auth}/roleAssignments", api_version=api,
                                 params={"$filter": f"principalId eq '{target['appId']}'"}).json()["value"]
    assert [x["id"] for x in by_principal] == [path], by_principal
    assert_arm_error(owner.request("GET", f"{reg}{auth}/roleAssignments", api_version=api,
                                   params={"$filter": "roleName eq 'x'"}), 400, "InvalidFilter")

    # Bad input: each a clear ARM error, nothing written.
    for bad_name, bad_body, status, code in (
        ("not-a-guid", body, 400, "InvalidRoleAssignmentId"),
        (name[:-1] + "3", {"properties": {"roleDefinitionId": push_def.replace("8311e382", "00000000"),
                                          "principalId": target["appId"]}}, 400, "RoleDefinitionDoesNotExist"),
        (name[:-1] + "3", {"properties": {"roleDefinitionId": push_def,
                                          "principalId": "0b2f4e1c-9999-4a2b-9c3d-000000000000"}}, 400,
         "PrincipalNotFound"),
        (name[:-1] + "3", {"properties": {"roleDefinitionId": push_def, "principalId": target["appId"],
                                          "principalType": "User"}}, 400, "UnmatchedPrincipalType"),
        (name[:-1] + "3", {"properties": {"roleDefinitionId": push_def, "principalId": target["appId"],
                                          "condition": "@Resource[x] == 'y'"}}, 400, "FeatureNotSupported"),
        (name[:-1] + "3", {"properties": {"principalId": target["appId"]}}, 400, None),
    ):
        r = owner.request("PUT", f"{reg}{auth}/roleAssignments/{bad_name}", bad_body, api_version=api)
        assert r.status_code == status and (code is None or r.json()["error"]["code"] == code), (bad_name, r.text)
    r = owner.request("PUT", f"{owner.registry_path('nosuchreg')}{auth}/roleAssignments/{name[:-1]}4", body,
                      api_version=api)
    assert_arm_error(r, 404, "ResourceNotFound")
    assert len(owner.request("GET", f"/subscriptions/{sub}{auth}/roleAssignments", api_version=api,
                             params={"$filter": f"principalId eq '{target['appId']}'"}).json()["value"]) == 1

    # Delete: Owner only; the assignment's body, then 204 once gone; the role no longer holds.
    assert_arm_error(contributor.request("DELETE", path, api_version=api), 403, "AuthorizationFailed")
    r = owner.request("DELETE", path, api_version=api)
    assert r.status_code == 200 and r.json()["id"] == path, r.text
    assert owner.request("DELETE", path, api_version=api).status_code == 204
    assert_arm_error(owner.request("GET", path, api_version=api), 404, "RoleAssignmentNotFound")
    assert not may_push(moat, target, f"armroles.localhost:{moat.port}")

    rows = [e for e in activity(moat) if e["resourceId"] == path]
    ops = [(e["operationName"], e["status"], e["caller"]) for e in rows]
    assert ("Microsoft.Authorization/roleAssignments/write", "Failed", contributor.sp["appId"]) in ops, ops
    assert ("Microsoft.Authorization/roleAssignments/write", "Succeeded", owner.sp["appId"]) in ops, ops
    assert ("Microsoft.Authorization/roleAssignments/delete", "Succeeded", owner.sp["appId"]) in ops, ops
    assert all(e["registry"] == "armroles" for e in rows), rows


def test_role_assignments_with_the_real_az(moat, tmp_path):
    """`az role assignment create/list/delete` as people type them: `--assignee <appId>` (resolved through Moat's
    directory), `--assignee-object-id` with `--assignee-principal-type`, `--role` by name, `--scope`, `--ids`."""
    az = Az(moat, tmp_path / "azcfg")
    owner = sp_create(moat, "az-roles-owner")
    az.register_and_login(owner)
    sub = Arm(moat, owner).subscription
    az("group", "create", "-n", "rg1", "-l", "local")
    az("acr", "create", "-n", "azroles", "-g", "rg1", "--sku", "Premium")
    reg = registry_id(sub, "azroles", "rg1")
    login = f"azroles.localhost:{moat.port}"
    target = sp_create(moat, "az-roles-target", role=None)

    made = az("role", "assignment", "create", "--assignee", target["appId"], "--role", "AcrPush", "--scope", reg,
              json_out=True).json
    assert made["principalId"] == target["appId"] and made["principalType"] == "ServicePrincipal", made
    assert made["roleDefinitionId"].endswith("8311e382-0749-4cb8-b61a-304f252e45ec"), made
    assert may_push(moat, target, login)
    again = az("role", "assignment", "create", "--assignee", target["appId"], "--role", "AcrPush", "--scope", reg,
               json_out=True).json
    assert again["name"] == made["name"], "az create twice made a second assignment"
    az("role", "assignment", "create", "--assignee-object-id", target["appId"], "--assignee-principal-type",
       "ServicePrincipal", "--role", "AcrPull", "--scope", reg)

    listed = az("role", "assignment", "list", "--scope", reg, json_out=True).json
    assert sorted(a["roleDefinitionName"] for a in listed) == ["AcrPull", "AcrPush"], listed
    assert {a["principalName"] for a in listed} == {target["appId"]}, listed
    mine = az("role", "assignment", "list", "--assignee", target["appId"], "--all", json_out=True).json
    assert len(mine) == 2, mine
    # moat role sees what az made, and the other way round.
    assert len(parse_json_lines(moat.moat("role", "assignment", "list", "-o", "json", "--assignee",
                                          target["appId"]).stdout)) == 2

    az("role", "assignment", "delete", "--assignee", target["appId"], "--role", "AcrPush", "--scope", reg)
    assert not may_push(moat, target, login)
    [pull] = az("role", "assignment", "list", "--scope", reg, json_out=True).json
    az("role", "assignment", "delete", "--ids", pull["id"])
    assert az("role", "assignment", "list", "--scope", reg, json_out=True).json == []
    # A role az names that Moat does not have is refused by name.
    p = az("role", "assignment", "create", "--assignee", target["appId"], "--role", "Storage Blob Data Reader",
           "--scope", reg, ok=False)
    assert p.returncode != 0 and "doesn't exist" in p.stderr, p.stderr

    ops = [e["operationName"] for e in activity(moat) if e["caller"] == owner["appId"]
           and "roleAssignments" in e["resourceId"] and e["status"] == "Succeeded"]
    assert ops.count("Microsoft.Authorization/roleAssignments/write") == 2 and \
        ops.count("Microsoft.Authorization/roleAssignments/delete") == 2, ops
