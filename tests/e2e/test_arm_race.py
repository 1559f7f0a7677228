"""The export-policy rule under concurrency, over the real management API (HTTPS, an AAD token from Moat's own
token service, plain requests).

ACR's rule: a registry's exports may be disabled only while it is Premium with public network access disabled,
and while they are disabled neither may change. Each PATCH is checked against the state it produces; two racing
PATCHes that are each fine alone (disable exports / enable public access) must not both land. Many threads send
random PATCHes at one registry while another thread keeps reading it; every state anybody sees must obey the rule.
"""
from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter

from conftest import Arm, export_invariant_violation, sp_create

THREADS = 24
SECONDS = 4.0
NAME = "racereg"

# name -> PATCH body
OPS = {
    "disable_exports_and_public": {"properties": {"publicNetworkAccess": "Disabled",
                                                  "policies": {"exportPolicy": {"status": "disabled"}}}},
    "disable_exports": {"properties": {"policies": {"exportPolicy": {"status": "disabled"}}}},
    "disable_public": {"properties": {"publicNetworkAccess": "Disabled"}},
    "enable_public": {"properties": {"publicNetworkAccess": "Enabled"}},
    "downgrade_standard": {"sku": {"name": "Standard"}},
    "upgrade_premium": {"sku": {"name": "Premium"}},
    "enable_exports": {"properties": {"policies": {"exportPolicy": {"status": "enabled"}}}},
}
# What a successful PATCH must show in the registry it returns (the state it produced).
EXPECT = {
    "disable_exports_and_public": lambda r: r["properties"]["policies"]["exportPolicy"]["status"] == "disabled"
    and r["properties"]["publicNetworkAccess"] == "Disabled" and r["sku"]["name"] == "Premium",
    "disable_exports": lambda r: r["properties"]["policies"]["exportPolicy"]["status"] == "disabled"
    and r["properties"]["publicNetworkAccess"] == "Disabled" and r["sku"]["name"] == "Premium",
    "disable_public": lambda r: r["properties"]["publicNetworkAccess"] == "Disabled",
    "enable_public": lambda r: r["properties"]["publicNetworkAccess"] == "Enabled"
    and r["properties"]["policies"]["exportPolicy"]["status"] == "enabled",
    "downgrade_standard": lambda r: r["sku"]["name"] == "Standard"
    and r["properties"]["policies"]["exportPolicy"]["status"] == "enabled",
    "upgrade_premium": lambda r: r["sku"]["name"] == "Premium",
    "enable_exports": lambda r: r["properties"]["policies"]["exportPolicy"]["status"] == "enabled",
}
ENABLE_PUBLIC_REFUSED = (f"Enabling public network access is not supported because the registry '{NAME}' "
                         "has exports disabled.")
# Ops that can be refused, and only for the export rule.
REFUSABLE = {"disable_exports_and_public", "disable_exports", "enable_public", "downgrade_standard"}


def test_export_policy_holds_under_racing_patches(moat):
    sp = sp_create(moat, "racer", "Contributor")
    arm = Arm(moat, sp)
    r = arm.put_registry(NAME, {"location": "westeurope", "sku": {"name": "Premium"},
                                "properties": {"adminUserEnabled": False}})
    assert r.status_code in (200, 201), f"PUT registry: {r.status_code} {r.text[:500]}"

    problems: list[str] = []
    outcomes: Counter = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    gets = Counter()

    def problem(msg: str):
        with lock:
            if len(problems) < 50:
                problems.append(msg)

    def check_state(what: str, body) -> None:
        if not isinstance(body, dict) or "properties" not in body or "sku" not in body:
            problem(f"{what}: not a registry: {str(body)[:300]}")
            return
        v = export_invariant_violation(body)
        if v:
            problem(f"{what}: invariant broken: {v}")

    def worker(seed: int):
        rnd = random.Random(seed)
        a = arm.clone()
        deadline = time.monotonic() + SECONDS
        names = list(OPS)
        while time.monotonic() < deadline:
            op = rnd.choice(names)
            try:
                resp = a.patch_registry(NAME, OPS[op])
            except Exception as e:  # noqa: BLE001 - any transport failure is a finding
                problem(f"{op}: transport error {e!r}")
                continue
            desc = f"PATCH {op} {OPS[op]} -> {resp.status_code} {resp.text[:400]!r}"
            if resp.status_code == 200:
                body = resp.json()
                check_state(desc, body)
                if not EXPECT[op](body):
                    problem(f"200 but the returned registry does not show the change: {desc}")
                with lock:
                    outcomes[(op, "ok")] += 1
            elif resp.status_code == 400:
                try:
                    err = resp.json().get("error") or {}
                except ValueError:
                    err = {}
                if not (err.get("code") == "BadRequest" and isinstance(err.get("message"), str)
                        and err.get("target")):
                    problem(f"400 without the ARM BadRequest envelope (code, message, target): {desc}")
                if op not in REFUSABLE:
                    problem(f"refused an operation the export rule never refuses: {desc}")
                if op == "enable_public" and err.get("message") != ENABLE_PUBLIC_REFUSED:
                    problem(f"refusal to enable public access with another message: {desc}")
                with lock:
                    outcomes[(op, "refused")] += 1
            else:
                problem(f"unexpected status (refusals must be 400, never 5xx): {desc}")
                with lock:
                    outcomes[(op, str(resp.status_code))] += 1

    def reader():
        a = arm.clone()
        while not stop.is_set():
            try:
                resp = a.get_registry(NAME)
            except Exception as e:  # noqa: BLE001
                problem(f"GET: transport error {e!r}")
                continue
            if resp.status_code != 200:
                problem(f"GET -> {resp.status_code} {resp.text[:300]!r}")
                continue
            check_state("GET", resp.json())
            gets["n"] += 1

    readers = [threading.Thread(target=reader, daemon=True)]
    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    for t in readers + workers:
        t.start()
    for t in workers:
        t.join(SECONDS + 120)
    stop.set()
    for t in readers:
        t.join(60)
    assert not any(t.is_alive() for t in workers + readers), "threads did not finish (server hung?)"

    final = arm.get_registry(NAME)
    assert final.status_code == 200, final.text
    check_state("final GET", final.json())

    summary = ", ".join(f"{op}/{res}={n}" for (op, res), n in sorted(outcomes.items())) + f", GETs={gets['n']}"
    print("outcomes:", summary)
    assert not problems, f"{len(problems)} problem(s) ({summary}):\n" + "\n".join(problems)
    disables_ok = outcomes[("disable_exports_and_public", "ok")] + outcomes[("disable_exports", "ok")]
    refusals = sum(n for (op, res), n in outcomes.items() if res == "refused")
    assert disables_ok > 0, f"no export disable ever succeeded, so the race was not exercised: {summary}"
    assert refusals > 0, f"nothing was ever refused, so the rule was not exercised: {summary}"
    assert gets["n"] > 0, "the reader never got the registry"


def test_racing_creates_and_replacements(moat):
    """Many threads create the same registries at once (PUT, implicitly creating their resource groups) and
    replace them with PUTs that do and do not keep exports disabled. Exactly one creator per name gets 201,
    nobody gets a 5xx or a conflict, and every state obeys the export rule."""
    racing_puts(moat, sp_creates_beside=0)


def test_sp_create_while_the_server_writes(moat):
    """`moat sp create` works on the data directory of a running server (shared SQLite): while it runs, the
    server's own writes (the racing PUTs above) must still succeed (no `database is locked` 5xx), and the new
    service principals must be able to sign in."""
    # The clash is timing-dependent (about one run in two shows it with one round): three rounds.
    for rnd in range(3):
        racing_puts(moat, sp_creates_beside=10, prefix=f"r{rnd}")


def racing_puts(moat, sp_creates_beside: int, prefix: str = ""):
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from conftest import moat_bin

    sp = sp_create(moat, f"creator{prefix}", "Owner")
    arm = Arm(moat, sp)
    _ = arm.subscription
    names = [f"crace{prefix}{i}" for i in range(4)]
    groups = [f"rgrace{prefix}{i}" for i in range(4)]
    bodies = [
        {"location": "westeurope", "sku": {"name": "Premium"}, "properties": {"adminUserEnabled": False}},
        {"location": "westeurope", "sku": {"name": "Premium"},
         "properties": {"publicNetworkAccess": "Disabled", "policies": {"exportPolicy": {"status": "disabled"}}}},
        {"location": "westeurope", "sku": {"name": "Premium"}, "properties": {"publicNetworkAccess": "Disabled"}},
        {"location": "westeurope", "sku": {"name": "Standard"}},
        # never valid: exports disabled with public access on / on Standard
        {"location": "westeurope", "sku": {"name": "Premium"},
         "properties": {"policies": {"exportPolicy": {"status": "disabled"}}}},
        {"location": "westeurope", "sku": {"name": "Standard"},
         "properties": {"publicNetworkAccess": "Disabled", "policies": {"exportPolicy": {"status": "disabled"}}}},
    ]
    problems: list[str] = []
    created: Counter = Counter()
    lock = threading.Lock()

    def one(job):
        i, attempt = job
        a = arm.clone()
        rnd = random.Random(i * 1000 + attempt)
        name, rg = names[i % len(names)], groups[i % len(groups)]
        body = bodies[0] if attempt == 0 else rnd.choice(bodies)
        try:
            r = a.put_registry(name, body, rg=rg)
        except Exception as e:  # noqa: BLE001
            return f"PUT {name}: transport error {e!r}"
        desc = f"PUT {rg}/{name} {body} -> {r.status_code} {r.text[:400]!r}"
        if r.status_code in (200, 201):
            if r.status_code == 201:
                with lock:
                    created[name] += 1
            v = export_invariant_violation(r.json())
            if v:
                return "invariant broken: " + v + ": " + desc
            exports = r.json()["properties"]["policies"]["exportPolicy"]["status"]
            want = ((body.get("properties") or {}).get("policies") or {}).get("exportPolicy", {}).get("status",
                                                                                                      "enabled")
            if exports != want:
                return f"the PUT's exportPolicy not applied (want {want}): {desc}"
            return None
        if r.status_code == 400:
            err = (r.json() or {}).get("error") or {}
            if err.get("code") != "BadRequest" or body not in bodies[4:]:
                return "unexpected refusal: " + desc
            return None
        return "unexpected status: " + desc

    def sp_creates():
        out = []
        for k in range(sp_creates_beside):
            p = subprocess.run([moat_bin(), "sp", "create", "--name", f"racing-sp{prefix}{k}", "--role", "Reader",
                                "--data-dir", str(moat.data_dir), "--listen", moat.login_server],
                               capture_output=True, text=True, timeout=60,
                               env={k2: v for k2, v in __import__("os").environ.items() if not k2.startswith("MOAT_")})
            if p.returncode != 0:
                out.append(f"moat sp create while PUTs race: exit {p.returncode}: {p.stderr[-500:]}")
            else:
                out.append(json.loads(p.stdout))
        return out

    # 16 threads; each first creates (attempt 0), then keeps replacing, for at least 6 PUTs and for as long as
    # the `moat sp create` runs last.
    sp_done = threading.Event()

    def worker(i):
        found, attempt = [], 0
        deadline = time.monotonic() + 120
        while (attempt < 6 or not sp_done.is_set()) and time.monotonic() < deadline:
            res = one((i, attempt))
            if res and len(found) < 5:
                found.append(res)
            attempt += 1
        return found

    def sp_side():
        try:
            return sp_creates()
        finally:
            sp_done.set()

    with ThreadPoolExecutor(max_workers=17) as ex:
        spf = ex.submit(sp_side)
        futures = [ex.submit(worker, i) for i in range(16)]
        for f in futures:
            problems.extend(f.result(timeout=300))
        sps = spf.result(timeout=300)

    for s in sps:
        if isinstance(s, str):
            problems.append(s)
        else:
            try:
                Arm(moat, s).subscription
            except AssertionError as e:
                problems.append(f"SP made during the race cannot sign in: {e}")
    for name in names:
        if created[name] != 1:
            problems.append(f"{name}: {created[name]} creators got 201 (want exactly 1)")
    for name, rg in zip(names, groups):
        r = arm.get_registry(name, rg=rg)
        if r.status_code != 200:
            problems.append(f"GET {rg}/{name} -> {r.status_code} {r.text[:300]}")
        elif export_invariant_violation(r.json()):
            problems.append(f"final {name}: {export_invariant_violation(r.json())}")
    r = arm.request("GET", f"/subscriptions/{arm.subscription}/resourcegroups", api_version="2022-09-01")
    assert r.status_code == 200, r.text
    rgs = sorted(g["name"] for g in r.json()["value"])
    for g in groups:
        if rgs.count(g) != 1:
            problems.append(f"resource group {g} listed {rgs.count(g)} times: {rgs}")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])


def test_racing_delete_recreate_and_patch(moat):
    """DELETE, PUT (re-create), PATCH and GET of one name at once: each answer is one ARM gives for a registry
    that exists or does not (200/201/204/404, or the export rule's 400), never a 5xx, and every registry body
    obeys the export rule."""
    sp = sp_create(moat, "deleter", "Owner")
    arm = Arm(moat, sp)
    name = "delrace"
    premium_locked = {"location": "westeurope", "sku": {"name": "Premium"},
                      "properties": {"publicNetworkAccess": "Disabled",
                                     "policies": {"exportPolicy": {"status": "disabled"}}}}
    ops = {
        "put_plain": ("PUT", {"location": "westeurope", "sku": {"name": "Premium"}}, {200, 201}),
        "put_locked": ("PUT", premium_locked, {200, 201}),
        "patch_disable": ("PATCH", OPS["disable_exports_and_public"], {200, 400, 404}),
        "patch_public": ("PATCH", OPS["enable_public"], {200, 400, 404}),
        "patch_standard": ("PATCH", OPS["downgrade_standard"], {200, 400, 404}),
        "delete": ("DELETE", None, {200, 202, 204}),
        "get": ("GET", None, {200, 404}),
    }
    problems: list[str] = []
    seen: Counter = Counter()
    lock = threading.Lock()

    def worker(seed):
        rnd = random.Random(seed)
        a = arm.clone()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            op = rnd.choice(list(ops))
            method, body, allowed = ops[op]
            try:
                r = a.request(method, a.registry_path(name), body)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{op}: transport error {e!r}")
                continue
            desc = f"{op} {method} {body} -> {r.status_code} {r.text[:300]!r}"
            with lock:
                seen[(op, r.status_code)] += 1
            if r.status_code not in allowed:
                problems.append("unexpected status: " + desc)
                continue
            if r.status_code in (200, 201) and r.content and method != "DELETE":
                v = export_invariant_violation(r.json())
                if v:
                    problems.append(f"invariant broken ({v}): {desc}")
            if r.status_code in (400, 404):
                err = (r.json() or {}).get("error") or {}
                if not (isinstance(err.get("code"), str) and isinstance(err.get("message"), str)):
                    problems.append("not an ARM error envelope: " + desc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "threads did not finish (server hung?)"
    summary = ", ".join(f"{op}/{st}={n}" for (op, st), n in sorted(seen.items()))
    print("outcomes:", summary)
    assert not problems, f"{len(problems)} problem(s) ({summary}):\n" + "\n".join(problems[:40])
    assert seen[("delete", 200)] > 0 and seen[("put_plain", 201)] + seen[("put_locked", 201)] > 1, summary
    # Afterwards the name still works: create, then read.
    r = arm.put_registry(name, {"location": "westeurope", "sku": {"name": "Premium"}})
    assert r.status_code in (200, 201), r.text
    assert arm.get_registry(name).status_code == 200
