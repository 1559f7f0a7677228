"""Import and the source's network rules: the server importing from one of its own registries is a trusted
service; a network-restricted source lets it through only with `networkRuleBypassOptions: AzureServices`."""

from conftest import Arm, build_image, sp_create


def test_import_from_a_network_restricted_source_needs_the_trusted_services_bypass(moat):
    arm = Arm(moat, sp_create(moat, "importnet", "Owner"))
    r = arm.put_registry("netsource", {"location": "local", "sku": {"name": "Premium"}})
    assert r.status_code == 201, r.text
    r = arm.put_registry("nettarget", {"location": "local", "sku": {"name": "Premium"}})
    assert r.status_code == 201, r.text
    # Push into the source while it is open (through its login server, by SNI).
    c = moat.client(host=f"netsource.localhost:{moat.port}")
    img = build_image(2, seed="importnet")
    assert c.push_image("app", img, "v1").status_code == 201

    source_id = arm.registry_path("netsource")
    target = arm.registry_path("nettarget")

    def import_(tag):
        return arm.request("POST", target + "/importImage",
                           {"source": {"resourceId": source_id, "sourceImage": "app:v1"}, "targetTags": [f"app:{tag}"]})

    # Public access off; trusted services allowed (ACR's default): the server's own import passes.
    r = arm.patch_registry("netsource", {"properties": {"publicNetworkAccess": "Disabled"}})
    assert r.status_code == 200 and r.json()["properties"]["networkRuleBypassOptions"] == "AzureServices", r.text
    r = import_("a")
    assert r.status_code == 200, r.text

    # Bypass off: refused, nothing written, audited.
    r = arm.patch_registry("netsource", {"properties": {"networkRuleBypassOptions": "None"}})
    assert r.status_code == 200, r.text
    r = import_("b")
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "InvalidParameters" and "networkRuleBypassOptions" in err["message"], err
    t = moat.client(host=f"nettarget.localhost:{moat.port}")
    assert t.get_manifest("app", "a").status_code == 200
    assert t.get_manifest("app", "b").status_code == 404
    denied = [e for e in moat.audit(registry="netsource", operation="Export") if e["ResultType"] == "Denied"]
    assert denied and denied[-1]["Repository"] == "app", denied
