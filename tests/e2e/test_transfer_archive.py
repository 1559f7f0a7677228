"""The transfer archive an export pipeline run writes, opened by skopeo (containers/image): a tar of an OCI image
layout with Moat's signed contents list at its head. Written here with the hidden maintenance command
`moat transfer-archive export`, which runs the same code as a pipeline run."""
import base64
import hashlib
import json
import os
import tarfile

import pytest

from conftest import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, build_image, read_oci_layout_manifest, require_tool, run, \
    sha256


def skopeo(*args, timeout=180):
    return run([require_tool("skopeo"), *args], timeout=timeout)


def push_multi_arch_with_referrer(moat, repo="transfer/app", tag="v1"):
    """A two-platform index tagged `tag`, and a signature-like artifact whose subject is the index (its payload
    large and random, so that it lives in the blob store rather than the database)."""
    c = moat.client()
    amd = build_image(2, seed="amd64-" + os.urandom(4).hex())
    arm = build_image(1, seed="arm64-" + os.urandom(4).hex(), extra_config={"architecture": "arm64"})
    for img in (amd, arm):
        c.push_image(repo, img)
    index = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": i.manifest_digest, "size": len(i.manifest_bytes),
                       "platform": {"architecture": a, "os": "linux"}} for i, a in ((amd, "amd64"), (arm, "arm64"))],
    }, indent=1).encode()
    r = c.put_manifest(repo, tag, index, OCI_INDEX)
    assert r.status_code == 201, r.text
    payload = os.urandom(200_000)
    for blob in (b"{}", payload):
        c.push_blob(repo, blob)
    sig = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sha256(payload), "size": len(payload)}],
        "subject": {"mediaType": OCI_INDEX, "digest": sha256(index), "size": len(index)},
    }).encode()
    r = c.put_manifest(repo, sha256(sig), sig, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    return amd, arm, index, sig, payload


def export(moat, out, *artifacts, registry="default", check=True):
    args = ["transfer-archive", "export", "--registry", registry, "--out", str(out)]
    for a in artifacts:
        args += ["--artifact", a]
    return moat.moat(*args, check=check)


def test_archive_opens_with_skopeo_and_keeps_every_digest(moat, tmp_path):
    amd, arm, index, sig, payload = push_multi_arch_with_referrer(moat)
    tar_path = tmp_path / "export.tar"
    summary = json.loads(export(moat, tar_path, "transfer/app:v1").stdout)
    data = tar_path.read_bytes()
    assert summary["catalogDigest"] == sha256(data), "catalogDigest is the archive's sha256"
    assert summary["size"] == len(data) and summary["artifacts"] == ["transfer/app:v1"]
    assert not (tmp_path / "export.partial").exists()

    # The head: the layout, the index, the contents list and its signature, before any blob.
    with tarfile.open(tar_path) as tf:
        members = tf.getmembers()
        names = [m.name for m in members]
        assert names[:4] == ["oci-layout", "index.json", "moat-transfer.json", "moat-transfer.json.sig"]
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
        contents_bytes = tf.extractfile("moat-transfer.json").read()
        signature = base64.b64decode(tf.extractfile("moat-transfer.json.sig").read())
        layout_index = json.loads(tf.extractfile("index.json").read())
        stored = {n.rsplit("/", 1)[1]: tf.extractfile(n).read() for n in names if n.startswith("blobs/sha256/")
                  and tf.getmember(n).isfile()}
    (entry,) = layout_index["manifests"]
    assert entry["digest"] == sha256(index) and entry["mediaType"] == OCI_INDEX
    assert entry["annotations"] == {"org.opencontainers.image.ref.name": "v1", "io.moat.repository": "transfer/app",
                                    "io.moat.tag": "v1"}
    # Everything byte for byte: the index, both platform manifests, the referrer and its payload, every layer.
    for body in [index, sig, payload, amd.manifest_bytes, arm.manifest_bytes, *amd.blobs.values(),
                 *arm.blobs.values()]:
        assert stored[sha256(body).split(":")[1]] == body
    assert all(sha256(b) == "sha256:" + h for h, b in stored.items())

    # The contents list names every entry and is signed with the key `moat transfer-key show` prints.
    contents = json.loads(contents_bytes)
    assert [e["digest"] for e in contents["entries"]] == [
        "sha256:" + n.rsplit("/", 1)[1] for n in names if n.startswith("blobs/sha256/") and n != "blobs/sha256/"]
    (artifact,) = contents["artifacts"]
    assert artifact["manifests"][-1] == sha256(index) and sha256(sig) in artifact["manifests"]
    key = json.loads(moat.moat("transfer-key", "show", "--output", "json").stdout)
    assert contents["publicKey"] == key["publicKey"] and contents["keyId"] == key["kid"]
    assert moat.moat("transfer-key", "show").stdout.splitlines() == [key["publicKey"], f"kid {key['kid']}"]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key["publicKey"].removeprefix("ed25519:")))
    public.verify(signature, contents_bytes)  # raises if it does not verify
    with pytest.raises(Exception):
        public.verify(signature, contents_bytes.replace(b"transfer/app", b"transfer/apq"))

    # skopeo reads it: the whole index with --all, identical digests; inspect picks a platform.
    back = tmp_path / "back"
    skopeo("copy", "--all", f"oci-archive:{tar_path}:v1", f"oci:{back}:v1")
    dg, body = read_oci_layout_manifest(back, "v1")
    assert dg == sha256(index) and body == index
    for img in (amd, arm):
        assert (back / "blobs/sha256" / img.manifest_digest.split(":")[1]).read_bytes() == img.manifest_bytes
        for ldg, blob in img.layers:
            assert (back / "blobs/sha256" / ldg.split(":")[1]).read_bytes() == blob
    info = json.loads(skopeo("inspect", "--override-arch", "amd64", f"oci-archive:{tar_path}:v1").stdout)
    assert info["Layers"] == amd.layer_digests and info["Architecture"] == "amd64"
    raw = skopeo("inspect", "--raw", f"oci-archive:{tar_path}:v1").stdout.encode().rstrip(b"\n")
    assert raw == index
    # The export read the registry only: the server still serves the image as before.
    assert moat.client().get_manifest("transfer/app", "v1").content == index


def test_two_repositories_with_one_tag_get_distinct_names(moat, tmp_path):
    c = moat.client()
    a, b = build_image(1, seed="a-" + os.urandom(4).hex()), build_image(1, seed="b-" + os.urandom(4).hex())
    c.push_image("two/a", a, "v1")
    c.push_image("two/b", b, "v1")
    c.push_image("two/b", b, "only")
    tar_path = tmp_path / "two.tar"
    export(moat, tar_path, "two/a:v1", "two/b:v1", f"two/b@{b.manifest_digest}", "two/b:only")
    with tarfile.open(tar_path) as tf:
        entries = json.loads(tf.extractfile("index.json").read())["manifests"]
    names = [e["annotations"].get("org.opencontainers.image.ref.name") for e in entries]
    assert names == ["two/a:v1", "two/b:v1", None, "only"]
    for ref, img in (("two/a:v1", a), ("two/b:v1", b), ("only", b)):
        raw = skopeo("inspect", "--raw", f"oci-archive:{tar_path}:{ref}").stdout.encode().rstrip(b"\n")
        assert raw == img.manifest_bytes, ref


def test_a_missing_artifact_is_named_and_nothing_is_written(moat, tmp_path):
    c = moat.client()
    c.push_image("there/app", build_image(1), "v1")
    out = tmp_path / "none.tar"
    p = export(moat, out, "there/app:v1", "there/app:v2", check=False)
    assert p.returncode != 0 and "'there/app:v2' does not exist" in p.stderr, p.stderr
    p = export(moat, out, "nowhere", check=False)
    assert p.returncode != 0 and "'nowhere:latest' does not exist" in p.stderr, p.stderr
    p = export(moat, out, *[f"there/app:t{i}" for i in range(51)], check=False)
    assert p.returncode != 0 and "at most 50 artifacts" in p.stderr, p.stderr
    assert not out.exists() and not (tmp_path / "none.partial").exists()


def test_transfer_key_rotates_like_the_other_keys(moat):
    before = json.loads(moat.moat("transfer-key", "show", "--output", "json").stdout)
    assert before["publicKey"].startswith("ed25519:") and len(base64.b64decode(before["publicKey"][8:])) == 32
    assert json.loads(moat.moat("transfer-key", "show", "--output", "json").stdout) == before, "stable"
    rotated = json.loads(moat.moat("keys", "rotate", "--purpose", "transfer").stdout)
    after = json.loads(moat.moat("transfer-key", "show", "--output", "json").stdout)
    assert after["kid"] == rotated["kid"] != before["kid"] and after["publicKey"] != before["publicKey"]
    key_file = moat.data_dir / "keys" / "transfer" / f"{after['kid']}.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert hashlib.sha256(key_file.read_bytes()).hexdigest()  # a key file, not the public key
