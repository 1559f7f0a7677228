"""podman pull/push against Moat: HTTPS with --cert-dir, and plain HTTP with --tls-verify=false."""
import json
import shutil
import tempfile

import pytest

from conftest import build_image, require_tool, run, write_oci_layout


@pytest.fixture
def podman(tmp_path):
    """podman with private storage (vfs) under the test's temp dir, so the host's image store is untouched."""
    exe = require_tool("podman")
    root = tmp_path / "podman"
    runroot = tempfile.mkdtemp(prefix="mp-", dir="/tmp")  # podman wants a runroot under 50 characters
    base = [exe, "--root", str(root / "root"), "--runroot", runroot, "--storage-driver", "vfs",
            "--events-backend", "file", "--tmpdir", str(root / "tmp")]
    (root / "tmp").mkdir(parents=True)

    def call(*args, check=True, timeout=180):
        return run(base + list(args), check=check, timeout=timeout)

    yield call
    call("rmi", "-a", "-f", check=False, timeout=60)
    shutil.rmtree(runroot, ignore_errors=True)


def _seed(server, repo, tag, tmp_path, skopeo_args):
    img = build_image(n_layers=2, layer_size=16 * 1024)
    src = write_oci_layout(tmp_path / f"seed-{repo.replace('/', '-')}", img)
    run([require_tool("skopeo"), "copy", *skopeo_args, f"oci:{src}:latest",
         f"docker://{server.login_server}/{repo}:{tag}"])
    return img


def test_podman_with_cert_dir(moat, certs_dir, podman, tmp_path):
    creds = f"admin:{moat.admin_password}"
    img = _seed(moat, "podman/src", "1", tmp_path, ["--dest-cert-dir", str(certs_dir), "--dest-creds", creds])
    src = f"{moat.login_server}/podman/src:1"
    dst = f"{moat.login_server}/podman/dst:1"

    podman("pull", "--cert-dir", str(certs_dir), "--creds", creds, src)
    out = json.loads(podman("image", "inspect", src).stdout)
    assert out[0]["Digest"] == img.manifest_digest
    podman("tag", src, dst)
    podman("push", "--cert-dir", str(certs_dir), "--creds", creds, dst)

    c = moat.client()
    g = c.get_manifest("podman/dst", "1")
    assert g.status_code == 200, g.text
    m = json.loads(g.content)
    assert [l["digest"] for l in m["layers"]] == img.layer_digests
    assert m["config"]["digest"] == img.config_digest
    pushed_digest = g.headers["Docker-Content-Digest"]

    # pull it back into a clean store
    podman("rmi", "-a", "-f")
    podman("pull", "--cert-dir", str(certs_dir), "--creds", creds, dst)
    out = json.loads(podman("image", "inspect", dst).stdout)
    assert out[0]["Digest"] == pushed_digest

    # wrong credentials are refused
    p = podman("pull", "--cert-dir", str(certs_dir), "--creds", "admin:nope", src, check=False)
    assert p.returncode != 0


def test_podman_tls_verify_false(moat_http, podman, tmp_path):
    s = moat_http
    creds = f"admin:{s.admin_password}"
    img = _seed(s, "podman/plain", "1", tmp_path, ["--dest-tls-verify=false", "--dest-creds", creds])
    ref = f"{s.login_server}/podman/plain:1"
    podman("pull", "--tls-verify=false", "--creds", creds, ref)
    podman("tag", ref, f"{s.login_server}/podman/plain:2")
    podman("push", "--tls-verify=false", "--creds", creds, f"{s.login_server}/podman/plain:2")
    c = s.client()
    assert sorted(c.tags("podman/plain")) == ["1", "2"]
    m = json.loads(c.get_manifest("podman/plain", "2").content)
    assert [l["digest"] for l in m["layers"]] == img.layer_digests


def test_podman_tls_verify_false_over_https(moat, podman, tmp_path, certs_dir):
    creds = f"admin:{moat.admin_password}"
    _seed(moat, "podman/noverify", "1", tmp_path, ["--dest-cert-dir", str(certs_dir), "--dest-creds", creds])
    ref = f"{moat.login_server}/podman/noverify:1"
    # without trusting the CA, podman must refuse...
    p = podman("pull", "--creds", creds, ref, check=False)
    assert p.returncode != 0
    # ...and with --tls-verify=false it goes through
    podman("pull", "--tls-verify=false", "--creds", creds, ref)
