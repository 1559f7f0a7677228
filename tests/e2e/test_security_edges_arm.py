"""Security suite, issue 9 finding 7 and the management-plane lows of finding 9: only names Moat controls in
redirects (a registry's `location` is a region name on every way in, and a data endpoint's host is built only from
validated parts); a caller without rights on a scope learns nothing about it (no subscription id, the same
`AuthorizationFailed` whether a registry exists or not); resource group names and tags follow ARM's rules; a private
endpoint listens only on a unicast host address, and a registry has at most 200 of them."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import urllib.parse
import uuid

from conftest import (Arm, assert_arm_error, create_private_endpoint, moat_bin, private_endpoint_body,
                      sha256, sp_create)

REGISTRIES = "providers/Microsoft.ContainerRegistry/registries"


def quoted(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def group_path(arm: Arm, rg: str) -> str:
    return f"/subscriptions/{arm.subscription}/resourceGroups/{quoted(rg)}"


def premium(location=None, **props) -> dict:
    body = {"sku": {"name": "Premium"}, "properties": props}
    if location is not None:
        body["location"] = location
    return body


# ------------------------------------------------------------------------------------------------ finding 7

BAD_LOCATIONS = [
    "westeurope\n",                # breaks every blob GET (a newline in a Location header)
    "west\r\nX-Injected: yes",     # header injection
    "evil.com",                    # the redirect would leave the server's domain
    "evil.com/x?",
    "attacker.example:443",
    "west-europe",
    " westeurope",
    "westeurope ",
    "west  europe",
    "wësteurope",                  # Unicode letters
    "ｗｅｓｔ",                       # fullwidth look-alikes
    "west\u202eeurope",            # a bidi override
    "a" * 64,                      # longer than a DNS label
    "",
]


def test_location_is_a_region_name_on_every_way_in(moat, tmp_path):
    arm = Arm(moat, sp_create(moat, "owner-loc"))

    # ARM PUT: refused with ARM's error naming the value (control characters written out); nothing is created.
    for i, bad in enumerate(BAD_LOCATIONS):
        name = f"badloc{i}x"
        r = arm.put_registry(name, premium(bad))
        err = assert_arm_error(r, 400, "LocationNotAvailableForResourceType", target=True)
        assert err["target"] == "location", err
        assert "\n" not in err["message"] and "\r" not in err["message"], err
        assert arm.get_registry(name).status_code == 404, f"{bad!r} created a registry"
    err = assert_arm_error(arm.put_registry("badlocnl", premium("westeurope\n")), 400,
                           "LocationNotAvailableForResourceType")
    assert "'westeurope\\n'" in err["message"], err

    # ARM's spellings of a region are stored as ARM stores them.
    for name, given, stored in [("locdisplay", "West Europe", "westeurope"), ("locupper", "EASTUS2", "eastus2")]:
        r = arm.put_registry(name, premium(given, dataEndpointEnabled=True))
        assert r.status_code in (200, 201), r.text
        reg = r.json()
        assert reg["location"] == stored, reg
        assert reg["properties"]["dataEndpointHostNames"] == [f"{name}.{stored}.data.localhost:{moat.port}"], reg

    # PATCH: the same rule; and a location stays what it was at creation.
    for bad in ("evil.com", "westeurope\n"):
        assert_arm_error(arm.patch_registry("locdisplay", {"location": bad}), 400,
                         "LocationNotAvailableForResourceType")
    assert_arm_error(arm.patch_registry("locdisplay", {"location": "eastus"}), 400,
                     "LocationNotAvailableForResourceType")
    assert arm.patch_registry("locdisplay", {"location": "WestEurope"}).status_code == 200
    # A re-PUT with another spelling of the same region is an update, not a move.
    assert arm.put_registry("locdisplay", premium("West europe")).status_code == 200

    # Resource groups carry a location too.
    r = arm.request("PUT", group_path(arm, "rgloc"), {"location": "evil.com"})
    assert_arm_error(r, 400, "LocationNotAvailableForResourceType")
    r = arm.request("PUT", group_path(arm, "rgloc"), {"location": "North Europe"})
    assert r.status_code == 201 and r.json()["location"] == "northeurope", r.text

    # The CLIs: `moat acr create -l`, and the server's own region (`moat registry create`, `moat serve`).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOAT_")}
    env["MOAT_CONFIG_DIR"] = str(tmp_path / "cli")
    for bad in ("evil.com", "westeurope\n", "wëst"):
        p = subprocess.run([moat_bin(), "acr", "create", "-n", "cliloc1", "-g", "rg1", "--sku", "Premium",
                            "-l", bad], capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode != 0 and "is not a region name" in p.stderr, (bad, p.returncode, p.stderr)
        p = moat.moat("registry", "create", "cliloc2", "--listen", moat.login_server, "--region", bad,
                      check=False)
        assert p.returncode != 0 and "is not a region name" in p.stderr, (bad, p.returncode, p.stderr)
    p = moat.moat("registry", "list", "--output", "json", "--listen", moat.login_server)
    assert "cliloc2" not in p.stdout, p.stdout


def test_data_endpoint_redirects_only_to_names_moat_controls(moat):
    """The 307 of a blob GET names `<registry>.<region>.data.<domain>` built from validated parts; a location an
    older database holds that is not a region name is never used: the login server serves the blob itself."""
    arm = Arm(moat, sp_create(moat, "owner-redirect"))
    name = "redirreg"
    r = arm.put_registry(name, premium("West Europe", dataEndpointEnabled=True))
    assert r.status_code in (200, 201), r.text
    login = f"{name}.localhost:{moat.port}"
    client = moat.client(host=login)
    layer = os.urandom(2048)
    digest = client.push_blob("app/x", layer)
    r = client.request("GET", f"/v2/app/x/blobs/{digest}", repo="app/x")
    assert r.status_code == 307, (r.status_code, r.text)
    location = urllib.parse.urlsplit(r.headers["Location"])
    assert location.netloc == f"{name}.westeurope.data.localhost:{moat.port}", r.headers["Location"]

    # A database written before the rule: the registry's stored location is a host of someone else's, with a
    # newline. The server still loads it, shows it, and never redirects there.
    moat.stop()
    db = sqlite3.connect(moat.data_dir / "moat.db")
    (settings,) = db.execute("SELECT settings FROM registries WHERE name = ?", (name,)).fetchone()
    settings = json.loads(settings)
    settings["location"] = "evil.example/\nx"
    db.execute("UPDATE registries SET settings = ? WHERE name = ?", (json.dumps(settings), name))
    db.commit()
    db.close()
    moat.start()

    reg = arm.get_registry(name).json()
    assert reg["location"] == "evil.example/\nx", reg
    assert reg["properties"]["dataEndpointHostNames"] == [], reg
    client.reset()
    r = client.request("GET", f"/v2/app/x/blobs/{digest}", repo="app/x")
    assert r.status_code == 200 and r.content == layer, (r.status_code, r.headers.get("Location"))
    assert "Location" not in r.headers, r.headers
    link = arm.request("GET", arm.registry_path(name) + "/privateLinkResources/registry").json()
    assert link["properties"]["requiredMembers"] == ["registry"], link

    # The one way to repair it: set a region; the data endpoint is back, under the server's domain.
    r = arm.patch_registry(name, {"location": "westeurope"})
    assert r.status_code == 200 and r.json()["location"] == "westeurope", r.text
    r = client.request("GET", f"/v2/app/x/blobs/{digest}", repo="app/x")
    assert r.status_code == 307, r.status_code
    assert urllib.parse.urlsplit(r.headers["Location"]).netloc == f"{name}.westeurope.data.localhost:{moat.port}"
    # Once a region, it is immutable again.
    assert_arm_error(arm.patch_registry(name, {"location": "eastus"}), 400, "LocationNotAvailableForResourceType")
    assert sha256(layer) == digest


# ------------------------------------------------------------------------------------------------ finding 9: scopes

def test_without_rights_a_scope_reads_the_same_whether_anything_exists(moat):
    owner = Arm(moat, sp_create(moat, "owner-scopes"))
    sub = owner.subscription
    assert owner.request("PUT", group_path(owner, "teamb"), {"location": "local"}).status_code == 201
    assert owner.put_registry("teambsecret", premium("local", adminUserEnabled=True), rg="teamb").status_code in (200, 201)

    # A principal without any role: no subscription, no resource groups, nothing under any subscription id, and
    # never the server's subscription id when it did not name it.
    nobody = Arm(moat, sp_create(moat, "nobody-scopes", role=None))
    r = nobody.request("GET", "/subscriptions", api_version="2022-12-01")
    assert r.status_code == 200 and r.json()["value"] == [], r.text
    other = str(uuid.uuid4())
    for s in (sub, other):
        for path in (f"/subscriptions/{s}", f"/subscriptions/{s}/resourcegroups",
                     f"/subscriptions/{s}/resourceGroups/teamb",
                     f"/subscriptions/{s}/{REGISTRIES}",
                     f"/subscriptions/{s}/resourceGroups/teamb/{REGISTRIES}",
                     f"/subscriptions/{s}/resourceGroups/teamb/{REGISTRIES}/teambsecret",
                     f"/subscriptions/{s}/resources"):
            r = nobody.request("GET", path, api_version="2025-11-01")
            err = assert_arm_error(r, 403, "AuthorizationFailed")
            assert nobody.sp["appId"] in err["message"], err
            if s == other:
                assert sub not in r.text, f"{path} told the subscription id: {r.text}"

    # A Contributor of team A: team B's registry and a registry that does not exist read the same, for every
    # route; so do team B's group and a group that does not exist.
    team_a = Arm(moat, sp_create(moat, "team-a", role="Contributor", scope=f"/subscriptions/{sub}/resourceGroups/teama"))
    team_a._sub = sub
    assert team_a.request("PUT", group_path(team_a, "teama"), {"location": "local"}).status_code == 201
    routes = [
        ("GET", "", None), ("PUT", "", premium("local")), ("PATCH", "", {"tags": {"a": "b"}}), ("DELETE", "", None),
        ("POST", "/listCredentials", None), ("POST", "/regenerateCredential", {"name": "password"}),
        ("GET", "/listUsages", None), ("GET", "/privateEndpointConnections", None),
        ("GET", "/privateEndpointConnections/teambsecret.x", None), ("GET", "/privateLinkResources", None),
        ("POST", "/importImage", {"source": {"registryUri": "docker.io", "sourceImage": "library/alpine"}}),
        ("GET", "/operationStatuses/op-1", None),
    ]
    for method, suffix, body in routes:
        answers = []
        for name in ("teambsecret", "teambnothere"):
            r = team_a.request(method, team_a.registry_path(name, "teamb") + suffix, body)
            err = assert_arm_error(r, 403, "AuthorizationFailed")
            answers.append(err["message"].replace(name, "NAME"))
            assert "teambsecret" not in r.text or name == "teambsecret", r.text
        assert answers[0] == answers[1], (method, suffix, answers)
    for rg in ("teamb", "nosuchgroup"):
        err = assert_arm_error(team_a.request("GET", group_path(team_a, rg)), 403, "AuthorizationFailed")
        assert f"/resourceGroups/{rg}'" in err["message"], err
    r = team_a.request("GET", f"/subscriptions/{sub}/resourcegroups")
    assert r.status_code == 200 and [g["name"] for g in r.json()["value"]] == ["teama"], r.text
    r = team_a.request("GET", f"/subscriptions/{sub}/{REGISTRIES}")
    assert r.status_code == 200 and r.json()["value"] == [], r.text

    # In its own group: team B's registry is as absent as any other, and its name is taken without saying where.
    for name in ("teambsecret", "teambnothere"):
        assert_arm_error(team_a.get_registry(name, "teama"), 404, "ResourceNotFound")
    r = team_a.put_registry("teambsecret", premium("local"), rg="teama")
    err = assert_arm_error(r, 409, "AlreadyInUse")
    assert "teamb" not in err["message"].replace("teambsecret", ""), err

    # An import naming team B's registry as its source: refused alike whether it exists.
    assert team_a.put_registry("teamaown", premium("local"), rg="teama").status_code in (200, 201)
    answers = []
    for name in ("teambsecret", "teambnothere"):
        source = f"/subscriptions/{sub}/resourceGroups/teamb/{REGISTRIES}/{name}"
        r = team_a.request("POST", team_a.registry_path("teamaown", "teama") + "/importImage",
                           {"source": {"resourceId": source, "sourceImage": "app:latest"}, "targetTags": ["app:1"]})
        answers.append(assert_arm_error(r, 403, "AuthorizationFailed")["message"].replace(name, "NAME"))
    assert answers[0] == answers[1], answers


# ------------------------------------------------------------------------------------------------ finding 9: names

def test_resource_group_names_and_tags_follow_arm(moat):
    arm = Arm(moat, sp_create(moat, "owner-names"))
    bad_groups = ["rg.", "a b", "a:b", "a@b", "<rg>", "a/b", "a\nb", "a\u202eb", "a'b", "x" * 91]
    for rg in bad_groups:
        r = arm.request("PUT", group_path(arm, rg), {"location": "local"})
        assert_arm_error(r, 400, "InvalidResourceGroupName")
        r = arm.request("PUT", f"{group_path(arm, rg)}/{REGISTRIES}/rgnamereg", premium("local"))
        assert_arm_error(r, 400, "InvalidResourceGroupName")
    for rg in ["My_RG-(1).v2", "équipe", "x" * 90]:
        r = arm.request("PUT", group_path(arm, rg), {"location": "local"})
        assert r.status_code == 201, r.text
        # The name is the one the caller meant, not its percent-encoding.
        assert r.json()["name"] == rg and r.json()["id"].endswith("/resourceGroups/" + rg), r.text
    r = arm.request("PUT", f"{group_path(arm, 'My_RG-(1).v2')}/{REGISTRIES}/parenreg", premium("local"))
    assert r.status_code in (200, 201) and "/resourceGroups/My_RG-(1).v2/" in r.json()["id"], r.text

    assert arm.put_registry("tagreg", premium("local")).status_code in (200, 201)
    at = {f"t{i}": "v" for i in range(50)}
    cases = [
        (at, None), ({**at, "t50": "v"}, "TooManyTags"),
        ({"n" * 512: "v"}, None), ({"n" * 513: "v"}, "InvalidTagNameLength"),
        ({"k": "é" * 256}, None), ({"k": "v" * 257}, "InvalidTagValueLength"),
        ({"": "v"}, "InvalidTagNameLength"),
        ({"a/b": "v"}, "InvalidTagNameCharacters"), ({"a?b": "v"}, "InvalidTagNameCharacters"),
        ({"a\nb": "v"}, "InvalidTagNameCharacters"), ({"Env": "a", "env": "b"}, "InvalidTagName"),
    ]
    for tags, code in cases:
        for r in (arm.patch_registry("tagreg", {"tags": tags}),
                  arm.put_registry("tagreg", {**premium("local"), "tags": tags})):
            if code is None:
                assert r.status_code == 200 and r.json()["tags"] == tags, r.text[:300]
            else:
                err = assert_arm_error(r, 400, code)
                assert err.get("target") == "tags", err
    r = arm.request("PUT", group_path(arm, "rgtags"), {"location": "local", "tags": {**at, "t50": "v"}})
    assert_arm_error(r, 400, "TooManyTags")


# ------------------------------------------------------------------------------------------------ finding 9: endpoints

NOT_UNICAST = ["0.0.0.0", "::", "::ffff:0.0.0.0", "255.255.255.255", "::ffff:255.255.255.255", "224.0.0.1",
               "239.255.255.250", "::ffff:224.0.0.1", "ff02::1", "ff05::1:3", "169.254.169.254",
               "::ffff:169.254.169.254"]


def test_private_endpoint_addresses_are_unicast_host_addresses(moat):
    arm = Arm(moat, sp_create(moat, "owner-peaddr"))
    assert arm.put_registry("peaddr", premium("local")).status_code in (200, 201)
    for i, address in enumerate(NOT_UNICAST):
        body = private_endpoint_body(arm.registry_path("peaddr"), address)
        r = arm.endpoint_request("PUT", f"pe-bad-{i}", body=body)
        err = assert_arm_error(r, 400, "PrivateIPAddressInReservedRange", target=True)
        assert "not a unicast host address" in err["message"], err
        assert arm.endpoint_request("GET", f"pe-bad-{i}").status_code == 404
    pe = create_private_endpoint(arm, "peaddr")
    assert pe["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"] == pe["address"]


def test_a_registry_has_at_most_200_private_endpoints(moat):
    arm = Arm(moat, sp_create(moat, "owner-pemax"))
    assert arm.put_registry("pemax", premium("local")).status_code in (200, 201)
    reg = arm.registry_path("pemax")

    def create(n: int):
        body = private_endpoint_body(reg, f"127.0.{1 + n // 250}.{1 + n % 250}", manual=(n % 2 == 1))
        return arm.endpoint_request("PUT", f"pe-max-{n}", body=body)

    for n in range(200):
        r = create(n)
        assert r.status_code == 201, (n, r.status_code, r.text[:300])
    err = assert_arm_error(create(200), 400, "QuotaExceeded")
    assert "200" in err["message"], err
    assert arm.endpoint_request("GET", "pe-max-200").status_code == 404
    usage = {u["name"]: u for u in arm.request("GET", reg + "/listUsages").json()["value"]}
    assert usage["PrivateEndpointConnections"]["limit"] == 200, usage
    # Deleting one makes room for one.
    assert arm.endpoint_request("DELETE", "pe-max-0").status_code == 200
    assert create(200).status_code == 201
    assert_arm_error(create(201), 400, "QuotaExceeded")
