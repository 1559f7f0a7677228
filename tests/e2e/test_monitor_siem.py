"""SIEM sinks: `moat monitor sink add|list|show|delete` registers a syslog-over-TLS collector and an HTTP (Splunk HEC
style) collector, started by the test; add connects to each once and refuses one it cannot use, saying why; no
secret (a header value, the token) is stored in clear, shown or logged; every change is in the activity log."""
from __future__ import annotations

import json
import sqlite3
import threading
import time

from conftest import Arm, build_image, make_session, parse_json_lines, sp_create
from test_arm_az import Az
from receivers import HttpReceiver
from syslog_receiver import SyslogReceiver

KV = "https://siemvault.vault.azure.net/secrets/hec-token"
TOKEN = "hec-token-7f3a9c"
HEADER_VALUE = "x-secret-4b1d"


def add(moat, *args, check=True):
    return moat.moat("monitor", "sink", "add", *args, check=check)


def test_sinks_are_added_probed_listed_and_deleted_without_showing_secrets(moat, tmp_path):
    moat.moat("secret", "set", "--id", KV, "--value", TOKEN)
    with SyslogReceiver(tmp_path) as syslog, HttpReceiver() as http:
        p = add(moat, "--name", "soc-syslog", "--kind", "syslog", "--address", syslog.address,
                "--ca-file", str(syslog.ca_file), "--app-name", "moat-prod", "--facility", "local3")
        s = json.loads(p.stdout)
        sub = s["id"].split("/")[2]
        assert s["id"] == f"/subscriptions/{sub}/resourceGroups/moat/providers/Moat.Monitor/partnerSinks/soc-syslog"
        assert s["kind"] == "syslog"
        assert s["config"]["address"] == syslog.address
        assert s["config"]["facility"] == 19
        assert s["config"]["caCertificates"] == 1
        # The probe was a real TLS handshake with the collector.
        assert syslog.connections >= 1, syslog.errors

        before = len(http.requests)
        p = add(moat, "--name", "soc-hec", "--kind", "http", "--url", http.url + "services/collector",
                "--token-secret", KV, "--header", f"X-Tenant: {HEADER_VALUE}", "-g", "security")
        h = json.loads(p.stdout)
        assert h["id"].endswith("/resourceGroups/security/providers/Moat.Monitor/partnerSinks/soc-hec")
        assert h["config"]["headerNames"] == ["X-Tenant"]
        assert h["config"]["tokenSecret"] == KV
        assert h["sealedSecrets"] is True
        # The probe: one POST with the token and the header, and no events.
        probe = http.wait_for(lambda reqs: len(reqs) > before)[-1]
        assert probe.path == "/services/collector"
        assert probe.header("Authorization") == f"Splunk {TOKEN}"
        assert probe.header("X-Tenant") == HEADER_VALUE
        assert probe.body == b""

        listed = parse_json_lines(moat.moat("monitor", "sink", "list", "-o", "json").stdout)
        assert [r["name"] for r in listed] == ["soc-hec", "soc-syslog"]
        table = moat.moat("monitor", "sink", "list").stdout
        assert "soc-syslog" in table and syslog.address in table
        shown = json.loads(moat.moat("monitor", "sink", "show", "--name", "SOC-HEC").stdout)
        assert shown["id"] == h["id"]
        for out in (p.stdout, json.dumps(listed), table, json.dumps(shown)):
            assert HEADER_VALUE not in out and TOKEN not in out

        # Replacing a sink keeps its id; the new address is used.
        with SyslogReceiver(tmp_path / "b") as other:
            p = add(moat, "--name", "soc-syslog", "--kind", "syslog", "--address", other.address,
                    "--ca-file", str(other.ca_file))
            assert json.loads(p.stdout)["id"] == s["id"]
            assert json.loads(moat.moat("monitor", "sink", "show", "-n", "soc-syslog").stdout)["config"][
                "address"] == other.address

        moat.moat("monitor", "sink", "delete", "--name", "soc-syslog")
        r = moat.moat("monitor", "sink", "show", "--name", "soc-syslog", check=False)
        assert r.returncode != 0 and "no sink named 'soc-syslog'" in r.stderr
        r = moat.moat("monitor", "sink", "delete", "--name", "soc-syslog", check=False)
        assert r.returncode != 0

    # Nothing secret in the database in clear, nor in the server's log.
    db = sqlite3.connect(moat.data_dir / "moat.db")
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    assert HEADER_VALUE not in dump and TOKEN not in dump
    assert "soc-hec" in dump
    assert HEADER_VALUE not in moat.log_path.read_text(errors="replace")

    # Each change is in the activity log, naming the sink, never a secret.
    acts = moat.audit(log="activity")
    ops = [(a.get("operationName"), a.get("resourceId")) for a in acts]
    assert ("Moat.Monitor/partnerSinks/write", s["id"]) in ops, ops
    assert ("Moat.Monitor/partnerSinks/write", h["id"]) in ops, ops
    assert ("Moat.Monitor/partnerSinks/delete", s["id"]) in ops, ops
    assert HEADER_VALUE not in json.dumps(acts) and TOKEN not in json.dumps(acts)


def test_unusable_sinks_are_refused_saying_why_and_nothing_is_stored(moat, tmp_path):
    with SyslogReceiver(tmp_path) as syslog:
        port = syslog.port
        cases = [
            # Nothing listens there any more.
            (["--kind", "syslog", "--address", "127.0.0.1:1"], "cannot connect"),
            # A collector whose certificate this CA did not sign.
            (["--kind", "syslog", "--address", syslog.address, "--ca-file", str(moat.ca_path)], "TLS handshake"),
            (["--kind", "syslog", "--address", "no-port"], "not a syslog address"),
            (["--kind", "http", "--url", "http://siem.example.com/services/collector"], "only to a loopback"),
            (["--kind", "http", "--url", "ftp://127.0.0.1/x"], "https://"),
            (["--kind", "http", "--url", "https://user:pw@127.0.0.1/x"], "credentials in the URL"),
            (["--kind", "kafka", "--address", syslog.address], "unknown sink kind 'kafka'"),
            (["--kind", "http", "--url", f"http://127.0.0.1:{port}/services/collector",
              "--token-secret", "https://siemvault.vault.azure.net/secrets/missing"], "moat secret set"),
            # The server's own listener is never a destination.
            (["--kind", "http", "--url", f"{moat.base_url.replace('https', 'http')}/x"], "does not connect"),
            (["--kind", "http", "--url", "https://127.0.0.1:1/x", "--header", "no-colon"], "Name: value"),
        ]
        for args, why in cases:
            r = add(moat, "--name", "bad", *args, check=False)
            assert r.returncode != 0, (args, r.stdout)
            assert why in r.stderr, (args, r.stderr)
        assert syslog.messages == []
    assert parse_json_lines(moat.moat("monitor", "sink", "list", "-o", "json").stdout) == []
    assert not [a for a in moat.audit(log="activity") if "partnerSinks" in (a.get("operationName") or "")]


REPO_CAT = "ContainerRegistryRepositoryEvents"
LOGIN_CAT = "ContainerRegistryLoginEvents"


class Puller(threading.Thread):
    """Pulls a manifest in a loop until stopped; errors (the server down) are counted, not raised."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.stop_flag = threading.Event()
        self.ok = 0
        self.errors = 0

    def run(self):
        c = self.server.client()
        while not self.stop_flag.is_set():
            try:
                r = c.get_manifest("siem/app", "v1")
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.errors += 1
                    c.reset()
            except Exception:
                self.errors += 1
                c.reset()
                time.sleep(0.2)
            time.sleep(0.03)


def hec_events(http: HttpReceiver) -> list[dict]:
    out = []
    for r in list(http.requests):
        if r.body:
            out += [json.loads(line) for line in r.body.decode().split("\n")]
    return out


def test_a_setting_ships_the_same_records_to_syslog_http_and_storage_through_outages_and_kill9(
        moat_factory, azurite, tmp_path):
    server = moat_factory(extra_args=["--sink-interval-ms", "200"])
    keyfile = tmp_path / "sa-key"
    keyfile.write_text(azurite.key + "\n")
    server.moat("storage-account", "add", "--name", azurite.account, "--blob-endpoint", azurite.endpoint + "/",
                "--key-file", str(keyfile))
    server.moat("secret", "set", "--id", KV, "--value", TOKEN)
    sp = sp_create(server, "siem-owner", "Owner")
    arm = Arm(server, sp)
    sub = arm.subscription
    r = arm.request("GET", f"/subscriptions/{sub}/providers/Microsoft.ContainerRegistry/registries",
                    api_version="2023-07-01")
    [reg] = [x for x in r.json()["value"] if x["name"] == "default"]
    reg_id = reg["id"]
    sa = f"/subscriptions/{sub}/resourceGroups/st/providers/Microsoft.Storage/storageAccounts/{azurite.account}"

    with SyslogReceiver(tmp_path) as syslog, HttpReceiver() as http:
        s_id = json.loads(add(server, "--name", "soc-syslog", "--kind", "syslog", "--address", syslog.address,
                              "--ca-file", str(syslog.ca_file)).stdout)["id"]
        h_id = json.loads(add(server, "--name", "soc-hec", "--kind", "http", "--url",
                              http.url + "services/collector", "--token-secret", KV).stdout)["id"]
        az = Az(server, tmp_path / "azcfg")
        az.register_and_login(sp)
        logs = json.dumps([{"category": REPO_CAT, "enabled": True}, {"category": LOGIN_CAT, "enabled": True}])
        # az insists on a storage account, workspace or event hub beside a partner: the syslog-only setting goes
        # through the ARM API as azure-mgmt-monitor would send it.
        r = arm.request("PUT", f"{reg_id}/providers/Microsoft.Insights/diagnosticSettings/to-syslog",
                        {"properties": {"marketplacePartnerId": s_id, "logs": json.loads(logs)}},
                        api_version="2021-05-01-preview")
        assert r.status_code == 200, r.text
        created = az("monitor", "diagnostic-settings", "create", "--name", "to-hec", "--resource", reg_id,
                     "--marketplace-partner-id", h_id, "--storage-account", sa, "--logs", logs, json_out=True).json
        assert created["marketplacePartnerId"].lower() == h_id.lower(), created

        c = server.client()
        assert c.push_image("siem/app", build_image(n_layers=1, seed="siem"), tag="v1").status_code == 201
        s = make_session(server.base_url, verify=server.verify)
        r = s.get(server.base_url + "/oauth2/token", auth=("admin", "wrong-password"), timeout=30,
                  params=[("service", server.login_server), ("scope", "repository:siem/app:pull")])
        assert r.status_code == 401, r.text
        syslog.wait_for(lambda ms: "Push" in {m.json().get("operationName") for m in ms}
                        and any(m.msg_id == "LoginEvent" and m.severity == 4 for m in ms), timeout=60)
        http.wait_for(lambda reqs: any(e.get("operationName") == "Push" for e in hec_events_of(reqs)),
                      timeout=60)
        first = syslog.messages[0]
        assert first.sd_id == "moat@32473" and first.sd["recordId"] == first.json()["recordId"], first.raw
        assert first.app_name == "moat" and first.facility == 16 and first.version == "1"
        hec = hec_events(http)
        assert all(e["sourcetype"] in (f"moat:{REPO_CAT}", f"moat:{LOGIN_CAT}") for e in hec), hec[:3]
        assert all(r.header("Authorization") == f"Splunk {TOKEN}" for r in http.requests)

        # Load, with both collectors gone for a while, then the server killed mid-shipping.
        puller = Puller(server)
        puller.start()
        try:
            time.sleep(2)
            syslog.stop()
            http.stop()
            time.sleep(60)  # the "a minute": the outbox holds what the collectors missed
            syslog.start()
            http.start()
            time.sleep(3)
            server.kill9()
            time.sleep(1)
            server.start()
            time.sleep(3)
        finally:
            puller.stop_flag.set()
            puller.join(30)
        assert puller.ok > 50, (puller.ok, puller.errors)

        pulls = [e for e in server.audit(operation="Pull") if e["Repository"] == "siem/app"]
        want = len(pulls)

        def pull_ids(records):
            return {x["recordId"] for x in records if x.get("operationName") == "Pull"}

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            s_ids = pull_ids(m.json() for m in syslog.messages)
            h_ids = pull_ids(e["event"] for e in hec_events(http))
            if len(s_ids) >= want and len(h_ids) >= want:
                break
            time.sleep(1)
        assert len(s_ids) == want and len(h_ids) == want, (len(s_ids), len(h_ids), want)
        assert s_ids == h_ids
        # HTTP: every record once. Syslog: at least once; a repeat is only a batch resent after a break.
        h_all = [e["event"]["recordId"] for e in hec_events(http)]
        assert len(h_all) == len(set(h_all)), f"{len(h_all) - len(set(h_all))} duplicate(s) over HTTP"
        s_all = syslog.record_ids()
        assert len(s_all) - len(set(s_all)) < want // 2, (len(s_all), len(set(s_all)))
        # Per-sink order is the log's.
        seqs = [int(i.rsplit("/", 1)[1]) for i in dict.fromkeys(h_all)]
        assert seqs == sorted(seqs)
        assert all(i.startswith(f"{sub}/audit/") for i in s_ids)

    # The storage archive of the same setting holds the same records.
    container = f"insights-logs-{REPO_CAT.lower()}"
    deadline = time.monotonic() + 90
    while True:
        archived = set()
        for b in azurite.list_blobs(container):
            for line in azurite.get_blob(container, b["name"]).decode().splitlines():
                x = json.loads(line)
                if x["operationName"] == "Pull":
                    archived.add(x["recordId"])
        if len(archived & h_ids) == want or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert h_ids <= archived, len(h_ids - archived)


def hec_events_of(reqs) -> list[dict]:
    out = []
    for r in reqs:
        if r.body:
            out += [json.loads(line)["event"] for line in r.body.decode().split("\n")]
    return out
