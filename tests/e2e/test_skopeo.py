"""skopeo (containers/image) against Moat over HTTPS with its CA, and over plain HTTP."""
import json

import pytest

from conftest import (DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, build_image, read_oci_layout_manifest,
                      require_tool, run, sha256, write_oci_layout)


def skopeo(*args, timeout=180):
    return run([require_tool("skopeo"), *args], timeout=timeout)


@pytest.fixture
def tls_args(moat, certs_dir):
    creds = f"admin:{moat.admin_password}"
    return {
        "dest": ["--dest-cert-dir", str(certs_dir), "--dest-creds", creds],
        "src": ["--src-cert-dir", str(certs_dir), "--src-creds", creds],
        "one": ["--cert-dir", str(certs_dir), "--creds", creds],
    }


def test_copy_roundtrip_inspect_list_delete(moat, tls_args, tmp_path):
    img = build_image(n_layers=3, layer_size=64 * 1024)
    src = write_oci_layout(tmp_path / "src", img, "latest")
    ref = f"docker://{moat.login_server}/skopeo/hello"

    skopeo("copy", "--preserve-digests", *tls_args["dest"], f"oci:{src}:latest", f"{ref}:1")

    c = moat.client()
    g = c.get_manifest("skopeo/hello", "1")
    assert g.status_code == 200
    assert g.headers["Docker-Content-Digest"] == img.manifest_digest, "skopeo push changed the manifest"
    assert g.content == img.manifest_bytes

    # and back into an OCI layout: byte-identical manifest
    back = tmp_path / "back"
    skopeo("copy", *tls_args["src"], f"{ref}:1", f"oci:{back}:latest")
    dg, data = read_oci_layout_manifest(back, "latest")
    assert dg == img.manifest_digest
    assert data == img.manifest_bytes
    for ldg, blob in img.layers:
        assert (back / "blobs" / "sha256" / ldg.split(":", 1)[1]).read_bytes() == blob

    # inspect (parsed, --raw, --config)
    p = skopeo("inspect", *tls_args["one"], f"{ref}:1")
    info = json.loads(p.stdout)
    assert info["Digest"] == img.manifest_digest
    assert info["Layers"] == img.layer_digests
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    p = skopeo("inspect", "--raw", *tls_args["one"], f"{ref}:1")
    assert p.stdout.encode().rstrip(b"\n") == img.manifest_bytes
    p = skopeo("inspect", "--config", "--raw", *tls_args["one"], f"{ref}:1")
    assert p.stdout.encode().rstrip(b"\n") == img.config_bytes

    # a second tag in Docker v2s2 format
    skopeo("copy", "--format", "v2s2", *tls_args["dest"], f"oci:{src}:latest", f"{ref}:v2s2")
    g = c.get_manifest("skopeo/hello", "v2s2")
    assert g.status_code == 200 and g.headers["Content-Type"] == DOCKER_MANIFEST
    v2s2_digest = g.headers["Docker-Content-Digest"]

    p = skopeo("list-tags", *tls_args["one"], ref)
    assert sorted(json.loads(p.stdout)["Tags"]) == ["1", "v2s2"]

    # delete removes the manifest (by digest) and so the tag
    skopeo("delete", *tls_args["one"], f"{ref}:v2s2")
    assert c.get_manifest("skopeo/hello", v2s2_digest).status_code == 404
    p = skopeo("list-tags", *tls_args["one"], ref)
    assert json.loads(p.stdout)["Tags"] == ["1"]
    assert c.get_manifest("skopeo/hello", "1").status_code == 200


def test_copy_between_repositories_mounts(moat, tls_args, tmp_path):
    img = build_image(n_layers=3, layer_size=32 * 1024)
    src = write_oci_layout(tmp_path / "src", img)
    a = f"docker://{moat.login_server}/skopeo/mount-a:1"
    b = f"docker://{moat.login_server}/skopeo/mount-b:1"
    skopeo("copy", "--preserve-digests", *tls_args["dest"], f"oci:{src}:latest", a)
    skopeo("copy", "--preserve-digests", *tls_args["src"], *tls_args["dest"], a, b)

    c = moat.client()
    g = c.get_manifest("skopeo/mount-b", "1")
    assert g.status_code == 200 and g.content == img.manifest_bytes
    for dg, data in img.layers:
        assert c.get_blob("skopeo/mount-b", dg).content == data

    mounts = moat.audit(operation="Mount", repository="skopeo/mount-b")
    mounted = {e.get("Digest") for e in mounts if e.get("ResultType") == "Success"}
    assert set(img.layer_digests) <= mounted, \
        f"skopeo's copy between repositories should mount the layers; Mount events: {mounts}"


def test_skopeo_plain_http(moat_http, tmp_path):
    img = build_image(n_layers=2)
    src = write_oci_layout(tmp_path / "src", img)
    creds = f"admin:{moat_http.admin_password}"
    ref = f"docker://{moat_http.login_server}/skopeo/plain:1"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds, f"oci:{src}:latest", ref)
    back = tmp_path / "back"
    skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, ref, f"oci:{back}:latest")
    dg, _ = read_oci_layout_manifest(back, "latest")
    assert dg == img.manifest_digest


def test_skopeo_wrong_credentials_fail(moat, certs_dir, tmp_path):
    img = build_image(n_layers=1)
    src = write_oci_layout(tmp_path / "src", img)
    p = run([require_tool("skopeo"), "copy", "--dest-cert-dir", str(certs_dir), "--dest-creds", "admin:wrong",
             f"oci:{src}:latest", f"docker://{moat.login_server}/skopeo/denied:1"], check=False)
    assert p.returncode != 0
    assert moat.client().get_manifest("skopeo/denied", "1").status_code == 404


def test_skopeo_without_ca_refuses_tls(moat, tmp_path):
    """Moat's certificate is not trusted without its CA (so the cert-dir tests above prove something)."""
    img = build_image(n_layers=1)
    src = write_oci_layout(tmp_path / "src", img)
    empty = tmp_path / "empty-certs"
    empty.mkdir()
    p = run([require_tool("skopeo"), "copy", "--dest-cert-dir", str(empty), "--dest-creds",
             f"admin:{moat.admin_password}", f"oci:{src}:latest", f"docker://{moat.login_server}/skopeo/notrust:1"],
            check=False)
    assert p.returncode != 0
    assert "certificate" in (p.stderr + p.stdout).lower()


def test_copy_multi_platform_index_all(moat, tls_args, tmp_path):
    """An OCI image index with two platform images, copied with --all, round-trips byte for byte."""
    amd, arm = build_image(2, seed="amd64"), build_image(1, seed="arm64", extra_config={"architecture": "arm64"})
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd.manifest_digest, "size": len(amd.manifest_bytes),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm.manifest_digest, "size": len(arm.manifest_bytes),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }
    index_bytes = json.dumps(index, indent=2).encode()
    index_digest = sha256(index_bytes)
    src = tmp_path / "multi"
    blobs = src / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for img in (amd, arm):
        for dg, data in list(img.blobs.items()) + [(img.manifest_digest, img.manifest_bytes)]:
            (blobs / dg.split(":", 1)[1]).write_bytes(data)
    (blobs / index_digest.split(":", 1)[1]).write_bytes(index_bytes)
    (src / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (src / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_INDEX, "digest": index_digest, "size": len(index_bytes),
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))

    ref = f"docker://{moat.login_server}/skopeo/multi:1"
    skopeo("copy", "--all", "--preserve-digests", *tls_args["dest"], f"oci:{src}:latest", ref)
    c = moat.client()
    g = c.get_manifest("skopeo/multi", "1")
    assert g.status_code == 200
    assert g.headers["Content-Type"] == OCI_INDEX
    assert g.content == index_bytes
    for img in (amd, arm):
        assert c.get_manifest("skopeo/multi", img.manifest_digest).content == img.manifest_bytes

    back = tmp_path / "back"
    skopeo("copy", "--all", *tls_args["src"], ref, f"oci:{back}:latest")
    dg, data = read_oci_layout_manifest(back, "latest")
    assert dg == index_digest and data == index_bytes
    # skopeo inspect picks the amd64 image from the index
    p = skopeo("inspect", *tls_args["one"], "--override-arch", "amd64", ref)
    assert json.loads(p.stdout)["Layers"] == amd.layer_digests
