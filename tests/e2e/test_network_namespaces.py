"""Network access of a registry seen by real clients (skopeo, podman, curl) at real, distinct addresses: each client
runs in its own network namespace (netns.py) and reaches Moat on the host-side address of its veth pair, so the
server sees it at the namespace's address.

Topology (per test):
    OUT    an "internet" client: Moat has an extra PUBLIC listener on OUT.host_ip (config `listeners`)
    OTHER  another public client, with its own public listener on OTHER.host_ip
    VNET   the private network: a private endpoint of the registry on VNET.host_ip (created over ARM)
In every namespace `appreg.moat.test` (the login server) and `appreg.local.data.moat.test` (the data endpoint)
resolve to that namespace's host_ip (/etc/netns/<ns>/hosts), so clients use the real names and TLS (SNI) as they
would against ACR. Clients authenticate as `admin` and trust Moat's CA through a containers-style cert dir
(skopeo/podman) or --cacert (curl).

containers/image (skopeo 1.9, podman 4.3) pings /v2/ before anything else and reports a 403 there as "invalid
status code from registry 403 (Forbidden)", dropping the body; so wherever such a client is refused, the exact
DENIED body naming the client's address is checked with curl from the same namespace (same address, same
listener), on /v2/ and on /oauth2/token, and the refusal is found in the audit log.
"""
from __future__ import annotations

import ipaddress
import json
import shutil
import tempfile
import time
import urllib.parse
from pathlib import Path

from conftest import (Arm, free_port, make_oci_layout, read_oci_layout_manifest, require_tool, sp_create)
from netns import NetNs, netns_factory  # noqa: F401  (netns_factory is a fixture)

DOMAIN = "moat.test"
REG = "appreg"
RG = "rg1"
REPO = "net/app"
PE_API = "2023-09-01"
PODMAN_UA = "(github.com/containers/image)"  # podman 4.3's User-Agent: "containers/5.23.1 (github.com/...)"
LINK_MISMATCH = ("the download link's signature does not match: it was altered, or is used from another address or "
                 "endpoint than the one it was issued to")
LINK_EXPIRED = "the download link has expired: request the blob from the login server again"


def denied_message(ip: str) -> str:
    return f"client with IP '{ip}' is not allowed access. Refer https://aka.ms/acr/firewall to grant access."


def assert_denied_body(body: bytes, ip: str, what: str, message: str | None = None) -> None:
    """{"errors":[{"code":"DENIED","message":<message, by default the firewall's for ip>}]} (Moat also sends the
    OCI error's optional "detail", as null)."""
    message = denied_message(ip) if message is None else message
    errors = json.loads(body)["errors"]
    assert len(errors) == 1, f"{what}: {body[:500]!r}"
    e = dict(errors[0])
    assert e.pop("detail", None) is None, f"{what}: {body[:500]!r}"
    assert e == {"code": "DENIED", "message": message}, f"{what}: {body[:500]!r}"


# ------------------------------------------------------------------------------------------------ the setup

class Site:
    """One Moat server on a fixed port with public listeners on the public namespaces' host addresses, the
    registry `appreg` (Premium) created over ARM, and helpers to run clients inside the namespaces."""

    def __init__(self, moat_factory, tmp_path: Path, public: list[NetNs], private: list[NetNs] = (),
                 extra_args=()):
        self.tmp = tmp_path
        self.port = free_port()
        self.public = list(public)
        cfg = tmp_path / "moat.toml"
        cfg.write_text("listeners = [" + ", ".join(f'"{ns.host_ip}:{self.port}"' for ns in public) + "]\n")
        self.server = moat_factory(start=False, port=self.port,
                                   extra_args=["--domain", DOMAIN, "--config", str(cfg), *extra_args])
        self.server.start()
        self.login = f"{REG}.{DOMAIN}:{self.port}"
        self.data_host = f"{REG}.local.data.{DOMAIN}:{self.port}"
        self.creds = f"admin:{self.server.admin_password}"
        self.certs = tmp_path / "certs"
        self.certs.mkdir()
        shutil.copy(self.server.ca_path, self.certs / "ca.crt")
        for ns in [*public, *private]:
            ns.set_hosts({f"{REG}.{DOMAIN}": ns.host_ip, f"{REG}.local.data.{DOMAIN}": ns.host_ip})
        self.arm = Arm(self.server, sp_create(self.server, "owner"))
        r = self.arm.put_registry(REG, {"location": "local", "sku": {"name": "Premium"}}, rg=RG)
        assert r.status_code in (200, 201), f"PUT registry: {r.status_code} {r.text[:500]}"
        self.registry_id = self.arm.registry_path(REG, RG)

    # -- management plane
    def patch(self, props: dict) -> dict:
        r = self.arm.patch_registry(REG, {"properties": props}, rg=RG)
        assert r.status_code == 200, f"PATCH {props}: {r.status_code} {r.text[:500]}"
        return r.json()

    def private_endpoint(self, ns: NetNs, name: str, manual: bool = False) -> dict:
        """PUT privateEndpoints/NAME on ns.host_ip for appreg; returns the endpoint JSON plus `connection`, the
        registry-side connection's name (found in REG/privateEndpointConnections by the endpoint's id)."""
        conn = {"name": "c", "properties": {"privateLinkServiceId": self.registry_id, "groupIds": ["registry"]}}
        key = "manualPrivateLinkServiceConnections" if manual else "privateLinkServiceConnections"
        body = {"location": "local", "properties": {
            key: [conn], "ipConfigurations": [{"name": "registry", "properties": {"privateIPAddress": ns.host_ip}}]}}
        path = (f"/subscriptions/{self.arm.subscription}/resourceGroups/{RG}/providers/Microsoft.Network/"
                f"privateEndpoints/{name}")
        r = self.arm.request("PUT", path, body, api_version=PE_API)
        assert r.status_code == 201, f"PUT privateEndpoints/{name}: {r.status_code} {r.text[:600]}"
        pe = r.json()
        state = pe["properties"][key][0]["properties"]["privateLinkServiceConnectionState"]["status"]
        assert state == ("Pending" if manual else "Approved"), pe
        conns = [c for c in self.connections()
                 if c["properties"]["privateEndpoint"]["id"].lower() == pe["id"].lower()]
        assert len(conns) == 1, (pe["id"], self.connections())
        pe["connection"] = conns[0]["name"]
        return pe

    def connections(self) -> list[dict]:
        r = self.arm.request("GET", self.registry_id + "/privateEndpointConnections")
        assert r.status_code == 200, f"GET privateEndpointConnections: {r.status_code} {r.text[:500]}"
        return r.json()["value"]

    def set_connection(self, pe: dict, status: str) -> None:
        r = self.arm.request("PUT", f"{self.registry_id}/privateEndpointConnections/{pe['connection']}",
                             {"properties": {"privateLinkServiceConnectionState": {
                                 "status": status, "description": f"{status} by the netns test"}}})
        assert r.status_code == 200, f"{status} {pe['connection']}: {r.status_code} {r.text[:500]}"
        got = r.json()["properties"]["privateLinkServiceConnectionState"]["status"]
        assert got == status, r.text

    # -- clients in namespaces
    def ref(self, tag: str, repo: str = REPO) -> str:
        return f"docker://{self.login}/{repo}:{tag}"

    def skopeo(self, ns: NetNs, *args, check: bool = True):
        return ns.run([require_tool("skopeo"), *args], check=check, timeout=120)

    def push(self, ns: NetNs, layout: Path, tag: str, check: bool = True):
        return self.skopeo(ns, "copy", "--preserve-digests", "--retry-times", "0", "--dest-cert-dir", self.certs,
                           "--dest-creds", self.creds, f"oci:{layout}:latest", self.ref(tag), check=check)

    def pull(self, ns: NetNs, tag: str, check: bool = True):
        """skopeo copy from the registry into a fresh OCI layout; returns (process, layout dir)."""
        dest = Path(tempfile.mkdtemp(prefix=f"pull-{ns.tag}-", dir=self.tmp))
        p = self.skopeo(ns, "copy", "--preserve-digests", "--retry-times", "0", "--src-cert-dir", self.certs,
                        "--src-creds", self.creds, self.ref(tag), f"oci:{dest}:latest", check=check)
        return p, dest

    def pulled_digest(self, ns: NetNs, tag: str) -> str:
        _, dest = self.pull(ns, tag)
        return read_oci_layout_manifest(dest, "latest")[0]

    def inspect_digest(self, ns: NetNs, tag: str) -> str:
        p = self.skopeo(ns, "inspect", "--retry-times", "0", "--cert-dir", self.certs, "--creds", self.creds,
                        "--format", "{{.Digest}}", self.ref(tag))
        return p.stdout.strip()

    def assert_skopeo_denied(self, ns: NetNs, *args) -> None:
        """skopeo fails because the server refuses ns's address. containers/image (skopeo 1.9, podman 4.3) pings
        /v2/ first and reports a 403 there as "invalid status code from registry 403 (Forbidden)" without the
        body, so the exact DENIED body is checked with curl from the same namespace (same address, same listener)."""
        p = self.skopeo(ns, *args, check=False)
        assert p.returncode != 0, f"skopeo {args} from {ns.tag} ({ns.ns_ip}) should be refused:\n{p.stdout}"
        assert_refused_stderr(p.stderr, ns)
        self.assert_curl_denied(ns)

    def assert_curl_denied(self, ns: NetNs) -> None:
        """/v2/ and /oauth2/token from ns answer 403 with ACR's DENIED body naming ns's address."""
        q = urllib.parse.urlencode({"service": self.login, "scope": f"repository:{REPO}:pull"})
        for url, auth in ((f"https://{self.login}/v2/", []),
                          (f"https://{self.login}/oauth2/token?{q}", ["-u", self.creds])):
            status, _, body = self.curl_get(ns, url, extra=auth)
            assert status == 403, f"GET {url} from {ns.tag} ({ns.ns_ip}): {status} {body[:300]!r}"
            assert_denied_body(body, ns.ns_ip, f"GET {url} from {ns.tag}")

    def assert_inspect_denied(self, ns: NetNs, tag: str = "v1") -> None:
        self.assert_skopeo_denied(ns, "inspect", "--retry-times", "0", "--cert-dir", self.certs, "--creds",
                                  self.creds, self.ref(tag))

    def curl(self, ns: NetNs, *args, check: bool = True):
        return ns.run([require_tool("curl"), "-sS", "--max-time", "30", "--cacert", self.server.ca_path, *args],
                      check=check, timeout=60)

    def curl_token(self, ns: NetNs, scope: str = f"repository:{REPO}:pull") -> str:
        q = urllib.parse.urlencode({"service": self.login, "scope": scope})
        p = self.curl(ns, "-f", "-u", self.creds, f"https://{self.login}/oauth2/token?{q}")
        return json.loads(p.stdout)["token"]

    def curl_get(self, ns: NetNs, url: str, token: str | None = None, extra=()) -> tuple[int, str, bytes]:
        """GET url from inside ns without following redirects: (status, redirect url, body bytes)."""
        out = Path(tempfile.mkstemp(prefix="body-", dir=self.tmp)[1])
        headers = ["-H", f"Authorization: Bearer {token}"] if token else []
        p = self.curl(ns, *headers, *extra, "-o", out, "-w", "%{http_code} %{redirect_url}", url)
        status, _, redirect = p.stdout.partition(" ")
        return int(status), redirect.strip(), out.read_bytes()

    def wait_audit(self, pred, what: str, timeout: float = 15.0) -> list[dict]:
        """Polls the audit log (pull events are written in batches) until some event matches `pred`."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.server.audit()
            hits = [e for e in events if pred(e)]
            if hits or time.monotonic() > deadline:
                assert hits, f"no audit event {what}; last events:\n" + "\n".join(map(json.dumps, events[-25:]))
                return hits
            time.sleep(0.3)


def assert_refused_stderr(stderr: str, ns: NetNs) -> None:
    """A containers/image client's error for a refused address: the DENIED message itself when the client shows
    the body, or (skopeo 1.9 / podman 4.3, which ping /v2/ first and drop the body of a failed ping) the 403."""
    ok = denied_message(ns.ns_ip) in stderr or "invalid status code from registry 403 (Forbidden)" in stderr
    assert ok, f"client in {ns.tag} ({ns.ns_ip}) failed, but not with the firewall's 403:\n{stderr[-3000:]}"


def make_layout(tmp_path: Path, name: str):
    path = tmp_path / name
    img = make_oci_layout(path, n_layers=2, layer_size=4096)
    return img, path


def audit_is(**want):
    """A predicate: every given audit field equals the wanted value."""
    return lambda e: all(e.get(k) == v for k, v in want.items())


# ------------------------------------------------------------------------------------------------ the tests

def test_private_endpoint_with_public_access_disabled(moat_factory, netns_factory, tmp_path):
    out, vnet, vnet2, vnet3 = (netns_factory(t) for t in ("out", "vnet", "vnet2", "vnet3"))
    site = Site(moat_factory, tmp_path, public=[out], private=[vnet, vnet2, vnet3])
    img, layout = make_layout(tmp_path, "img1")

    # Public access enabled: the internet client pushes through the public listener.
    site.push(out, layout, "v1")
    assert site.inspect_digest(out, "v1") == img.manifest_digest
    pe = site.private_endpoint(vnet, "pe-vnet")

    reg = site.patch({"publicNetworkAccess": "Disabled"})
    assert reg["properties"]["publicNetworkAccess"] == "Disabled", reg

    # The internet client is refused, for pulls and pushes alike, with ACR's message naming its own address.
    site.assert_inspect_denied(out)
    img_out, layout_out = make_layout(tmp_path, "img-out")
    p = site.push(out, layout_out, "from-out", check=False)
    assert p.returncode != 0, p.stdout
    assert_refused_stderr(p.stderr, out)
    p, _ = site.pull(out, "v1", check=False)
    assert p.returncode != 0, p.stdout
    assert_refused_stderr(p.stderr, out)

    # Through the approved private endpoint: pull (same digest) and push.
    assert site.pulled_digest(vnet, "v1") == img.manifest_digest
    img2, layout2 = make_layout(tmp_path, "img2")
    site.push(vnet, layout2, "v2")
    assert site.inspect_digest(vnet, "v2") == img2.manifest_digest
    assert site.pulled_digest(vnet, "v2") == img2.manifest_digest

    # A manual request waits as Pending and is refused; approved, it works.
    pe2 = site.private_endpoint(vnet2, "pe-vnet2", manual=True)
    site.assert_inspect_denied(vnet2)
    site.set_connection(pe2, "Approved")
    assert site.pulled_digest(vnet2, "v1") == img.manifest_digest
    # Another manual request, rejected: refused.
    pe3 = site.private_endpoint(vnet3, "pe-vnet3", manual=True)
    site.set_connection(pe3, "Rejected")
    site.assert_inspect_denied(vnet3)
    # Rejecting a connection that was approved takes effect on the next request.
    site.set_connection(pe2, "Rejected")
    site.assert_inspect_denied(vnet2)
    # The first endpoint is untouched by all that.
    assert site.inspect_digest(vnet, "v1") == img.manifest_digest

    # The audit trail: the internet client's denials on the public listener, the private pulls on the endpoint.
    denials = site.wait_audit(audit_is(CallerIpAddress=out.ns_ip, ResultType="Denied", Endpoint="public"),
                              "denying OUT on the public listener")
    # A refusal carries the name of what was refused (skopeo's /v2/ check and token request are a Login).
    assert all(e.get("OperationName") in ("Login", "Pull") for e in denials), denials
    site.wait_audit(audit_is(CallerIpAddress=vnet.ns_ip, ResultType="Success", OperationName="Pull",
                             Endpoint=f"privateEndpoint/{pe['name']}"), "of a private pull through pe-vnet")
    site.wait_audit(audit_is(CallerIpAddress=vnet.ns_ip, ResultType="Success", OperationName="Push",
                             Endpoint=f"privateEndpoint/{pe['name']}"), "of a private push through pe-vnet")
    site.wait_audit(audit_is(CallerIpAddress=vnet2.ns_ip, ResultType="Success", OperationName="Pull",
                             Endpoint=f"privateEndpoint/{pe2['name']}"), "of a pull through pe-vnet2")
    for ns, name in ((vnet2, pe2["name"]), (vnet3, pe3["name"])):
        site.wait_audit(audit_is(CallerIpAddress=ns.ns_ip, ResultType="Denied",
                                 Endpoint=f"privateEndpoint/{name}"), f"denying {ns.tag} on {name}")
    # After the PATCH nothing of OUT's succeeded: its refused push left no trace but denials.
    events = site.server.audit()
    first_denial = min(e["TimeGenerated"] for e in denials)
    late = [e for e in events if e.get("CallerIpAddress") == out.ns_ip and e["TimeGenerated"] >= first_denial]
    assert late and all(e.get("ResultType") == "Denied" and e.get("Endpoint") == "public" for e in late), late
    assert not [e for e in events if e.get("Tag") == "from-out"], "OUT's refused push was recorded as a push"
    # Traffic from the private network was classified as the endpoint's, never as public.
    for ns, name in ((vnet, pe["name"]), (vnet2, pe2["name"]), (vnet3, pe3["name"])):
        mine = [e for e in events if e.get("CallerIpAddress") == ns.ns_ip]
        assert mine and all(e.get("Endpoint") == f"privateEndpoint/{name}" for e in mine), mine


# ------------------------------------------------------------------------------------------------ podman

class Podman:
    """podman run inside a namespace with private vfs storage (the host's image store is untouched)."""

    def __init__(self, site: Site, ns: NetNs):
        self.site, self.ns = site, ns
        root = Path(tempfile.mkdtemp(prefix=f"podman-{ns.tag}-", dir=site.tmp))
        self.runroot = tempfile.mkdtemp(prefix="mpn-", dir="/tmp")  # podman wants a short runroot
        (root / "tmp").mkdir()
        self.authfile = root / "auth.json"  # REGISTRY_AUTH_FILE: podman login writes here, not in $HOME
        self.authfile.write_text('{"auths": {}}')
        self.base = [require_tool("podman"), "--root", root / "root", "--runroot", self.runroot,
                     "--storage-driver", "vfs", "--events-backend", "file", "--cgroup-manager", "cgroupfs",
                     "--tmpdir", root / "tmp"]

    def __call__(self, *args, check: bool = True):
        return self.ns.run([*self.base, *args], check=check, timeout=180,
                           env={"REGISTRY_AUTH_FILE": str(self.authfile)})

    def image(self, tag: str) -> str:
        return f"{self.site.login}/{REPO}:{tag}"

    def tls(self) -> list:
        return ["--cert-dir", self.site.certs, "--creds", self.site.creds]

    def close(self):
        self("rmi", "-a", "-f", check=False)
        shutil.rmtree(self.runroot, ignore_errors=True)


def test_podman_through_private_endpoint_and_refused_outside(moat_factory, netns_factory, tmp_path):
    out, vnet = netns_factory("out"), netns_factory("vnet")
    site = Site(moat_factory, tmp_path, public=[out], private=[vnet])
    img, layout = make_layout(tmp_path, "img1")
    site.push(out, layout, "v1")
    pe = site.private_endpoint(vnet, "pe-podman")
    site.patch({"publicNetworkAccess": "Disabled"})

    pv, po = Podman(site, vnet), Podman(site, out)
    try:
        # Inside the private network: login, pull (the same image), tag and push, and the push is there.
        p = pv("login", "--cert-dir", site.certs, "-u", "admin", "-p", site.server.admin_password, site.login)
        assert "Login Succeeded" in p.stdout, p.stdout + p.stderr
        pv("pull", *pv.tls(), pv.image("v1"))
        inspected = json.loads(pv("image", "inspect", pv.image("v1")).stdout)
        assert inspected[0]["Digest"] == img.manifest_digest, inspected[0].get("Digest")
        pv("tag", pv.image("v1"), pv.image("podman"))
        digest_file = tmp_path / "podman.digest"
        pv("push", *pv.tls(), "--digestfile", digest_file, pv.image("podman"))
        pushed = digest_file.read_text().strip()
        assert pushed.startswith("sha256:"), pushed
        assert site.inspect_digest(vnet, "podman") == pushed

        # From the internet: login, pull and push are refused.
        p = po("login", "--cert-dir", site.certs, "-u", "admin", "-p", site.server.admin_password, site.login,
               check=False)
        assert p.returncode != 0, p.stdout
        assert_refused_stderr(p.stderr, out)
        p = po("pull", *po.tls(), po.image("v1"), check=False)
        assert p.returncode != 0, p.stdout
        assert_refused_stderr(p.stderr, out)
        assert po("images", "-q").stdout.strip() == "", "a refused pull left an image behind"
        site.assert_curl_denied(out)
    finally:
        pv.close()
        po.close()

    site.wait_audit(lambda e: e.get("CallerIpAddress") == vnet.ns_ip and e.get("OperationName") == "Pull"
                    and e.get("ResultType") == "Success" and e.get("Endpoint") == f"privateEndpoint/{pe['name']}"
                    and PODMAN_UA in (e.get("UserAgent") or ""), "of podman's pull through the endpoint")
    site.wait_audit(lambda e: e.get("CallerIpAddress") == out.ns_ip and e.get("ResultType") == "Denied"
                    and e.get("Endpoint") == "public" and PODMAN_UA in (e.get("UserAgent") or ""),
                    "denying podman in OUT")


# ------------------------------------------------------------------------------------------------ IP rules

def test_ip_rules_from_distinct_addresses(moat_factory, netns_factory, tmp_path):
    out, other, vnet = netns_factory("out"), netns_factory("other"), netns_factory("vnet")
    site = Site(moat_factory, tmp_path, public=[out, other], private=[vnet])
    img, layout = make_layout(tmp_path, "img1")
    site.push(out, layout, "v1")
    site.private_endpoint(vnet, "pe-rules")
    other_net = str(ipaddress.ip_interface(f"{other.ns_ip}/30").network)
    assert other_net != f"{other.ns_ip}/32" and ipaddress.ip_address(out.ns_ip) not in ipaddress.ip_network(other_net)

    def rules(default: str, *values: str) -> None:
        reg = site.patch({"networkRuleSet": {"defaultAction": default,
                                             "ipRules": [{"action": "Allow", "value": v} for v in values]}})
        assert reg["properties"]["networkRuleSet"]["defaultAction"] == default, reg

    # Deny, with only OUT's address allowed.
    rules("Deny", f"{out.ns_ip}/32")
    assert site.inspect_digest(out, "v1") == img.manifest_digest
    assert site.pulled_digest(out, "v1") == img.manifest_digest
    site.assert_inspect_denied(other)  # skopeo fails; /v2/ and /oauth2/token answer the DENIED body with OTHER's IP
    p, _ = site.pull(other, "v1", check=False)
    assert p.returncode != 0
    assert_refused_stderr(p.stderr, other)
    # The private endpoint is not subject to IP rules.
    assert site.pulled_digest(vnet, "v1") == img.manifest_digest

    # A CIDR rule (the /30 OTHER's address is in) lets OTHER in, for pulls and pushes.
    rules("Deny", f"{out.ns_ip}/32", other_net)
    assert site.pulled_digest(other, "v1") == img.manifest_digest
    img2, layout2 = make_layout(tmp_path, "img2")
    site.push(other, layout2, "from-other")
    assert site.inspect_digest(out, "from-other") == img2.manifest_digest

    # Deny without rules: both public clients refused, the private network still served.
    rules("Deny")
    site.assert_inspect_denied(out)
    site.assert_inspect_denied(other)
    assert site.inspect_digest(vnet, "from-other") == img2.manifest_digest

    # Allow: everyone in, the rules notwithstanding.
    rules("Allow", f"{out.ns_ip}/32")
    assert site.pulled_digest(other, "from-other") == img2.manifest_digest
    assert site.pulled_digest(out, "v1") == img.manifest_digest

    denied = site.wait_audit(audit_is(CallerIpAddress=other.ns_ip, ResultType="Denied", Endpoint="public",
                                      OperationName="Login"), "denying OTHER")
    assert all(e.get("Registry") == REG for e in denied), denied
    site.wait_audit(audit_is(CallerIpAddress=other.ns_ip, ResultType="Success", OperationName="Pull",
                             Endpoint="public"), "of OTHER's pull once its /30 was allowed")
    site.wait_audit(audit_is(CallerIpAddress=out.ns_ip, ResultType="Denied", Endpoint="public"),
                    "denying OUT under Deny without rules")


# ------------------------------------------------------------------------------------------------ data endpoint

def test_data_endpoint_links_bound_to_caller(moat_factory, netns_factory, tmp_path):
    out, other, vnet = netns_factory("out"), netns_factory("other"), netns_factory("vnet")
    site = Site(moat_factory, tmp_path, public=[out, other], private=[vnet])
    img, layout = make_layout(tmp_path, "img1")
    site.push(out, layout, "v1")
    pe = site.private_endpoint(vnet, "pe-data")
    layer_digest, layer = img.layers[0]
    blob_url = f"https://{site.login}/v2/{REPO}/blobs/{layer_digest}"

    # Without a data endpoint the login server serves the blob itself.
    token = site.curl_token(out)
    status, redirect, body = site.curl_get(out, blob_url, token)
    assert (status, redirect, body) == (200, "", layer), (status, redirect, body[:200])

    reg = site.patch({"dataEndpointEnabled": True})
    assert reg["properties"]["dataEndpointEnabled"] is True, reg

    # skopeo follows the 307s to the data host (which OUT resolves to its own listener) and gets the same image.
    assert site.pulled_digest(out, "v1") == img.manifest_digest
    site.wait_audit(audit_is(CallerIpAddress=out.ns_ip, OperationName="Pull", ResultType="Success",
                             Endpoint="dataEndpoint (public)", Digest=layer_digest), "of OUT's data endpoint pull")
    # ... and the same through the private endpoint: the data host resolves to the endpoint's address there.
    assert site.pulled_digest(vnet, "v1") == img.manifest_digest
    site.wait_audit(audit_is(CallerIpAddress=vnet.ns_ip, OperationName="Pull", ResultType="Success",
                             Endpoint=f"dataEndpoint (privateEndpoint/{pe['name']})", Digest=layer_digest),
                    "of VNET's data endpoint pull")
    # Pushes stay on the login server.
    img2, layout2 = make_layout(tmp_path, "img2")
    site.push(out, layout2, "v2")
    pushes = site.wait_audit(audit_is(CallerIpAddress=out.ns_ip, OperationName="Push", Tag="v2"), "of the push")
    assert all(e.get("Endpoint") == "public" for e in pushes), pushes

    # The link, fetched by hand from OUT.
    token = site.curl_token(out)
    status, link, body = site.curl_get(out, blob_url, token)
    assert status == 307 and body == b"", (status, link, body[:200])
    u = urllib.parse.urlsplit(link)
    q = dict(urllib.parse.parse_qsl(u.query))
    assert (u.scheme, u.netloc, u.path) == ("https", site.data_host, "/"), link
    assert (q.get("r"), q.get("d")) == (REPO, layer_digest) and q.get("e", "").isdigit() and q.get("s"), link
    assert 1100 < int(q["e"]) - time.time() <= 1201, f"default link lifetime is 1200s: {link}"

    # Replayed from another address (OTHER's own public listener): the signature does not match.
    status, _, body = site.curl_get(other, link)
    assert status == 403, (status, body[:300])
    assert_denied_body(body, other.ns_ip, "the link from OTHER", message=LINK_MISMATCH)
    # ... nor from the private network (another address and another listener).
    status, _, body = site.curl_get(vnet, link)
    assert status == 403, (status, body[:300])
    assert_denied_body(body, vnet.ns_ip, "the link from VNET", message=LINK_MISMATCH)
    # A link whose expiry was pushed out by the caller is refused too.
    forged = link.replace(f"e={q['e']}", f"e={int(q['e']) + 3600}")
    assert forged != link
    status, _, body = site.curl_get(out, forged)
    assert status == 403, (status, body[:300])
    assert_denied_body(body, out.ns_ip, "the forged link", message=LINK_MISMATCH)
    # The same link from OUT itself: the blob's bytes, without a token.
    status, _, body = site.curl_get(out, link)
    assert status == 200 and body == layer, (status, body[:200])
    site.wait_audit(audit_is(CallerIpAddress=other.ns_ip, OperationName="Pull", ResultType="Denied",
                             Endpoint="dataEndpoint (public)"), "denying the replayed link")
    site.wait_audit(audit_is(CallerIpAddress=vnet.ns_ip, OperationName="Pull", ResultType="Denied",
                             Endpoint=f"dataEndpoint (privateEndpoint/{pe['name']})"),
                    "denying the replayed link on the private endpoint")

    # Expiry: the same server with 3-second links.
    site.server.stop()
    site.server.extra_args += ["--data-link-ttl-secs", "3"]
    site.server.start()
    token = site.curl_token(out)
    status, link, _ = site.curl_get(out, blob_url, token)
    assert status == 307, (status, link)
    expires = int(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(link).query))["e"])
    assert expires - time.time() <= 3.5, link
    status, _, body = site.curl_get(out, link)
    assert status == 200 and body == layer, (status, body[:200])
    time.sleep(max(0.0, expires + 1.2 - time.time()))
    status, _, body = site.curl_get(out, link)
    assert status == 403, (status, body[:300])
    assert_denied_body(body, out.ns_ip, "the expired link", message=LINK_EXPIRED)

    # Data endpoint disabled again: the login server answers 200 itself, and links lead nowhere.
    status, link, _ = site.curl_get(out, blob_url, token)
    assert status == 307, (status, link)
    site.patch({"dataEndpointEnabled": False})
    status, redirect, body = site.curl_get(out, blob_url, token)
    assert (status, redirect, body) == (200, "", layer), (status, redirect, body[:200])
    # (Moat answers a data host whose registry has no data endpoint 404 NAME_UNKNOWN "no such endpoint".)
    status, _, body = site.curl_get(out, link)
    assert status in (403, 404) and body != layer, (status, body[:300])
    assert json.loads(body)["errors"][0]["code"] in ("DENIED", "NAME_UNKNOWN"), body[:300]
