"""Network access decided from each request's origin: public network access, IP rules, forwarding headers.

Clients sit at distinct loopback addresses (127.0.0.2, 127.0.0.3, …) bound as the connection's source, so the
server sees them as different callers. The registry under test is the server's `default` registry, changed over
the management API like any other."""

import requests

from conftest import Arm, assert_arm_error, sp_create

DENIED_TEXT = "client with IP '{ip}' is not allowed access. Refer https://aka.ms/acr/firewall to grant access."


class SourceAdapter(requests.adapters.HTTPAdapter):
    """Binds outgoing connections to one local address."""

    def __init__(self, source_ip: str):
        self.source_ip = source_ip
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source_ip, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(ip: str, server) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.verify = server.verify
    s.mount("https://", SourceAdapter(ip))
    s.mount("http://", SourceAdapter(ip))
    return s


def token_from(ip: str, server, scope: str = "repository:net/app:pull,push", headers=None) -> requests.Response:
    return session_from(ip, server).get(
        f"{server.base_url}/oauth2/token", params={"service": server.login_server, "scope": scope},
        auth=("admin", server.admin_password), headers=headers or {}, timeout=30)


def pull_from(ip: str, server, digest: str, headers=None) -> requests.Response:
    s = session_from(ip, server)
    tok = token_from(ip, server, headers=headers)
    if tok.status_code != 200:
        return tok
    h = {"Authorization": "Bearer " + tok.json()["token"], **(headers or {})}
    return s.get(f"{server.base_url}/v2/net/app/blobs/{digest}", headers=h, timeout=30)


def assert_denied(r: requests.Response, ip: str):
    assert r.status_code == 403, f"{r.request.method} {r.url} -> {r.status_code} {r.text[:300]}"
    err = r.json()["errors"][0]
    assert err["code"] == "DENIED", r.text
    assert err["message"] == DENIED_TEXT.format(ip=ip), r.text


def default_registry(arm: Arm):
    return arm.registry_path("default", rg="moat")


def patch_default(arm: Arm, properties: dict) -> requests.Response:
    return arm.request("PATCH", default_registry(arm), {"properties": properties})


def setup_blob(moat) -> str:
    c = moat.client()
    c.token("repository:net/app:pull,push")
    return c.push_blob("net/app", b"network test blob")


def test_ip_rules_decide_both_ways(moat):
    digest = setup_blob(moat)
    arm = Arm(moat, sp_create(moat, "netowner", "Owner"))
    # Default action Allow: every address may pull.
    for ip in ("127.0.0.2", "127.0.0.3"):
        assert pull_from(ip, moat, digest).status_code == 200
    r = patch_default(arm, {"networkRuleSet": {"defaultAction": "Deny", "ipRules": [
        {"action": "Allow", "value": "127.0.0.2"}, {"action": "Allow", "value": "127.0.1.0/24"}]}})
    assert r.status_code == 200, r.text
    assert pull_from("127.0.0.2", moat, digest).status_code == 200
    assert pull_from("127.0.1.7", moat, digest).status_code == 200, "inside an allowed CIDR"
    assert_denied(pull_from("127.0.0.3", moat, digest), "127.0.0.3")
    # The token endpoint is refused too, before any credential is looked at.
    assert_denied(token_from("127.0.0.3", moat), "127.0.0.3")
    # Back to Allow: the rules no longer matter.
    r = patch_default(arm, {"networkRuleSet": {"defaultAction": "Allow"}})
    assert r.status_code == 200, r.text
    assert pull_from("127.0.0.3", moat, digest).status_code == 200
    # Every refusal is in the audit trail with the caller's address.
    denied = [e for e in moat.audit() if e["ResultType"] == "Denied"]
    assert any(e["CallerIpAddress"] == "127.0.0.3" for e in denied), denied
    assert not any(e["CallerIpAddress"] == "127.0.0.2" for e in denied), denied


def test_public_access_disabled_refuses_every_public_origin(moat):
    digest = setup_blob(moat)
    arm = Arm(moat, sp_create(moat, "netowner2", "Owner"))
    r = patch_default(arm, {"publicNetworkAccess": "Disabled"})
    assert r.status_code == 200, r.text
    for ip in ("127.0.0.1", "127.0.0.2"):
        assert_denied(pull_from(ip, moat, digest), ip)
        s = session_from(ip, moat)
        assert_denied(s.get(f"{moat.base_url}/v2/", timeout=30), ip)
    # The management API is not subject to the registry's network rules, as in ACR.
    r = patch_default(arm, {"publicNetworkAccess": "Enabled"})
    assert r.status_code == 200, r.text
    assert pull_from("127.0.0.2", moat, digest).status_code == 200


def test_forwarded_headers_from_untrusted_peers_are_ignored(moat):
    digest = setup_blob(moat)
    arm = Arm(moat, sp_create(moat, "netowner3", "Owner"))
    r = patch_default(arm, {"networkRuleSet": {"defaultAction": "Deny", "ipRules": [{"action": "Allow", "value": "127.0.0.2"}]}})
    assert r.status_code == 200, r.text
    # 127.0.0.3 claims to be forwarding for an allowed address: not believed.
    for h in ({"X-Forwarded-For": "127.0.0.2"}, {"Forwarded": "for=127.0.0.2"}):
        assert_denied(pull_from("127.0.0.3", moat, digest, headers=h), "127.0.0.3")


def test_trusted_proxy_forwarding_is_believed(moat_factory):
    moat = moat_factory(extra_args=["--trusted-proxy", "127.0.0.4"])
    digest = setup_blob(moat)
    arm = Arm(moat, sp_create(moat, "netowner4", "Owner"))
    r = patch_default(arm, {"networkRuleSet": {"defaultAction": "Deny", "ipRules": [
        {"action": "Allow", "value": "127.0.0.2"}, {"action": "Allow", "value": "127.0.0.4"}]}})
    assert r.status_code == 200, r.text
    assert pull_from("127.0.0.4", moat, digest, headers={"X-Forwarded-For": "127.0.0.2"}).status_code == 200
    assert_denied(pull_from("127.0.0.4", moat, digest, headers={"X-Forwarded-For": "127.0.0.9"}), "127.0.0.9")
    denied = [e for e in moat.audit() if e["ResultType"] == "Denied"]
    assert any(e["CallerIpAddress"] == "127.0.0.9" for e in denied), denied


def test_bad_ip_rules_are_refused_and_nothing_changes(moat):
    arm = Arm(moat, sp_create(moat, "netowner5", "Owner"))
    for rules in ([{"value": "10.0.0.0/33"}], [{"value": "not-an-ip"}], [{"value": "10.0.0.0/8"}, {"value": "10.1.0.0/16"}],
                  [{"value": "10.0.0.1"}, {"value": "10.0.0.1"}], [{"value": "10.0.0.1/24"}]):
        r = patch_default(arm, {"networkRuleSet": {"defaultAction": "Deny", "ipRules": rules}})
        assert_arm_error(r, 400, "InvalidRequestContent")
    r = arm.request("GET", default_registry(arm))
    assert r.json()["properties"]["networkRuleSet"] == {"defaultAction": "Allow", "ipRules": [], "virtualNetworkRules": []}



def test_network_rule_commands(moat, tmp_path):
    from test_moat_acr import Cli

    digest = setup_blob(moat)
    cli = Cli(moat, tmp_path / "cfg")
    cli.login(sp_create(moat, "netcli", "Owner"))
    cli("acr", "update", "-n", "default", "--default-action", "Deny")
    assert_denied(pull_from("127.0.0.2", moat, digest), "127.0.0.2")
    listing = cli.json("acr", "network-rule", "add", "-n", "default", "--ip-address", "127.0.0.2")
    assert listing["ipRules"] == [{"action": "Allow", "value": "127.0.0.2"}]
    assert pull_from("127.0.0.2", moat, digest).status_code == 200
    assert_denied(pull_from("127.0.0.3", moat, digest), "127.0.0.3")
    table = cli("acr", "network-rule", "list", "-n", "default", "-o", "table").stdout
    assert "IP ADDRESS OR RANGE" in table and "127.0.0.2" in table
    dup = cli("acr", "network-rule", "add", "-n", "default", "--ip-address", "127.0.0.2", rc=1)
    assert "already exists" in dup.stderr
    bad = cli("acr", "network-rule", "add", "-n", "default", "--ip-address", "127.0.0.0/33", rc=1)
    assert "InvalidRequestContent" in bad.stderr
    cli("acr", "network-rule", "remove", "-n", "default", "--ip-address", "127.0.0.2")
    assert_denied(pull_from("127.0.0.2", moat, digest), "127.0.0.2")
