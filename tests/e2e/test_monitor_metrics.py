"""Issue 12 item 2, metrics: pulls and pushes made over the data plane come back through the real
`az monitor metrics list` (the audit log folded into one-minute points by the `metrics` consumer), split by
identity for PulledBytes, with Azure's errors for bad queries; the same traffic is counted by Prometheus'
`/metrics` on the admin listener (parsed by the official prometheus_client parser), which the registry listener
does not serve. The server runs with --metrics-interval-ms 200 so the aggregation delay is short."""
from __future__ import annotations

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import Arm, build_image, free_port, sp_create
from test_arm_az import Az

COUNTS = ["SuccessfulPullCount", "TotalPullCount", "SuccessfulPushCount", "TotalPushCount"]


@pytest.fixture
def server(moat_factory):
    admin_port = free_port()
    s = moat_factory(extra_args=["--metrics-interval-ms", "200", "--admin-listen", f"127.0.0.1:{admin_port}"])
    s.admin_url = f"http://127.0.0.1:{admin_port}"
    return s


@pytest.fixture
def az(server, tmp_path):
    return Az(server, tmp_path / "azcfg")


def pull_image(server, login_server: str, sp: dict, repo: str, tag: str, times: int) -> int:
    """Pulls the manifest and every blob `times` times as `sp`; returns the bytes received."""
    c = server.client(host=login_server, user=sp["appId"], password=sp["password"])
    scope = f"repository:{repo}:pull"
    total = 0
    for _ in range(times):
        r = c.request("GET", f"/v2/{repo}/manifests/{tag}", scopes=[scope],
                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200, r.text
        total += len(r.content)
        m = r.json()
        for d in [m["config"]["digest"]] + [l["digest"] for l in m["layers"]]:
            b = c.request("GET", f"/v2/{repo}/blobs/{d}", scopes=[scope])
            assert b.status_code == 200, b.status_code
            total += len(b.content)
    return total


def totals(result: dict) -> dict[str, float]:
    """Metric name -> the sum of `total` over every data point of every series."""
    out = {}
    for m in result["value"]:
        out[m["name"]["value"]] = sum(d.get("total") or 0 for ts in m["timeseries"] for d in ts["data"])
    return out


def poll(fn, want, timeout=30.0):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = fn()
        if want(got):
            return got
        time.sleep(0.5)
    raise AssertionError(f"not reached in {timeout}s; last: {got}")


def prometheus(server) -> dict[tuple, float]:
    r = requests.get(server.admin_url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_pulls_and_pushes_come_back_through_az_monitor_metrics_and_prometheus(server, az):
    owner = sp_create(server, "metrics-owner", "Owner")
    az.register_and_login(owner)
    reg = az("acr", "create", "-n", "metreg", "-g", "rg1", "--sku", "Premium", "-l", "westeurope",
             json_out=True).json
    login = reg["loginServer"]
    admin = server.client(host=login)
    pushed = 0
    M = 2
    for i in range(M):
        img = build_image(n_layers=2, seed=f"metrics-{i}", layer_size=8 * 1024)
        assert admin.push_image("team/app", img, tag=f"v{i}").status_code == 201
        pushed += sum(len(b) for b in img.blobs.values()) + len(img.manifest_bytes)
    a = sp_create(server, "puller-a", "AcrPull", scope=reg["id"])
    b = sp_create(server, "puller-b", "AcrPull", scope=reg["id"])
    outsider = sp_create(server, "outsider", None)
    pulled_a = pull_image(server, login, a, "team/app", "v0", 3)
    pulled_b = pull_image(server, login, b, "team/app", "v1", 1)
    # A pull the registry refuses (no role): an attempted pull, and a denial by reason.
    c = server.client(host=login, user=outsider["appId"], password=outsider["password"])
    r = c.request("GET", "/v2/team/app/manifests/v0", scopes=["repository:team/app:pull"])
    assert r.status_code == 401, r.status_code
    N = 4

    def counts():
        p = az("monitor", "metrics", "list", "--resource", reg["id"], "--metric", *COUNTS,
               "--interval", "PT1M", "--aggregation", "Total", json_out=True)
        return totals(p.json)

    got = poll(counts, lambda t: t.get("TotalPullCount", 0) >= N + 1 and t.get("TotalPushCount", 0) >= M)
    assert got == {"SuccessfulPullCount": N, "TotalPullCount": N + 1, "SuccessfulPushCount": M,
                   "TotalPushCount": M}, got

    # The answer's shape as Azure gives it: every minute of the hour present, empty ones with total 0.
    full = az("monitor", "metrics", "list", "--resource", reg["id"], "--metric", "SuccessfulPullCount",
              json_out=True).json
    assert full["interval"] == "PT1M" and full["namespace"] == "Microsoft.ContainerRegistry/registries", full
    series = full["value"][0]["timeseries"]
    assert len(series) == 1 and 60 <= len(series[0]["data"]) <= 61, series
    assert all("total" in d and d["timeStamp"].endswith(":00Z") for d in series[0]["data"]), series[0]["data"][:3]
    assert full["value"][0]["unit"] == "Count" and full["value"][0]["id"].startswith(reg["id"]), full["value"][0]

    names = {d["name"]["value"] for d in
             az("monitor", "metrics", "list-definitions", "--resource", reg["id"], json_out=True).json}
    assert set(COUNTS) | {"StorageUsed", "PulledBytes", "PushedBytes", "DeniedRequestCount"} <= names, names

    # PulledBytes split by identity: the two pullers, each with the bytes it received.
    split = az("monitor", "metrics", "list", "--resource", reg["id"], "--metric", "PulledBytes",
               "--dimension", "Identity", "--interval", "PT1M", json_out=True).json
    by_identity = {ts["metadatavalues"][0]["value"]: sum(d.get("total") or 0 for d in ts["data"])
                   for ts in split["value"][0]["timeseries"]}
    assert [ts["metadatavalues"][0]["name"]["value"] for ts in split["value"][0]["timeseries"]][0] == "identity"
    who = {e["Identity"] for e in server.audit(registry="metreg", operation="Pull", result="Success")}
    assert len(who) == 2 and set(by_identity) == who, (by_identity, who)
    assert sorted(by_identity.values()) == sorted([pulled_a, pulled_b]), (by_identity, pulled_a, pulled_b)

    # One identity only, by filter; denials by reason.
    ident_a = max(by_identity, key=by_identity.get)
    only = az("monitor", "metrics", "list", "--resource", reg["id"], "--metric", "PulledBytes",
              "--filter", f"Identity eq '{ident_a}'", "--interval", "PT5M", json_out=True).json
    assert [sum(d.get("total") or 0 for d in ts["data"]) for ts in only["value"][0]["timeseries"]] == [pulled_a]
    denied = az("monitor", "metrics", "list", "--resource", reg["id"], "--metric", "DeniedRequestCount",
                "--dimension", "Reason", json_out=True).json
    reasons = {ts["metadatavalues"][0]["value"]: sum(d.get("total") or 0 for d in ts["data"])
               for ts in denied["value"][0]["timeseries"]}
    assert reasons == {"MissingPermission": 1}, reasons

    # Prometheus, from this process's counters.
    prom = prometheus(server)
    assert prom[("moat_pulled_bytes_total", ())] == pulled_a + pulled_b, prom
    assert prom[("moat_pushed_bytes_total", ())] == pushed, prom
    pulls_ok = prom[("moat_requests_total", (("operation", "Pull"), ("result", "Success")))]
    assert pulls_ok == N * 4, pulls_ok  # each pull: the manifest, the config and two layers
    assert prom[("moat_denied_requests_total", (("operation", "Pull"), ("reason", "MissingPermission")))] == 1
    assert prom[("moat_upload_duration_seconds_count", ())] == M * 3 + M, prom  # 3 blobs + 1 manifest each
    backlog = {k[1]: v for k, v in prom.items() if k[0] == "moat_log_consumer_backlog"}
    assert (("consumer", "metrics"), ("log", "audit")) in backlog, backlog

    # A restart (kill -9: nothing flushed by a clean shutdown) neither loses nor recounts an event: the cursor
    # moved in the transaction that stored the points.
    server.kill9()
    server.start()
    time.sleep(1.5)  # several aggregation passes
    assert counts() == got


def test_metrics_are_not_served_on_the_registry_listener(server):
    r = requests.get(server.base_url + "/metrics", verify=server.verify, timeout=10)
    assert r.status_code == 404, r.status_code
    assert "moat_requests_total" not in r.text
    assert r.json()["errors"][0]["code"], r.text  # the registry's own 404, OCI-shaped
    other = requests.get(server.admin_url + "/v2/", timeout=10)
    assert other.status_code == 404


def test_an_admin_listener_on_a_registry_address_is_refused(moat_factory):
    s = moat_factory(start=False)
    p = s.moat("serve", "--listen", s.login_server, "--admin-listen", s.login_server, check=False, timeout=30)
    assert p.returncode != 0
    assert "admin listener" in (p.stdout + p.stderr), p.stderr


BAD = [
    (["--metric", "NoSuchMetric"], "Valid metrics"),
    (["--metric", "TotalPullCount", "--interval", "PT7M"], "PT1M, PT5M"),
    (["--metric", "TotalPullCount", "--filter", "Identity eq '*'"], "does not support requested dimension"),
    (["--metric", "PulledBytes", "--start-time", "2026-12-07T11:00:00Z", "--end-time", "2026-12-07T10:00:00Z"],
     "Invalid timespan"),
]


def test_bad_queries_get_azure_errors(server, az):
    owner = sp_create(server, "metrics-owner", "Owner")
    az.register_and_login(owner)
    reg = az("acr", "create", "-n", "badquery", "-g", "rg1", "--sku", "Basic", "-l", "westeurope",
             json_out=True).json
    for args, needle in BAD:
        p = az("monitor", "metrics", "list", "--resource", reg["id"], *args, ok=False)
        assert p.returncode != 0, (args, p.stdout)
        assert "BadRequest" in p.stderr and needle in p.stderr, (args, p.stderr)
    # And through the REST API directly: ARM error JSON, nothing else.
    arm = Arm(server, owner)
    r = arm.request("GET", reg["id"] + "/providers/Microsoft.Insights/metrics", api_version="2018-01-01",
                    params={"metricnames": "TotalPullCount", "aggregation": "Median"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest", r.text
    r = arm.request("GET", reg["id"] + "/providers/Microsoft.Insights/metricNamespaces",
                    api_version="2017-12-01-preview")
    assert r.status_code == 200, r.text
    assert r.json()["value"][0]["properties"]["metricNamespaceName"] == "Microsoft.ContainerRegistry/registries"
