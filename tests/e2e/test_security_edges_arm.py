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

from conftest import Arm, assert_arm_error, moat_bin, sha256, sp_create

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
