"""The Docker engine (dockerd on a private unix socket) against Moat over HTTPS with its CA in certs.d."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import build_image, require_tool, run, write_oci_layout


@pytest.fixture
def dockerd(moat):
    exe = require_tool("dockerd")
    cli = require_tool("docker")
    # short paths: containerd's sockets live under exec-root and unix socket paths are limited to 108 bytes
    top = Path(tempfile.mkdtemp(prefix="moatd-", dir="/tmp"))
    sock = top / "d.sock"
    certs = Path("/etc/docker/certs.d") / moat.login_server
    certs_created = not certs.exists()
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copy(moat.ca_path, certs / "ca.crt")
    log = open(top / "dockerd.log", "wb")
    proc = subprocess.Popen([exe, "--host", f"unix://{sock}", "--data-root", str(top / "root"),
                             "--exec-root", str(top / "x"), "--pidfile", str(top / "d.pid"),
                             "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver", "vfs"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {"DOCKER_HOST": f"unix://{sock}", "DOCKER_CONFIG": str(top / "cfg")}

    def docker(*args, check=True, timeout=180, input=None):
        return run([cli, *args], env=env, check=check, timeout=timeout, input=input)

    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "dockerd exited:\n" + (top / "dockerd.log").read_text(errors="replace")[-3000:]
            if sock.exists() and docker("version", check=False, timeout=20).returncode == 0:
                break
            assert time.monotonic() < deadline, "dockerd not ready:\n" + \
                (top / "dockerd.log").read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        yield docker
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()
        # containerd is dockerd's child and exits with it; make sure nothing of ours survives
        try:
            pid = int((top / "x" / "containerd" / "containerd.pid").read_text())
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        if certs_created:
            shutil.rmtree(certs, ignore_errors=True)
        else:
            try:
                (certs / "ca.crt").unlink()
            except OSError:
                pass
        subprocess.run(["umount", "-R", str(top / "root")], capture_output=True, timeout=30)
        shutil.rmtree(top, ignore_errors=True)


def test_docker_login_pull_tag_push_pull(moat, certs_dir, dockerd, tmp_path):
    img = build_image(n_layers=2, layer_size=16 * 1024)
    src_layout = write_oci_layout(tmp_path / "src", img)
    creds = f"admin:{moat.admin_password}"
    run([require_tool("skopeo"), "copy", "--dest-cert-dir", str(certs_dir), "--dest-creds", creds,
         f"oci:{src_layout}:latest", f"docker://{moat.login_server}/docker/src:1"])

    docker = dockerd
    # a wrong password is refused
    p = docker("login", moat.login_server, "-u", "admin", "--password-stdin", input="wrong\n", check=False)
    assert p.returncode != 0, p.stdout + p.stderr
    p = docker("login", moat.login_server, "-u", "admin", "--password-stdin", input=moat.admin_password + "\n")
    assert "Login Succeeded" in p.stdout + p.stderr

    src = f"{moat.login_server}/docker/src:1"
    dst = f"{moat.login_server}/docker/dst:1"
    p = docker("pull", src)
    assert img.manifest_digest in p.stdout, p.stdout
    inspect = json.loads(docker("image", "inspect", src).stdout)[0]
    assert inspect["RootFS"]["Layers"] == json.loads(img.config_bytes)["rootfs"]["diff_ids"]

    docker("tag", src, dst)
    p = docker("push", dst)
    out = p.stdout + p.stderr

    c = moat.client()
    g = c.get_manifest("docker/dst", "1")
    assert g.status_code == 200, g.text
    m = json.loads(g.content)
    assert [l["digest"] for l in m["layers"]] == img.layer_digests, "docker push changed the layers"
    assert m["config"]["digest"] == img.config_digest
    pushed = g.headers["Docker-Content-Digest"]
    assert pushed in out

    # docker mounts the layers from docker/src (it knows where it pulled them from)
    mounts = moat.audit(operation="Mount", repository="docker/dst")
    mounted = {e.get("Digest") for e in mounts if e.get("ResultType") == "Success"}
    assert set(img.layer_digests) <= mounted, f"docker push output:\n{out}\nMount events: {mounts}"

    # pull back into an empty engine
    docker("rmi", "-f", src, dst)
    p = docker("pull", dst)
    assert pushed in p.stdout
    inspect = json.loads(docker("image", "inspect", dst).stdout)[0]
    assert inspect["RootFS"]["Layers"] == json.loads(img.config_bytes)["rootfs"]["diff_ids"]
    assert f"{moat.login_server}/docker/dst@{pushed}" in inspect["RepoDigests"]

    docker("logout", moat.login_server)
    docker("rmi", "-f", dst)
    p = docker("pull", dst, check=False)
    assert p.returncode != 0, "pull without credentials must fail (anonymous pull is off)"
