"""ORAS artifacts and the OCI 1.1 referrers API (oras-py, raw requests, and the oras Go CLI)."""
import json
import os
import shutil

import pytest

from conftest import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, assert_oci_error, run, sha256

EMPTY = b"{}"
SBOM = "application/vnd.example.sbom.v1"
SIG = "application/vnd.example.signature.v1"


def oras_cli() -> str:
    exe = os.environ.get("MOAT_ORAS_CLI") or shutil.which("oras")
    if not exe:
        repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        cand = os.path.join(repo_root, ".tools", "oras", "usr", "bin", "oras")
        exe = cand if os.path.exists(cand) else None
    assert exe and os.access(exe, os.X_OK), "the oras CLI is missing (scripts/test unpacks it into .tools/)"
    return exe


def oras_py_client(moat, repo):
    import oras.client
    c = oras.client.OrasClient(hostname=moat.login_server, insecure=not moat.https,
                               tls_verify=str(moat.ca_path) if moat.https else False)
    c.auth.set_basic_auth("admin", moat.admin_password)
    # oras-py keeps one token per client and only refreshes it on 403, while registries (Distribution, ACR,
    # Moat) answer 401 insufficient_scope when a token lacks an action. Hand it a token for the whole job.
    c.auth.set_token_auth(moat.token(f"repository:{repo}:pull,push"))
    return c


def _referrer_manifest(subject_digest, subject_size, artifact_type=None, config_media_type=OCI_EMPTY,
                       config=EMPTY, layer=b"payload", annotations=None):
    m = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config_media_type, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/octet-stream", "digest": sha256(layer), "size": len(layer)}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_size},
        "annotations": annotations or {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    if artifact_type:
        m["artifactType"] = artifact_type
    return json.dumps(m).encode()


def test_oras_py_push_pull_and_referrers(moat, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "artifact.bin").write_bytes(os.urandom(100_000))
    (tmp_path / "README.txt").write_text("hello from moat e2e\n")
    oc = oras_py_client(moat, "oras/art")
    target = f"{moat.login_server}/oras/art:1"
    r = oc.push(target=target, files=["artifact.bin:application/octet-stream", "README.txt"],
                manifest_annotations={"k": "v"})
    assert r.status_code == 201, r.text
    out = tmp_path / "out"
    files = oc.pull(target=target, outdir=str(out))
    assert sorted(os.path.basename(f) for f in files) == ["README.txt", "artifact.bin"]
    assert (out / "artifact.bin").read_bytes() == (tmp_path / "artifact.bin").read_bytes()
    assert "1" in oc.get_tags(f"{moat.login_server}/oras/art")

    c = moat.client()
    repo = "oras/art"
    h = c.get_manifest(repo, "1", method="HEAD")
    assert h.status_code == 200
    subject = h.headers["Docker-Content-Digest"]
    subject_size = int(h.headers["Content-Length"])

    # no referrers yet: 200 with an empty index
    r = c.request("GET", f"/v2/{repo}/referrers/{subject}", repo=repo)
    assert r.status_code == 200, f"{r.status_code} {r.text}"
    assert r.headers["Content-Type"].split(";")[0] == OCI_INDEX
    assert r.json().get("schemaVersion") == 2 and r.json().get("manifests") == [], r.text

    # an SBOM with artifactType, and a signature whose type comes from its config media type
    c.push_blob(repo, EMPTY)
    c.push_blob(repo, b"payload")
    sbom = _referrer_manifest(subject, subject_size, artifact_type=SBOM,
                              annotations={"org.example.kind": "sbom"})
    r = c.put_manifest(repo, sha256(sbom), sbom)
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    assert r.headers.get("OCI-Subject") == subject, f"PUT with subject must answer OCI-Subject: {r.headers}"
    sig_config = b'{"sig":true}'
    c.push_blob(repo, sig_config)
    sig = _referrer_manifest(subject, subject_size, config_media_type=SIG, config=sig_config)
    r = c.put_manifest(repo, sha256(sig), sig)
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    assert r.headers.get("OCI-Subject") == subject

    r = c.request("GET", f"/v2/{repo}/referrers/{subject}", repo=repo)
    assert r.status_code == 200
    assert r.headers["Content-Type"].split(";")[0] == OCI_INDEX
    idx = r.json()
    assert idx["schemaVersion"] == 2 and idx.get("mediaType") == OCI_INDEX
    by_digest = {d["digest"]: d for d in idx["manifests"]}
    assert set(by_digest) == {sha256(sbom), sha256(sig)}, idx
    d = by_digest[sha256(sbom)]
    assert d["mediaType"] == OCI_MANIFEST and d["size"] == len(sbom) and d["artifactType"] == SBOM
    assert d.get("annotations") == {"org.example.kind": "sbom"}
    assert by_digest[sha256(sig)]["artifactType"] == SIG, "artifactType falls back to the config media type"

    # filtering
    r = c.request("GET", f"/v2/{repo}/referrers/{subject}?artifactType={SBOM}", repo=repo)
    assert r.status_code == 200
    assert r.headers.get("OCI-Filters-Applied") == "artifactType", r.headers
    assert [d["digest"] for d in r.json()["manifests"]] == [sha256(sbom)]
    r = c.request("GET", f"/v2/{repo}/referrers/{subject}?artifactType=application/vnd.none", repo=repo)
    assert r.status_code == 200
    assert r.headers.get("OCI-Filters-Applied") == "artifactType"
    assert r.json()["manifests"] == []

    # a subject that is not there (yet) still answers 200 with an empty list, never 404
    r = c.request("GET", f"/v2/{repo}/referrers/{sha256(b'nothing')}", repo=repo)
    assert r.status_code == 200, r.status_code
    assert r.json()["manifests"] == []
    # a malformed digest is an error
    r = c.request("GET", f"/v2/{repo}/referrers/sha256:zz", repo=repo)
    assert_oci_error(r, {"DIGEST_INVALID", "MANIFEST_INVALID", "UNSUPPORTED"}, 400)

    # deleting a referrer removes it from the list
    r = c.request("DELETE", f"/v2/{repo}/manifests/{sha256(sig)}", repo=repo)
    assert r.status_code == 202, r.text
    r = c.request("GET", f"/v2/{repo}/referrers/{subject}", repo=repo)
    assert [d["digest"] for d in r.json()["manifests"]] == [sha256(sbom)]


def test_referrer_pushed_before_its_subject(moat):
    """A manifest may name a subject that is not pushed yet; it is listed once asked for."""
    c = moat.client()
    repo = "oras/early"
    subject_body = b'{"schemaVersion":2}'  # never pushed; only its digest matters
    subject = sha256(subject_body)
    c.push_blob(repo, EMPTY)
    c.push_blob(repo, b"payload")
    ref = _referrer_manifest(subject, len(subject_body), artifact_type=SBOM)
    r = c.put_manifest(repo, sha256(ref), ref)
    assert r.status_code == 201, f"{r.status_code} {r.text}"
    assert r.headers.get("OCI-Subject") == subject
    r = c.request("GET", f"/v2/{repo}/referrers/{subject}", repo=repo)
    assert r.status_code == 200
    assert [d["digest"] for d in r.json()["manifests"]] == [sha256(ref)]


def test_referrers_are_per_repository(moat):
    c = moat.client()
    subject_body = b'{"schemaVersion":2,"x":1}'
    subject = sha256(subject_body)
    for repo in ("oras/ra", "oras/rb"):
        c.push_blob(repo, EMPTY)
        c.push_blob(repo, b"payload")
    ref = _referrer_manifest(subject, len(subject_body), artifact_type=SBOM)
    assert c.put_manifest("oras/ra", sha256(ref), ref).status_code == 201
    r = c.request("GET", f"/v2/oras/rb/referrers/{subject}", repo="oras/rb")
    assert r.status_code == 200
    assert r.json()["manifests"] == []


def test_oras_cli_attach_and_discover(moat, tmp_path):
    exe = oras_cli()
    (tmp_path / "artifact.bin").write_bytes(b"cli artifact")
    (tmp_path / "sig.txt").write_text("signature\n")
    common = ["--ca-file", str(moat.ca_path), "-u", "admin", "-p", moat.admin_password,
              "--registry-config", str(tmp_path / "auth.json")]
    target = f"{moat.login_server}/oras/cli:1"
    run([exe, "push", *common, target, "--artifact-type", "application/vnd.example.probe",
         "artifact.bin:application/octet-stream"], cwd=str(tmp_path))
    p = run([exe, "attach", *common, "--artifact-type", SIG, target, "sig.txt"], cwd=str(tmp_path))
    c = moat.client()
    h = c.get_manifest("oras/cli", "1", method="HEAD")
    subject = h.headers["Docker-Content-Digest"]
    r = c.request("GET", f"/v2/oras/cli/referrers/{subject}", repo="oras/cli")
    refs = r.json()["manifests"]
    assert len(refs) == 1 and refs[0]["artifactType"] == SIG, refs
    # oras 1.2 must have used the referrers API, not the tag-schema fallback
    assert not any(t.startswith("sha256-") for t in c.tags("oras/cli")), c.tags("oras/cli")

    p = run([exe, "discover", *common, "--format", "json", target], cwd=str(tmp_path))
    out = json.loads(p.stdout)
    found = out.get("manifests") or out.get("referrers") or []
    assert [d["digest"] for d in found] == [refs[0]["digest"]], p.stdout
    p = run([exe, "discover", *common, "--artifact-type", SBOM, "--format", "json", target], cwd=str(tmp_path))
    out = json.loads(p.stdout)
    assert not (out.get("manifests") or out.get("referrers")), p.stdout

    # oras pull round trip
    outdir = tmp_path / "pulled"
    run([exe, "pull", *common, "-o", str(outdir), target], cwd=str(tmp_path))
    assert (outdir / "artifact.bin").read_bytes() == b"cli artifact"
