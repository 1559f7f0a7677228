"""`moat audit` for people: one operation name whatever the outcome, filters in any case that refuse unknown values
and list the valid ones, --limit/--oldest-first, --follow, JSON lines, and a table that stays aligned."""
from __future__ import annotations

import base64
import json
import os
import select
import signal
import subprocess
import time

import unicodedata

from conftest import (Arm, build_image, make_session, moat_bin, parse_json_lines, repo_scope, sp_create)

DATA_OPS = ["Login", "Push", "Pull", "Mount", "Delete", "Untag", "DeleteRepository", "ListRepositories", "ListTags",
            "ListReferrers", "ListManifests", "ShowRepository", "ShowTag", "ShowManifest", "UpdateAttributes",
            "Import", "Export"]


def audit_json(server, *args) -> list[dict]:
    return parse_json_lines(server.moat("audit", "-o", "json", *args).stdout)


def wait_for(server, pred, *args, timeout=10.0) -> list[dict]:
    """Reads `moat audit -o json ARGS` until `pred(rows)` holds (refusals are written in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = audit_json(server, *args)
        if pred(rows) or time.monotonic() > deadline:
            assert pred(rows), rows
            return rows
        time.sleep(0.2)


def test_a_refused_push_is_named_push_however_it_is_refused(moat):
    c = moat.client()
    repo = "ops/denied"
    # 1. a token without push: refused for the missing permission (was recorded as `push`)
    token = c.token(repo_scope(repo, "pull"))
    r = c.session.post(f"{moat.base_url}/v2/{repo}/blobs/uploads/", headers={"Authorization": f"Bearer {token}"},
                       timeout=30)
    assert r.status_code == 401, r.text
    # 2. wrong credentials (was recorded as `Authenticate`)
    r = c.session.post(f"{moat.base_url}/v2/{repo}/blobs/uploads/", auth=("admin", "wrong"), timeout=30)
    assert r.status_code == 401, r.text
    # 3. the network: a registry that allows no address (was recorded as `Connect`)
    arm = Arm(moat, sp_create(moat, "ops-owner"))
    r = arm.put_registry("opsnet", {"location": "local", "sku": {"name": "Premium"},
                                    "properties": {"networkRuleSet": {"defaultAction": "Deny", "ipRules": []}}})
    assert r.status_code in (200, 201), r.text
    host = f"opsnet.localhost:{moat.port}"
    s = make_session(moat.base_url, host, moat.verify)
    r = s.post(f"{moat.base_url}/v2/{repo}/blobs/uploads/", headers={"Host": host}, timeout=30)
    assert r.status_code == 403 and "DENIED" in r.text, r.text

    denied = wait_for(moat, lambda rows: len(rows) >= 3, "--operation", "push", "--result", "denied",
                      "--oldest-first")
    assert [e["OperationName"] for e in denied] == ["Push"] * 3, denied
    assert {e["Registry"] for e in denied} == {"default", "opsnet"}, denied
    assert [e["ResultType"] for e in denied] == ["Denied"] * 3
    # nothing is recorded under the old names any more
    everything = audit_json(moat, "--log", "data")
    names = {e["OperationName"] for e in everything}
    assert names <= set(DATA_OPS), names

    # and a push that succeeds has the same name: one filter finds both
    c.push_image(repo, build_image(seed="ops-denied"), tag="v1")
    pushes = wait_for(moat, lambda rows: any(e["ResultType"] == "Success" for e in rows), "--operation", "PUSH",
                      "--repository", repo)
    assert {e["ResultType"] for e in pushes} == {"Success", "Denied"}, pushes


def test_filters_read_any_case_and_unknown_values_list_the_valid_ones(moat):
    c = moat.client()
    c.push_image("ops/case", build_image(seed="ops-case"), tag="v1")
    arm = Arm(moat, sp_create(moat, "ops-case-owner"))
    assert arm.put_registry("opscase", {"location": "local", "sku": {"name": "Premium"}}).status_code == 201

    exact = audit_json(moat, "--operation", "Push", "--registry", "default", "--result", "Success")
    assert exact and {e["OperationName"] for e in exact} == {"Push"}, exact
    for spelling in (["--operation", "push", "--registry", "DEFAULT", "--result", "success"],
                     ["--operation", "PUSH", "--registry", "Default", "--result", "SUCCESS"]):
        assert audit_json(moat, *spelling) == exact, spelling
    assert audit_json(moat, "--repository", "OPS/CASE", "--operation", "push") == \
        audit_json(moat, "--repository", "ops/case", "--operation", "Push")
    # management operations and statuses, in any case, select activity records only
    writes = audit_json(moat, "--operation", "microsoft.containerregistry/REGISTRIES/write", "--result", "succeeded")
    assert writes and all(e["operationName"] == "Microsoft.ContainerRegistry/registries/write" for e in writes), writes
    assert any(e["registry"] == "opscase" for e in writes), writes

    p = moat.moat("audit", "--operation", "Pushh", check=False)
    assert p.returncode == 1 and "unknown operation 'Pushh'" in p.stderr, p.stderr
    for op in DATA_OPS:
        assert op in p.stderr, (op, p.stderr)
    assert "Microsoft.ContainerRegistry/registries/write" in p.stderr, p.stderr  # a recorded management operation

    p = moat.moat("audit", "--registry", "nosuchreg", check=False)
    assert p.returncode == 1 and "no registry 'nosuchreg'" in p.stderr, p.stderr
    assert "default" in p.stderr and "opscase" in p.stderr, p.stderr

    p = moat.moat("audit", "--result", "nope", check=False)
    assert p.returncode == 1 and "unknown result 'nope'" in p.stderr, p.stderr
    for r in ("Success", "Failure", "Denied", "Started", "Succeeded", "Failed"):
        assert r in p.stderr, (r, p.stderr)

    # values that select different logs cannot both match: said, not an empty table
    p = moat.moat("audit", "--operation", "push", "--result", "succeeded", check=False)
    assert p.returncode == 1 and "no row can match both" in p.stderr, p.stderr
    p = moat.moat("audit", "--operation", "push", "--log", "activity", check=False)
    assert p.returncode == 1 and "--log data" in p.stderr, p.stderr

    # a deleted registry's trail is still found by its name
    assert arm.request("DELETE", arm.registry_path("opscase")).status_code in (200, 202, 204)
    gone = audit_json(moat, "--registry", "OPSCASE")
    assert any(e.get("operationName") == "Microsoft.ContainerRegistry/registries/delete" for e in gone), gone


def test_limit_gives_the_newest_rows_and_oldest_first_the_oldest(moat):
    c = moat.client()
    repo = "ops/limit"
    for i in range(5):
        c.push_blob(repo, f"blob {i}".encode())
    args = ["--repository", repo, "--operation", "push"]
    chronological = audit_json(moat, *args, "--oldest-first")
    assert len(chronological) == 5, chronological
    digests = [e["Digest"] for e in chronological]
    newest_first = audit_json(moat, *args)
    assert [e["Digest"] for e in newest_first] == digests[::-1], "default order is newest first"
    assert [e["Digest"] for e in audit_json(moat, *args, "--limit", "2")] == digests[::-1][:2]
    assert [e["Digest"] for e in audit_json(moat, *args, "-n", "2", "--oldest-first")] == digests[:2]
    assert audit_json(moat, *args, "--limit", "0") == []
    table = moat.moat("audit", *args, "--limit", "3").stdout.splitlines()
    assert len(table) == 4, table  # the header and three rows


def _read_lines(proc, want: int, timeout: float) -> list[str]:
    """Reads at least `want` lines from proc.stdout within `timeout` (unbuffered fd reads)."""
    buf = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while buf.count(b"\n") < want and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
    return buf.decode().splitlines()


def test_follow_prints_rows_as_they_are_written_until_ctrl_c(moat):
    c = moat.client()
    repo = "ops/follow"
    c.push_blob(repo, b"before")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOAT_")}
    proc = subprocess.Popen([moat_bin(), "audit", "--follow", "-o", "json", "--repository", repo, "--operation",
                             "Push", "--data-dir", str(moat.data_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        first = _read_lines(proc, 1, 20)
        assert len(first) == 1 and json.loads(first[0])["Repository"] == repo, first  # the backlog
        after = c.push_blob(repo, b"after follow started")
        c.push_blob("ops/other", b"not this repository")
        lines = first + _read_lines(proc, 1, 20)
        assert len(lines) == 2, lines
        row = json.loads(lines[1])
        assert row["Digest"] == after and row["OperationName"] == "Push", row
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert out.decode().strip() == "", out  # nothing else matched
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_json_output_is_json_lines(moat):
    c = moat.client()
    c.push_image("ops/json", build_image(seed="ops-json"), tag="v1")
    sp_create(moat, "ops-json-sp")
    out = moat.moat("audit", "-o", "json", "--log", "all").stdout
    lines = out.splitlines()
    assert len(lines) > 3 and not out.lstrip().startswith("["), out[:200]
    rows = [json.loads(line) for line in lines]  # every line is one object
    assert all(isinstance(r, dict) for r in rows)
    assert any("OperationName" in r for r in rows) and any("operationName" in r for r in rows)
    help_text = moat.moat("audit", "--help").stdout
    assert "JSON lines, one object per line" in " ".join(help_text.split()), help_text


def _forged_jwt(alg: str) -> str:
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    return f"{enc(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())}.{enc(b'{}')}.{enc(b'sig')}"


def _width(s: str) -> int:
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def _starts(header: str) -> list[int]:
    cols = ["LOG", "RESULT", "OPERATION", "REGISTRY", "RESOURCE", "CALLER", "CALLER IP", "ENDPOINT", "STATUS",
            "DETAIL"]
    return [header.index(" " + c + " ") + 1 if " " + c + " " in header else header.index(" " + c) + 1
            for c in cols]


def _column_start_ok(line: str, start: int) -> bool:
    """The text before display column `start` ends with the separator space, and a cell starts there."""
    used, i = 0, 0
    while i < len(line) and used < start:
        used += _width(line[i])
        i += 1
    return used == start and line[i - 1] == " " and i < len(line) and line[i] != " "


def test_the_table_has_registry_and_endpoint_columns_and_stays_aligned(moat):
    c = moat.client()
    c.push_image("ops/a-rather-long-repository-name/with/many/levels", build_image(seed="ops-table"), tag="v1")
    arm = Arm(moat, sp_create(moat, "ops-table-owner"))
    assert arm.put_registry("opstable", {"location": "local", "sku": {"name": "Premium"}}).status_code == 201
    # a refusal whose reason quotes control characters and wide text sent by the client
    s = make_session(moat.base_url, verify=moat.verify)
    r = s.get(moat.base_url + "/v2/", headers={"Authorization": "Bearer " + _forged_jwt("HS256\n\x1b[2J\u56e2\u961f")})
    assert r.status_code == 401, r.text
    r = s.get(moat.base_url + "/oauth2/token", params={"service": moat.login_server, "scope": "repository:x:pull"},
              auth=("nobody", "wrong"))
    assert r.status_code == 401
    wait_for(moat, lambda rows: any(e["ResultType"] != "Success" for e in rows), "--operation", "login")

    out = moat.moat("audit", "--log", "all").stdout
    lines = out.splitlines()
    header = lines[0]
    assert header.split()[:6] == ["TIME", "LOG", "RESULT", "OPERATION", "REGISTRY", "RESOURCE"], header
    assert " ENDPOINT " in header, header
    assert len(lines) > 5
    starts = _starts(header)
    for line in lines[1:]:
        for st in starts:
            assert _column_start_ok(line, st), f"column at {st} misaligned:\n{header}\n{line}"
    data_rows = [l for l in lines[1:] if " data " in l]
    assert any(" default " in l and " public " in l for l in data_rows), data_rows
    activity_rows = [l for l in lines[1:] if " activity " in l]
    assert any(" opstable " in l and " managementApi " in l for l in activity_rows), activity_rows
