"""Issue 9, finding 2: one outbound connector. The importer must never connect to this server itself — a request
the server makes to its own listeners arrives as trusted traffic (a private endpoint's approved traffic, a loopback
client's) and is served past the export policy. Every spelling of the server's addresses and names as a
`registryUri` is refused, and so is a remote that redirects or names a token realm there; each refusal leaves the
target unchanged and is audited (a denied Import on the target, a denied Export on the registry the connection would
have reached). The operator's `[outbound] deny` list refuses a remote it names; a normal remote still imports.

The servers trust their own CA for remote imports (`--import-ca-bundle`), so that on the old code a connection to
their own listeners succeeded and the image leaked: every test here fails there.
"""
from __future__ import annotations

import http.server
import threading

import pytest

from conftest import Client, create_private_endpoint, free_port, protect_registry
from test_import import LAYER, Env, build_image, catalog, events, fake_registry, tags_of  # noqa: F401 (fixture)

SECRET = "secret/app"


def self_trusting(moat):
    """Restart `moat` trusting its own CA for remote imports (as with one corporate CA for everything)."""
    moat.stop()
    moat.extra_args += ["--import-ca-bundle", str(moat.ca_path)]
    moat.start()
    return moat


def anonymous_pull(env: Env, name: str, rg: str):
    r = env.arm.patch_registry(name, {"properties": {"anonymousPullEnabled": True}}, rg)
    assert r.status_code == 200, f"anonymous pull on {name}: {r.status_code} {r.text[:300]}"


def import_body(uri: str, moat, repo: str = "leak/app:1") -> dict:
    return {"source": {"registryUri": uri, "sourceImage": f"{SECRET}:1",
                       "credentials": {"username": "admin", "password": moat.admin_password}},
            "targetTags": [repo], "mode": "Force"}


def assert_refused(r, uri: str):
    assert r.status_code == 400, f"{uri}: {r.status_code} {r.text[:400]}"
    assert r.json()["error"]["code"] == "InvalidParameters", f"{uri}: {r.text[:400]}"


def denied(moat, operation: str, registry: str, seconds: float = 5.0) -> list[dict]:
    return events(moat, operation, registry, seconds=seconds, want=lambda e: e.get("ResultType") == "Denied")


class Remote:
    """A one-purpose remote registry over plain HTTP on 127.0.0.1 (or `address`): `/v2/` answers 200 and every other
    request gets `answer(path) -> (status, headers)`. Records (method, path, Authorization) in `seen`."""

    def __init__(self, answer, address: str = "127.0.0.1"):
        self.seen: list[tuple[str, str, str | None]] = []
        remote = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                remote.seen.append(("GET", self.path, self.headers.get("Authorization")))
                status, headers = (200, {}) if self.path == "/v2/" else answer(self.path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_HEAD = do_GET

        self.httpd = http.server.ThreadingHTTPServer((address, free_port()), Handler)
        self.host = f"{address}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def remotes():
    made = []

    def make(answer, **kw) -> Remote:
        made.append(Remote(answer, **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def own(moat, tmp_path):
    """A self-trusting server whose `default` registry (anonymous pull on) and registry `sec` (exports disabled,
    behind a private endpoint) hold the secret image, an open registry `other`, and an empty target `tgt`."""
    self_trusting(moat)
    env = Env(moat, tmp_path)
    img = build_image(1, layer_size=LAYER)
    for name in ("secreg", "otherreg", "tgtreg"):
        env.create(name)
    for name in ("default", "secreg", "otherreg"):
        env.client(name).push_image(SECRET, img, "1")
    anonymous_pull(env, "default", "moat")
    pe = protect_registry(env.arm, "secreg")
    return env, pe, img


def test_every_spelling_of_this_server_as_registry_uri_is_refused(own):
    env, pe, img = own
    moat, port = env.server, env.server.port
    hosts = [f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST.:{port}", f"127.1:{port}", f"2130706433:{port}",
             f"0x7f000001:{port}", f"0177.0.0.1:{port}", f"127.0.0.9:{port}", f"[::ffff:127.0.0.1]:{port}",
             f"[::ffff:7f00:1]:{port}", f"0.0.0.0:{port}", f"[::]:{port}", f"[::1]:{port}",
             env.host("secreg"), env.host("otherreg"), "otherreg.localhost", "SECREG.localhost.", f"{pe['address']}:{port}"]
    refused_at_once = []
    for host in hosts:
        for scheme in ("", "http://", "https://"):
            uri = scheme + host
            r = env.import_and_wait("tgtreg", import_body(uri, moat))
            assert_refused(r, uri)
            if "resourceId" in r.json()["error"]["message"]:
                refused_at_once.append(uri)
    # Every spelling is recognised before a byte moves, with the way out in the message.
    assert len(refused_at_once) == 3 * len(hosts), sorted(set(f"{s}{h}" for s in ("", "http://", "https://")
                                                              for h in hosts) - set(refused_at_once))
    tc = env.client("tgtreg")
    assert catalog(tc) == [], f"an import from the server itself wrote into the target: {catalog(tc)}"
    assert tags_of(tc, "leak/app") == []
    for name in ("default", "secreg", "otherreg"):
        assert denied(moat, "Export", name), f"no Denied Export on {name}: {moat.audit()[-5:]}"
    assert len(denied(moat, "Import", "tgtreg")) >= 3 * len(hosts)
    # The way it says: a same-server import by resourceId, which the gate decides (open: allowed).
    r = env.import_and_wait("tgtreg", {"source": {"resourceId": env.registry_id("otherreg"), "sourceImage": f"{SECRET}:1"},
                                    "targetTags": ["fine/app:1"]})
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"


def test_a_remote_redirecting_to_this_server_is_refused_and_audited(own, remotes):
    """The remote answers every manifest and blob request with a 307 to the server's public listener (where the
    default registry allows anonymous pulls) or to `sec`'s private endpoint."""
    env, pe, img = own
    moat, port = env.server, env.server.port
    for scheme, target, registry in (("https", moat.login_server, "default"),
                                     ("http", f"{pe['address']}:{port}", "secreg")):
        remote = remotes(lambda path, t=f"{scheme}://{target}": (307, {"Location": t + path}))
        r = env.import_and_wait("tgtreg", import_body(f"http://{remote.host}", moat))
        assert_refused(r, remote.host)
        assert "does not connect" in r.json()["error"]["message"], r.text
        assert denied(moat, "Export", registry), f"no Denied Export on {registry}: {moat.audit()[-5:]}"
    assert catalog(env.client("tgtreg")) == []
    assert denied(moat, "Import", "tgtreg")


def test_a_token_realm_on_this_server_is_refused_and_audited(own, remotes):
    """The remote's 401 challenge names a realm on `sec`'s private endpoint: the importer would send the import's
    credentials there and hand the server's token to the remote."""
    env, pe, img = own
    moat, port = env.server, env.server.port
    realm = f"https://{pe['address']}:{port}/oauth2/token"
    challenge = f'Bearer realm="{realm}",service="{env.host("secreg")}"'
    remote = remotes(lambda path: (401, {"WWW-Authenticate": challenge}))
    r = env.import_and_wait("tgtreg", import_body(f"http://{remote.host}", moat))
    assert_refused(r, remote.host)
    assert not [a for _, _, a in remote.seen if a and a.startswith("Bearer ")], \
        f"the remote received a token minted by this server: {remote.seen}"
    assert denied(moat, "Export", "secreg"), f"no Denied Export on sec: {moat.audit()[-5:]}"
    assert catalog(env.client("tgtreg")) == []


def test_operator_deny_list_refuses_and_normal_remotes_import(moat_factory, tmp_path, remotes, fake_registry):
    config = tmp_path / "moat.toml"
    config.write_text('[outbound]\ndeny = ["127.0.0.77", "10.0.0.0/8"]\n')
    moat = moat_factory(https=True, extra_args=["--config", str(config)])
    env = Env(moat, tmp_path)
    img = build_image(1, layer_size=LAYER)
    denied_remote = remotes(lambda path: (404, {}), address="127.0.0.77")
    for uri in (f"http://{denied_remote.host}", denied_remote.host, "http://169.254.169.254",
                "http://[fe80::1]:8080", "10.1.2.3:5000"):
        r = env.import_and_wait("default", {"source": {"registryUri": uri, "sourceImage": "fake/app:1"},
                                            "targetTags": ["denied/app:1"]}, rg="moat")
        assert_refused(r, uri)
        assert "refused" in r.json()["error"]["message"], r.text
    assert denied_remote.seen == [], f"the server connected to a denied address: {denied_remote.seen}"
    assert tags_of(env.client("default"), "denied/app") == []

    fake = fake_registry(img, mode="ok")  # 127.0.0.1 on another port: allowed
    r = env.import_and_wait("default", {"source": {"registryUri": f"http://{fake.host}", "sourceImage": "fake/app:1"},
                                        "targetTags": ["fine/app:1"]}, rg="moat")
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    assert tags_of(env.client("default"), "fine/app") == ["1"]
