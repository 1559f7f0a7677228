"""Durable jobs end to end (crates/server/src/jobs): work that outlives a request is a job in the metadata store,
claimed with a lease, checkpointed, and after `kill -9` resumed from its checkpoint or failed with a message.

- A remote importImage of a large image from a slow registry with credentials: the server is killed with SIGKILL
  while the largest layer downloads; after the restart the operation's Location still answers, the import
  finishes, the blobs received before the kill are not downloaded again, the target shows no tag until the whole
  image is linked, and the source password is nowhere in the data directory or the log.
- A job whose process dies in its handler every time (kind `test-abort`, enabled by MOAT_TEST_JOB_KINDS) fails
  after 3 attempts with a message that says so, and the server then stays up.
- A graceful restart (SIGTERM) hands a running job over without counting the attempt; `moat jobs cancel` stops a
  running job at its next checkpoint.
"""
from __future__ import annotations

import json
import time

from conftest import Arm, moat_bin, run
from test_import import Env, assert_image_in, build_image, fake_registry, tags_of  # noqa: F401 (fixture)

TEST_KINDS = {"MOAT_TEST_JOB_KINDS": "abort,sleep"}


def jobs_cli(moat, *args) -> str:
    return run([moat_bin(), "jobs", *args, "--data-dir", str(moat.data_dir)]).stdout


def job(moat, job_id: str) -> dict:
    return json.loads(jobs_cli(moat, "show", job_id))


def wait_job(moat, job_id: str, states: tuple[str, ...], seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        j = job(moat, job_id)
        if j["state"] in states:
            return j
        assert time.monotonic() < deadline, f"job {job_id} not {states} after {seconds}s: {j}"
        time.sleep(0.2)


def blob_gets(fake) -> dict[str, int]:
    counts: dict[str, int] = {}
    for method, path, _ in fake.seen:
        if method == "GET" and "/blobs/" in path:
            dg = path.split("/blobs/", 1)[1].split("?", 1)[0]
            counts[dg] = counts.get(dg, 0) + 1
    return counts


def files_containing(root, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_remote_import_resumes_after_kill9_without_fetching_twice(moat, tmp_path, fake_registry):
    env = Env(moat, tmp_path)
    img = build_image(8, layer_size=4 * 1024 * 1024)
    secret = "pw-remote-" + tmp_path.name
    fake = fake_registry(img, mode="slow", auth=("puller", secret))
    fake.slow_step = 0.6  # the largest layer takes ~12 s: the kill lands while it downloads
    r = env.import_request("default", {
        "source": {"registryUri": f"http://{fake.host}", "sourceImage": "fake/app:1",
                   "credentials": {"username": "puller", "password": secret}},
        "targetTags": ["big/app:1"]}, rg="moat")
    assert r.status_code == 202, f"{r.status_code} {r.text[:300]}"
    loc = r.headers["Location"]
    others = [dg for dg in fake.blobs if dg != fake.victim]
    deadline = time.monotonic() + 60
    while not (fake.victim in blob_gets(fake) and all(dg in blob_gets(fake) for dg in others)):
        assert time.monotonic() < deadline, f"the blobs were never all asked for: {blob_gets(fake)}"
        time.sleep(0.05)
    time.sleep(1.0)  # the fast blobs are received and recorded; the victim is still coming
    moat.kill9()
    before = blob_gets(fake)
    assert all(before[dg] == 1 for dg in others), before
    # The job's payload holds the password sealed: not in the database, its WAL or the log.
    assert files_containing(moat.data_dir, secret.encode()) == []
    assert secret not in moat.log_path.read_text(errors="replace")

    moat.start()
    dc = env.client("default")
    env.arm = Arm(moat, env.owner)
    deadline = time.monotonic() + 90
    seen_running = False
    while True:
        p = env.arm.session.get(loc, headers={"Authorization": "Bearer " + env.arm.token}, timeout=30)
        if p.status_code != 202:
            break
        seen_running = True
        assert p.json()["status"] == "InProgress", p.text
        # Never half-written: no tag (and so no pullable image) until the whole image is linked.
        assert tags_of(dc, "big/app") == [], "a tag before the import finished"
        assert time.monotonic() < deadline, f"the resumed import never finished: {p.text[:300]}"
        time.sleep(0.2)
    assert seen_running, "the operation was over before it could be seen running after the restart"
    assert p.status_code == 200 and p.json()["status"] == "Succeeded", f"{p.status_code} {p.text[:300]}"
    assert_image_in(dc, "big/app", "1", img)
    after = blob_gets(fake)
    # Received before the kill: not downloaded again. The victim was cut midway: downloaded again.
    assert {dg: after[dg] for dg in others} == {dg: 1 for dg in others}, after
    assert after[fake.victim] >= 2, after
    jobs = [json.loads(line) for line in jobs_cli(moat, "list", "-o", "json", "--kind", "remote-import").splitlines()]
    assert [(j["state"], j["attempts"]) for j in jobs] == [("succeeded", 2)], jobs
    assert files_containing(moat.data_dir, secret.encode()) == []


def start_until_it_dies(moat, seconds: float = 30):
    """Starts the server and waits for it to die (its job's handler kills it)."""
    try:
        moat.start()
    except AssertionError:
        pass  # it died before it was ready
    deadline = time.monotonic() + seconds
    while moat.proc.poll() is None:
        assert time.monotonic() < deadline, f"the server is still up:\n{moat.log_tail()}"
        time.sleep(0.1)
    moat._close_log()


def test_a_job_whose_process_keeps_dying_fails_after_three_attempts(moat_factory):
    moat = moat_factory(https=True, env=TEST_KINDS)
    job_id = jobs_cli(moat, "submit", "--kind", "test-abort").strip()
    deadline = time.monotonic() + 30
    while moat.proc.poll() is None:
        assert time.monotonic() < deadline, "the first attempt did not kill the server"
        time.sleep(0.1)
    moat._close_log()
    assert job(moat, job_id)["attempts"] == 1
    for attempt in (2, 3):
        start_until_it_dies(moat)
        j = job(moat, job_id)
        assert (j["state"], j["attempts"]) == ("running", attempt), j
    # The fourth start does not run it again: it fails it, and stays up.
    moat.start()
    j = wait_job(moat, job_id, ("failed",))
    assert "interrupted 3 times" in j["error"], j
    assert j["checkpoint"] == {"attempt": 3}, j
    # The kind's on_abandoned callback is told (a pipeline run writes its failure there).
    told = 'test-abort abandoned: Some("the job was interrupted 3 times'
    deadline = time.monotonic() + 10
    while told not in moat.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"on_abandoned was not called:\n{moat.log_tail()}"
        time.sleep(0.2)
    time.sleep(1.5)
    assert moat.proc.poll() is None, f"the server died again:\n{moat.log_tail()}"
    listed = jobs_cli(moat, "list", "--state", "failed")
    assert job_id in listed and "interrupted 3 times" in listed, listed


def test_graceful_restart_hands_over_without_counting_and_cancel_stops_a_job(moat_factory):
    moat = moat_factory(https=True, env=TEST_KINDS)
    job_id = jobs_cli(moat, "submit", "--kind", "test-sleep", "--payload", '{"secs": 4}').strip()
    wait_job(moat, job_id, ("running",))
    moat.restart()  # SIGTERM, then start again
    j = wait_job(moat, job_id, ("succeeded", "failed"))
    assert (j["state"], j["attempts"]) == ("succeeded", 1), j

    long_job = jobs_cli(moat, "submit", "--kind", "test-sleep", "--payload", '{"secs": 60}').strip()
    wait_job(moat, long_job, ("running",))
    assert "cancellation" in jobs_cli(moat, "cancel", long_job)
    j = wait_job(moat, long_job, ("succeeded", "failed"), seconds=10)
    assert (j["state"], j["error"]) == ("failed", "the job was cancelled"), j
    # A queued job is cancelled at once; an ended one cannot be.
    p = run([moat_bin(), "jobs", "cancel", long_job, "--data-dir", str(moat.data_dir)], check=False)
    assert p.returncode != 0 and "no queued or running job" in p.stderr, p
