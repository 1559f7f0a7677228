"""The README, as a user pastes it.

Every ```sh block after the two set-up commands runs as written, in order, in one bash session (`set -e`: a failing
command fails the test), from the repository's root, the way a new user follows it on a fresh machine: `cargo install`
puts `moat` on the PATH, the demo lives in `~/moat-demo`, the real `az` drives the management plane. What the test
changes around the blocks, and why:

- HOME is a scratch directory (the demo's `~/moat-demo`, `moat login`'s profile), while cargo and rustup keep the
  machine's homes; `cargo install` goes to a scratch root put first on the PATH (on a fresh machine, ~/.cargo/bin is
  on the PATH already);
- the blocks run in a private mount namespace with a copy of /etc/hosts, so the walk-through's `sudo tee -a
  /etc/hosts` does not touch the machine's; as root without sudo (a container), `sudo` runs the command as is.

Then it checks what the session should have left behind, from the audit trail. A second test starts a server with
`examples/moat.toml` as shipped.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from conftest import MoatServer, build_image, client_via, require_tool

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SET_UP = ["cargo run --release -p moat -- serve", "bash scripts/test"]


def sh_blocks(text: str) -> list[tuple[int, str]]:
    """The README's ```sh blocks: (line number of the fence, body)."""
    blocks, body, start = [], None, 0
    for n, line in enumerate(text.splitlines(), 1):
        if body is None:
            if re.fullmatch(r"```sh\s*", line):
                body, start = [], n
        elif line.strip() == "```":
            blocks.append((start, "\n".join(body)))
            body = None
        else:
            body.append(line)
    assert body is None, f"README: the ```sh block at line {start} is not closed"
    return blocks


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT does not count
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def session_env(scratch: Path, shims: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MOAT_", "AZURE_")) and k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    real_home = Path(os.environ.get("HOME", "/root"))
    env.update({
        "HOME": str(scratch / "home"),
        "CARGO_HOME": os.environ.get("CARGO_HOME", str(real_home / ".cargo")),
        "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", str(real_home / ".rustup")),
        "CARGO_INSTALL_ROOT": str(scratch / "cargo-root"),
        # the build `bash scripts/test` made, so `cargo install` reuses it (CI points it outside the clone)
        "CARGO_TARGET_DIR": os.environ.get("CARGO_TARGET_DIR", str(REPO / "target")),
        "PATH": f"{scratch / 'cargo-root' / 'bin'}:{shims}:{os.environ['PATH']}",
        "NO_PROXY": "127.0.0.1,localhost,.localhost",
        "no_proxy": "127.0.0.1,localhost,.localhost",
    })
    (scratch / "home").mkdir()
    return env


def audit(moat: Path, data_dir: Path, env: dict) -> list[dict]:
    out = subprocess.run([str(moat), "audit", "--data-dir", str(data_dir), "--log", "data", "-o", "json"],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_readme_blocks_run_as_pasted(tmp_path):
    for tool in ("skopeo", "umoci", "jq", "curl", "unshare", "mount"):
        require_tool(tool)
    assert os.geteuid() == 0, "this test needs root: it runs the README in a private mount namespace"
    assert port_free("127.0.0.1", 5000), "the README's server listens on 127.0.0.1:5000, which is taken"
    blocks = sh_blocks(README.read_text())
    assert [b for _, b in blocks[:2]] == SET_UP, "the README must open with the two set-up commands"
    session = blocks[2:]
    assert len(session) >= 5, "the README's session blocks are missing"

    shims = tmp_path / "shims"
    shims.mkdir()
    if shutil.which("sudo") is None:
        (shims / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
        (shims / "sudo").chmod(0o755)
    hosts = tmp_path / "hosts"
    shutil.copy("/etc/hosts", hosts)
    machine_hosts = Path("/etc/hosts").read_text()

    script = tmp_path / "readme.sh"
    lines = ["set -Eeuo pipefail", "trap 'echo \"README command failed (exit $?): $BASH_COMMAND\" >&2' ERR"]
    for line_no, body in session:
        lines += [f"echo '===== README.md line {line_no}' >&2", body]
    script.write_text("\n".join(lines) + "\n")
    env = session_env(tmp_path, shims)
    log = tmp_path / "session.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "bash", "-c",
             f'mount --bind "{hosts}" /etc/hosts && exec bash "{script}"'],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=1500)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the README's `moat serve &` and anything else it left
            except ProcessLookupError:
                pass
    text = log.read_text(errors="replace")
    assert rc == 0, f"a README command failed:\n{text[-6000:]}"
    assert Path("/etc/hosts").read_text() == machine_hosts, "the session changed the machine's /etc/hosts"

    # What the session must have left behind.
    moat = tmp_path / "cargo-root" / "bin" / "moat"
    assert moat.exists(), "`cargo install --path crates/cli` did not install moat"
    demo = tmp_path / "home" / "moat-demo"
    events = audit(moat, demo / "moat-data", env)

    def find(**want):
        return [e for e in events if all(str(e.get(k)) == v for k, v in want.items())]

    assert find(Registry="default", Repository="team/app", OperationName="Push", ResultType="Success"), events
    pushed = find(Registry="myreg", Repository="app", OperationName="Push", ResultType="Success")
    assert pushed and all(e["Endpoint"].startswith("privateEndpoint/") for e in pushed), pushed
    assert [e for e in find(Registry="myreg", ResultType="Denied") if e["Endpoint"] == "public"], \
        "the public request to the protected registry was not refused and audited"
    assert find(Registry="myreg", OperationName="Export", ResultType="Denied"), "the import out of myreg was not refused"
    assert find(Registry="openreg", OperationName="Import", ResultType="Success"), "the import from default did not run"
    assert (demo / "back" / "index.json").exists(), "the pulled image is missing"
    assert "refused: myreg has exports disabled" in text


def test_example_config_loads_as_shipped(tmp_path):
    """`examples/moat.toml` as shipped: its extra listener answers, its private endpoint serves `default` as private
    traffic, and its trusted proxy's forwarding header is believed (nobody else's)."""
    assert port_free("127.0.0.1", 5000), "the example's listeners are at port 5000, which is taken"
    server = MoatServer(tmp_path, port=5000, extra_args=["--config", str(REPO / "examples" / "moat.toml")])
    try:
        server.start()
        server.client().push_image("demo", build_image(1), tag="v1")
        for address in ("127.0.0.2", "127.0.0.6"):
            r = client_via(server, address).get_manifest("demo", "v1")
            assert r.status_code == 200, (address, r.status_code, r.text)
        proxied = client_via(server, "127.0.0.1", source="127.0.0.10")
        stranger = client_via(server, "127.0.0.1", source="127.0.0.11")
        for c in (proxied, stranger):
            r = c.request("GET", "/v2/demo/manifests/v1", repo="demo", headers={"X-Forwarded-For": "203.0.113.9"})
            assert r.status_code == 200, r.text
        pulls = server.audit(operation="Pull", repository="demo")
        assert any(e["Endpoint"] == "privateEndpoint/pe-default" for e in pulls), pulls
        callers = {e["CallerIpAddress"] for e in pulls}
        assert "203.0.113.9" in callers and "127.0.0.11" in callers, callers
    finally:
        server.stop()
