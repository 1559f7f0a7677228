"""The audit trail an auditor can trust: real pushes, pulls, logins and a management change are chained and signed;
`moat audit verify` passes, then names the right record after the test edits, deletes or swaps rows in the SQLite
file (server stopped); retention prunes only what a log consumer (a sink's cursor) has taken, and the chain still
verifies from the signed prune checkpoint."""

import json
import sqlite3
import time

import requests

from conftest import build_image


def verify(server, *extra):
    p = server.moat("audit", "verify", "-o", "json", *extra, check=False)
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert (p.returncode == 0) == report["intact"], (p.returncode, p.stdout, p.stderr)
    return report


def db(server):
    return sqlite3.connect(server.data_dir / "moat.db")


def one(server, sql, *args):
    with db(server) as c:
        return c.execute(sql, args).fetchone()


def execute(server, *statements):
    c = db(server)
    try:
        for sql in statements:
            c.execute(sql)
        c.commit()
    finally:
        c.close()


def traffic(server):
    client = server.client()
    image = build_image(2, seed="trail")
    client.push_image("app", image, tag="v1")
    for _ in range(5):
        assert client.get_manifest("app", "v1").status_code == 200
    # A refused login: recorded like the others.
    r = requests.get(f"{server.base_url}/oauth2/token", params={"service": server.login_server, "scope": "repository:app:pull"},
                     auth=("admin", "wrong"), verify=server.verify, timeout=10)
    assert r.status_code == 401
    # A management change, in the activity log (recorded in the change's own transaction).
    server.create_registry("trailother")


def wait_for(pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_verify_passes_then_names_the_edited_deleted_and_swapped_record(moat_factory):
    server = moat_factory(extra_args=["--trail-checkpoint-interval-secs", "1"])
    traffic(server)
    events = server.audit()
    assert any(e["OperationName"] == "Pull" for e in events) and any(e["OperationName"] == "Login" for e in events)
    # The heads are signed within the interval.
    wait_for(lambda: one(server, "SELECT COUNT(*) FROM trail_checkpoints")[0] >= 2)
    report = verify(server)
    assert report["intact"] and report["problems"] == []
    assert report["auditRecords"] == len(events) and report["activityRecords"] >= 1 and report["checkpoints"] >= 2
    assert verify(server, "--registry", "DEFAULT")["intact"]
    server.stop()
    seqs = [r[0] for r in db(server).execute("SELECT seq FROM audit_records ORDER BY seq").fetchall()]
    assert len(seqs) >= 8
    target = seqs[4]

    # 1. An edited record: its time moved by one microsecond.
    execute(server, f"UPDATE audit_records SET t = t + 1 WHERE seq = {target}")
    r = verify(server)
    assert not r["intact"] and r["problems"][0]["seq"] == target, r
    assert "edited" in r["problems"][0]["what"]
    p = server.moat("audit", "verify", check=False)
    assert p.returncode == 1 and f"record {target}" in p.stdout and "altered" in p.stdout, p.stdout
    execute(server, f"UPDATE audit_records SET t = t - 1 WHERE seq = {target}")
    assert verify(server)["intact"]

    # 2. A deleted record (kept aside to put back).
    row = one(server, "SELECT seq, t, reg, ident, f, link FROM audit_records WHERE seq = ?", target)
    execute(server, f"DELETE FROM audit_records WHERE seq = {target}")
    r = verify(server)
    assert not r["intact"] and r["problems"][0]["seq"] == target and "deleted" in r["problems"][0]["what"], r
    c = db(server)
    c.execute("INSERT INTO audit_records(seq, t, reg, ident, f, link) VALUES (?,?,?,?,?,?)", row)
    c.commit()
    c.close()
    assert verify(server)["intact"]

    # 3. Two records swapped (each keeps the other's seq).
    a, b = seqs[2], seqs[3]
    execute(server, f"UPDATE audit_records SET seq = -1 WHERE seq = {a}",
            f"UPDATE audit_records SET seq = {a} WHERE seq = {b}",
            f"UPDATE audit_records SET seq = {b} WHERE seq = -1")
    r = verify(server)
    assert not r["intact"] and r["problems"][0]["seq"] == a, r
    execute(server, f"UPDATE audit_records SET seq = -1 WHERE seq = {a}",
            f"UPDATE audit_records SET seq = {a} WHERE seq = {b}",
            f"UPDATE audit_records SET seq = {b} WHERE seq = -1")
    assert verify(server)["intact"]

    # 4. An activity record edited (who made the change).
    aseq, caller = one(server, "SELECT seq, caller FROM activity_events ORDER BY seq DESC LIMIT 1")
    execute(server, f"UPDATE activity_events SET caller = 'someone-else' WHERE seq = {aseq}")
    r = verify(server)
    assert not r["intact"] and any(p["log"] == "activity" and p["seq"] == aseq for p in r["problems"]), r
    c = db(server)
    c.execute("UPDATE activity_events SET caller = ? WHERE seq = ?", (caller, aseq))
    c.commit()
    c.close()
    assert verify(server)["intact"]

    # 5. The whole chain rewritten consistently (links and head recomputed by someone without the key): the
    #    signed checkpoint no longer matches. Simulated by forging a checkpoint's state instead.
    cp = one(server, "SELECT seq, chain FROM trail_checkpoints WHERE chain = 'audit/default' ORDER BY seq DESC LIMIT 1")
    execute(server, f"UPDATE trail_checkpoints SET state = '{'0' * 64}' WHERE seq = {cp[0]}")
    r = verify(server, "--registry", "default")
    assert not r["intact"] and any("signature" in p["what"] for p in r["problems"]), r


def test_retention_prunes_only_what_the_consumers_took_and_the_chain_still_verifies(moat_factory, tmp_path):
    cfg = tmp_path / "moat.toml"
    # Retention 0: every record may go as soon as every consumer has it.
    cfg.write_text("[audit]\nretention_days = 0\n")
    server = moat_factory(start=False, extra_args=["--config", str(cfg), "--trail-checkpoint-interval-secs", "1",
                                                   "--trail-retention-interval-secs", "1"])
    server.start()
    # A sink that has taken nothing yet (as a diagnostic setting's cursor is).
    execute(server, "INSERT INTO log_consumers(consumer, log, registry, seq, updated) "
                    "VALUES ('sink:test', 'audit', NULL, 0, '2026-01-01T00:00:00.000000Z')")
    traffic(server)
    total = len(server.audit())
    time.sleep(2.5)
    # Nothing delivered, nothing pruned.
    assert one(server, "SELECT COUNT(*) FROM audit_records")[0] == total
    seqs = [r[0] for r in db(server).execute("SELECT seq FROM audit_records ORDER BY seq").fetchall()]
    cursor = seqs[len(seqs) // 2]
    execute(server, f"UPDATE log_consumers SET seq = {cursor} WHERE consumer = 'sink:test'")
    # The consumer's cursor moved: records at or below it go, the others stay.
    wait_for(lambda: one(server, "SELECT COUNT(*) FROM audit_records WHERE seq <= ?", cursor)[0] == 0)
    left = [r[0] for r in db(server).execute("SELECT seq FROM audit_records ORDER BY seq").fetchall()]
    assert left == [s for s in seqs if s > cursor]
    prune = one(server, "SELECT last_seq, kind FROM trail_checkpoints WHERE kind = 'prune' AND chain = 'audit/default'")
    assert prune is not None and prune[0] <= cursor
    assert [e for e in server.audit()] and len(server.audit()) == len(left)
    report = verify(server)
    assert report["intact"], report
    # New records chain on after the prune point.
    server.client().get_manifest("app", "v1")
    wait_for(lambda: one(server, "SELECT COUNT(*) FROM audit_records")[0] > len(left))
    server.stop()
    assert verify(server)["intact"]
