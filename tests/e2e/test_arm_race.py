"""The export-policy rule under concurrency, over the real management API (HTTPS, an AAD token from Moat's own
token service, plain requests).

ACR's rule: a registry's exports may be disabled only while it is Premium with public network access disabled,
and while they are disabled neither may change. Each PATCH is checked against the state it produces; two racing
PATCHes that are each fine alone (disable exports / enable public access) must not both land. Many threads send
random PATCHes at one registry while another thread keeps reading it; every state anybody sees must obey the rule.
"""
from __future__ import annotations

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
