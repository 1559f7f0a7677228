"""SIEM sinks: `moat monitor sink add|list|show|delete` registers a syslog-over-TLS collector and an HTTP (Splunk HEC
style) collector, started by the test; add connects to each once and refuses one it cannot use, saying why; no
secret (a header value, the token) is stored in clear, shown or logged; every change is in the activity log."""
from __future__ import annotations

import json
import sqlite3

import pytest

from conftest import parse_json_lines
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
