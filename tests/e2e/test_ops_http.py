"""Operating Moat over HTTP: plain answers for the management routes Moat does not serve (with the real az), ARM
paths in any case, health endpoints on every listener, the access log and JSON logs."""
from __future__ import annotations

import json
import sqlite3
import time

import pytest
import requests

from conftest import (ARM_API_VERSION, Arm, assert_arm_error, build_image, client_via, create_private_endpoint,
                      make_session, moat_bin, run, sp_create)
from test_arm_az import Az

UNSUPPORTED = ["replications/r1", "tasks", "taskRuns/t1", "runs", "agentPools",
               "connectedRegistries/c1", "cacheRules", "credentialSets/c", "scopeMaps", "tokens/t",
               "somethingElse"]


@pytest.fixture
def az(moat, tmp_path):
    return Az(moat, tmp_path / "azcfg")


def _feature(route: str) -> str:
    return route.split("/")[0]


def test_unsupported_management_routes_name_the_feature(moat):
    arm = Arm(moat, sp_create(moat, "ops-unsupported"))
    assert arm.put_registry("opsfeat", {"location": "local", "sku": {"name": "Premium"}}).status_code == 201
    reg = arm.registry_path("opsfeat")
    for route in UNSUPPORTED:
        feature = _feature(route)
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            for path in (f"{reg}/{route}", f"{reg}/{route}".upper().replace("/OPSFEAT/", "/opsfeat/")):
                r = arm.request(method, path, {} if method in ("PUT", "PATCH") else None)
                body = assert_arm_error(r, 400, "FeatureNotSupported")
                msg = body["message"]
                assert msg.lower() == (f"Moat does not support {feature} "
                                       f"(Microsoft.ContainerRegistry/registries/{feature}).").lower(), (path, msg)
        # an action on one of them, with an api-version only that feature's SDK sends
        r = arm.request("POST", f"{reg}/{route}/x/listEvents", api_version="2019-06-01-preview")
        assert_arm_error(r, 400, "FeatureNotSupported")
    # the registry's own operations Moat does not serve are named by operation
    r = arm.request("DELETE", f"{reg}/listUsages")
    body = assert_arm_error(r, 400, "FeatureNotSupported")
    assert "Microsoft.ContainerRegistry/registries/listUsages/delete" in body["message"], body
    # another provider
    r = arm.request("PUT", f"/subscriptions/{arm.subscription}/resourceGroups/rg1/providers/Microsoft.Storage/"
                           f"storageAccounts/acct", {"location": "local"}, api_version="2023-01-01")
    body = assert_arm_error(r, 400, "FeatureNotSupported")
    assert body["message"] == "Moat does not support storageAccounts (Microsoft.Storage/storageAccounts).", body
    # a change Moat refused is in the activity log with the refusal
    rows = [e for e in moat.audit(log="activity", registry="opsfeat")
            if e["operationName"] == "Microsoft.ContainerRegistry/registries/replications/write"]
    assert rows and rows[0]["properties"]["error"]["code"] == "FeatureNotSupported", rows
    # unauthenticated callers still get 401 first
    anon = make_session(moat.base_url, verify=moat.verify)
    r = anon.get(moat.base_url + f"{reg}/tasks", params={"api-version": ARM_API_VERSION})
    assert r.status_code == 401, r.text


def test_replications_list_is_empty_for_a_registry_the_caller_may_read(moat):
    arm = Arm(moat, sp_create(moat, "ops-repl"))
    assert arm.put_registry("opsrepl", {"location": "local", "sku": {"name": "Premium"}}).status_code == 201
    r = arm.request("GET", arm.registry_path("opsrepl") + "/REPLICATIONS")
    assert r.status_code == 200 and r.json() == {"value": []}, r.text
    r = arm.request("GET", arm.registry_path("nosuchreg") + "/replications")
    assert r.status_code == 404, r.text


def test_arm_paths_in_uppercase_reach_the_management_api(moat):
    arm = Arm(moat, sp_create(moat, "ops-upper"))
    assert arm.put_registry("opsupper", {"location": "local", "sku": {"name": "Premium"}}).status_code == 201
    for path in (arm.registry_path("opsupper").upper().replace("OPSUPPER", "opsupper"),
                 arm.registry_path("opsupper").replace("/subscriptions/", "/Subscriptions/"),
                 arm.registry_path("opsupper").replace("/subscriptions/", "/sUbScRiPtIoNs/")
                 .replace("resourceGroups", "RESOURCEGROUPS").replace("providers", "Providers")
                 .replace("Microsoft.ContainerRegistry", "microsoft.containerregistry")
                 .replace("registries", "Registries")):
        r = arm.request("GET", path)
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert r.json()["name"] == "opsupper", r.text
    r = arm.request("GET", "/SUBSCRIPTIONS", api_version="2022-12-01")
    assert r.status_code == 200 and r.json()["value"][0]["subscriptionId"] == arm.subscription, r.text


def test_az_show_endpoints_and_unsupported_commands(moat, az):
    sp = sp_create(moat, "ops-az", "Owner")
    az.register_and_login(sp)
    name = "opsazreg"
    az("acr", "create", "-n", name, "-g", "rg1", "--sku", "Premium", "-l", "local")
    # without dedicated data endpoints az lists replications (none) and prints the login server
    shown = az("acr", "show-endpoints", "-n", name, json_out=True).json
    assert shown["loginServer"] == f"{name}.localhost:{moat.port}", shown
    assert [d["region"] for d in shown["dataEndpoints"]] == ["local"], shown
    az("acr", "update", "-n", name, "--data-endpoint-enabled", "true")
    shown = az("acr", "show-endpoints", "-n", name, json_out=True).json
    assert shown["dataEndpoints"] == [{"region": "local", "endpoint": f"{name}.local.data.localhost:{moat.port}"}], \
        shown
    assert az("acr", "replication", "list", "-r", name, json_out=True).json == []
    for args, feature in ((["token", "list", "-r", name], "tokens"),
                          (["task", "list", "-r", name], "tasks"),
                          (["scope-map", "list", "-r", name], "scopeMaps")):
        p = az("acr", *args, ok=False)
        assert p.returncode != 0, p.stdout
        want = f"Moat does not support {feature} (Microsoft.ContainerRegistry/registries/{feature})."
        assert want in p.stderr, (args, p.stderr)


# ------------------------------------------------------------------------------------------------ health and logs

def _get(server, address: str, path: str, host: str | None = None) -> requests.Response:
    """GET SCHEME://ADDRESS:PORT/PATH with `host` (default: the login server) as Host and TLS name, no credentials."""
    return client_via(server, address, host=host).request("GET", path, auth=False)


def test_health_endpoints_answer_on_every_listener_and_reveal_nothing(moat):
    arm = Arm(moat, sp_create(moat, "ops-health"))
    assert arm.put_registry("opshealth", {"location": "local", "sku": {"name": "Premium"}}).status_code == 201
    pe = create_private_endpoint(arm, "opshealth")
    r = arm.patch_registry("opshealth", {"properties": {"publicNetworkAccess": "Disabled",
                                                         "dataEndpointEnabled": True}})
    assert r.status_code == 200, r.text
    login = f"opshealth.localhost:{moat.port}"
    data_host = f"opshealth.local.data.localhost:{moat.port}"
    # the registry refuses the public listener, and its data endpoint too
    r = _get(moat, "127.0.0.1", "/v2/", host=login)
    assert r.status_code == 403 and "DENIED" in r.text, r.text
    before = len(moat.audit(log="all"))
    version = run([moat_bin(), "--version"]).stdout.split()[-1]
    for address, host in (("127.0.0.1", None), ("127.0.0.1", login), ("127.0.0.1", data_host),
                          (pe["address"], login), (pe["address"], data_host)):
        for path, word in (("/healthz", "ok"), ("/readyz", "ready")):
            r = _get(moat, address, path, host=host)
            assert (r.status_code, r.text) == (200, word), (address, host, path, r.status_code, r.text)
            assert r.headers["Content-Type"].startswith("text/plain"), r.headers
            shown = r.text + json.dumps(dict(r.headers))
            assert version not in shown and "opshealth" not in shown and "default" not in shown, shown
    time.sleep(0.5)  # refusals are written in batches: none may come of the health checks
    assert len(moat.audit(log="all")) == before, "health checks were audited"

    # not ready: the store lacks a migration this binary knows (another node has not finished migrating)
    db = sqlite3.connect(moat.data_dir / "moat.db")
    with db:
        row = db.execute("SELECT * FROM _sqlx_migrations ORDER BY version DESC LIMIT 1").fetchone()
        db.execute("DELETE FROM _sqlx_migrations WHERE version = ?", (row[0],))
    r = _get(moat, "127.0.0.1", "/readyz")
    assert (r.status_code, r.text) == (503, "not ready"), r.text
    assert _get(moat, "127.0.0.1", "/healthz").status_code == 200
    with db:
        db.execute(f"INSERT INTO _sqlx_migrations VALUES ({','.join('?' * len(row))})", row)
    db.close()
    assert _get(moat, "127.0.0.1", "/readyz").status_code == 200


SECRETS = ["S3CRET-TOKEN", "S3CRET-PASSWORD", "S3CRET-SIG", "S3CRET-CODE", "S3CRET-LINK", "S3CRET-BARE"]


def _requests_with_secrets(server) -> tuple[str, int]:
    """A few requests whose query strings carry secrets; returns a pushed blob's digest and size."""
    c = server.client()
    data = b"access log blob" * 100
    digest = c.push_blob("ops/access", data)
    assert c.get_blob("ops/access", digest).content == data
    s = make_session(server.base_url, verify=server.verify)
    s.get(server.base_url + "/v2/ops/access/tags/list", params={"n": "1", "token": SECRETS[0],
                                                                 "password": SECRETS[1], "sig": SECRETS[2]})
    s.get(server.base_url + "/oauth2/token", params={"service": server.login_server, "code": SECRETS[3]})
    s.get(server.base_url + f"/?r=ops/access&d={digest}&e=1&s={SECRETS[4]}")
    s.get(server.base_url + f"/healthz?{SECRETS[5]}")
    return digest, len(data)


def _log_lines(server) -> list[str]:
    time.sleep(0.3)  # a line is written when its response body is dropped
    return [l for l in server.log_path.read_text().splitlines() if l.strip() and not l.startswith("=====")]


def test_access_log_in_json_lines_without_secrets(moat_factory):
    server = moat_factory(extra_args=["--access-log", "--log-format", "json"])
    digest, size = _requests_with_secrets(server)
    server.stop()
    lines = _log_lines(server)
    rows = [json.loads(l) for l in lines]  # every line on stderr is one JSON object
    assert all(isinstance(r, dict) and "timestamp" in r and "level" in r for r in rows), lines
    assert any("moat listening on" in r.get("message", "") for r in rows), rows
    text = "\n".join(lines)
    for secret in SECRETS:
        assert secret not in text, secret
    access = [r for r in rows if r.get("target") == "moat::access"]
    assert access, rows
    for r in access:
        assert {"listener", "local", "client", "method", "path", "status", "bytes", "duration_ms"} <= r.keys(), r
        assert r["listener"] == "public" and r["client"] == "127.0.0.1", r
        assert r["local"] == server.login_server, r
    paths = {r["path"] for r in access}
    assert "/v2/ops/access/tags/list?n=1&token=***&password=***&sig=***" in paths, paths
    assert f"/?r=ops/access&d={digest}&e=1&s=***" in paths, paths
    assert "/healthz?***" in paths, paths
    pulls = [r for r in access if r["method"] == "GET" and r["path"] == f"/v2/ops/access/blobs/{digest}"]
    assert [(r["status"], r["bytes"]) for r in pulls] == [(200, size)], pulls


def test_access_log_from_the_configuration_file_and_text_format(moat_factory, tmp_path):
    conf = tmp_path / "moat.toml"
    conf.write_text('access_log = true\nlog_format = "json"\n')
    server = moat_factory(extra_args=["--config", str(conf)])
    _requests_with_secrets(server)
    rows = [json.loads(l) for l in _log_lines(server)]
    assert any(r.get("target") == "moat::access" and r.get("path") == "/v2/" for r in rows), rows

    # the flag wins over the file's format; text lines carry the same fields
    server = moat_factory(extra_args=["--config", str(conf), "--log-format", "text"])
    _requests_with_secrets(server)
    lines = [l for l in _log_lines(server) if "moat::access" in l]
    assert lines and all(not l.startswith("{") for l in lines), lines
    assert any("method=GET" in l and "status=200" in l and "listener=public" in l for l in lines), lines
    assert not any(secret in l for l in lines for secret in SECRETS), lines

    # off by default
    quiet = moat_factory()
    _requests_with_secrets(quiet)
    assert not any("moat::access" in l for l in _log_lines(quiet))
