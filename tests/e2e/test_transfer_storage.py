"""Issue 11 item 2, storage side: the secret store transfer pipelines read their SAS tokens from, addressed like Key
Vault secrets (`moat secret set|show|list|delete`), the storage account keys for ManagedIdentity access
(`moat storage-account add|list|delete`), and the Azurite fixture the transfer tests share.

Values are never printed unless `--reveal` asks, never written to the activity log, and sealed at rest (the
plaintext is in no byte of the database files); a rotation of the secrets key re-seals them. The Azure Blob client
itself is tested against Azurite by crates/transfer/tests/azurite.rs and end to end by test_transfer_e2e.py.
"""
from __future__ import annotations

import json

import requests

from conftest import MoatServer, parse_json_lines

SAS = "?sv=2021-08-06&ss=b&srt=sco&sp=racwdl&se=2099-01-01T00:00:00Z&spr=https&sig=PLAINTEXT-SAS-7f3a9c"
URI = "https://KV-Transfer.vault.azure.net/secrets/Export-SAS"


def db_bytes(s: MoatServer) -> bytes:
    return b"".join(p.read_bytes() for p in s.data_dir.glob("moat.db*"))


def activity(s: MoatServer) -> list[dict]:
    return s.audit(log="activity")


def test_secret_lifecycle_values_hidden_unless_revealed(moat, tmp_path):
    p = moat.moat("secret", "set", "--id", URI, "--value", SAS)
    first = json.loads(p.stdout)
    assert SAS not in p.stdout + p.stderr and "value" not in first
    assert first["name"] == "export-sas" and first["vault"] == "kv-transfer"
    assert first["id"] == f"https://kv-transfer.vault.azure.net/secrets/export-sas/{first['version']}"

    shown = json.loads(moat.moat("secret", "show", "--id", URI).stdout)
    assert "value" not in shown and shown["version"] == first["version"]
    revealed = json.loads(moat.moat("secret", "show", "--vault-name", "kv-transfer", "--name", "export-sas",
                                    "--reveal").stdout)
    assert revealed["value"] == SAS

    # A new version from a file (trailing newline dropped) becomes the latest; the old one stays addressable.
    f = tmp_path / "sas.txt"
    f.write_text("?sv=2021-08-06&sig=SECOND-VERSION\n")
    second = json.loads(moat.moat("secret", "set", "--vault-name", "kv-transfer", "--name", "export-sas",
                                  "--file", str(f)).stdout)
    assert second["version"] != first["version"]
    assert json.loads(moat.moat("secret", "show", "--id", URI, "--reveal").stdout)["value"] == \
        "?sv=2021-08-06&sig=SECOND-VERSION"
    assert json.loads(moat.moat("secret", "show", "--id", first["id"], "--reveal").stdout)["value"] == SAS

    listed = parse_json_lines(moat.moat("secret", "list", "-o", "json").stdout)
    assert [(e["name"], e["version"]) for e in listed] == [("export-sas", second["version"])]
    table = moat.moat("secret", "list").stdout
    assert "https://kv-transfer.vault.azure.net/secrets/export-sas" in table and "SECOND" not in table

    # Every change is in the activity log, named, without the value.
    events = [e for e in activity(moat) if "KeyVault" in e.get("operationName", "")]
    assert [e["operationName"] for e in events][-2:] == ["Microsoft.KeyVault/vaults/secrets/write"] * 2
    assert all("/vaults/kv-transfer/secrets/export-sas" in e["resourceId"] for e in events)
    whole = json.dumps(activity(moat))
    assert "PLAINTEXT-SAS" not in whole and "SECOND-VERSION" not in whole

    moat.moat("secret", "delete", "--id", URI)
    p = moat.moat("secret", "show", "--id", URI, check=False)
    assert p.returncode != 0 and "no secret https://kv-transfer.vault.azure.net/secrets/export-sas" in p.stderr
    assert activity(moat)[-1]["operationName"] == "Microsoft.KeyVault/vaults/secrets/delete"
    p = moat.moat("secret", "delete", "--id", URI, check=False)
    assert p.returncode != 0 and "no secret" in p.stderr


def test_bad_secret_input_says_what_to_do(moat):
    for args, says in [
        (["--id", "http://kv.vault.azure.net/secrets/a", "--value", "x"], "https://"),
        (["--id", "https://kv1.vault.azure.net/keys/a", "--value", "x"], "/secrets/<name>"),
        (["--id", "https://kv1.vault.azure.net/secrets/a_b", "--value", "x"], "letters, digits and hyphens"),
        (["--id", "https://kv1.vault.azure.net/secrets/a"], "--value, --file or --value-stdin"),
        (["--id", "https://kv1.vault.azure.net/secrets/a", "--value", ""], "empty"),
        (["--id", "https://kv1.vault.azure.net/secrets/a/0123456789abcdef0123456789abcdef", "--value", "x"],
         "without a version"),
    ]:
        p = moat.moat("secret", "set", *args, check=False)
        assert p.returncode != 0 and says in p.stderr, (args, p.stderr)


def test_secrets_and_account_keys_sealed_at_rest_and_resealed_on_rotation(moat):
    moat.moat("secret", "set", "--id", URI, "--value", SAS)
    key = "c2VjcmV0LWFjY291bnQta2V5LWZvci10ZXN0cy0wMTIzNDU2Nzg5"
    moat.moat("storage-account", "add", "--name", "acct1", "--key", key)
    raw = db_bytes(moat)
    assert b"PLAINTEXT-SAS" not in raw and key.encode() not in raw and b"moat-sealed:v1:" in raw

    rotated = json.loads(moat.moat("keys", "rotate", "--purpose", "secrets").stdout)
    assert rotated["resealed"] >= 2, rotated
    assert json.loads(moat.moat("secret", "show", "--id", URI, "--reveal").stdout)["value"] == SAS
    raw = db_bytes(moat)
    assert b"PLAINTEXT-SAS" not in raw and key.encode() not in raw


def test_storage_account_keys_never_printed(moat, tmp_path, azurite):
    keyfile = tmp_path / "key"
    keyfile.write_text(azurite.key + "\n")
    p = moat.moat("storage-account", "add", "--name", azurite.account, "--blob-endpoint", azurite.endpoint + "/",
                  "--key-file", str(keyfile))
    row = json.loads(p.stdout)
    assert row == {**row, "name": "devstoreaccount1", "blobEndpoint": azurite.endpoint}
    assert azurite.key not in p.stdout + p.stderr
    p = moat.moat("storage-account", "add", "--name", "acct2", "--key", "c2VjcmV0")
    assert json.loads(p.stdout)["blobEndpoint"] == "https://acct2.blob.core.windows.net"
    listed = parse_json_lines(moat.moat("storage-account", "list", "-o", "json").stdout)
    assert [a["name"] for a in listed] == ["acct2", "devstoreaccount1"]
    assert azurite.key not in moat.moat("storage-account", "list").stdout
    assert "c2VjcmV0" not in json.dumps(activity(moat))

    for args, says in [
        (["--name", "acct3", "--key", "not base64!"], "not base64"),
        (["--name", "acct3", "--blob-endpoint", "https://other.blob.core.windows.net", "--key", "c2VjcmV0"],
         "'other''s, not 'acct3''s"),
        (["--name", "acct3", "--blob-endpoint", "http://acct3.blob.core.windows.net", "--key", "c2VjcmV0"],
         "plain http"),
        (["--name", "Bad_Name", "--key", "c2VjcmV0"], "not a storage account name"),
        (["--name", "acct3"], "--key or --key-file"),
    ]:
        p = moat.moat("storage-account", "add", *args, check=False)
        assert p.returncode != 0 and says in p.stderr, (args, p.stderr)

    moat.moat("storage-account", "delete", "--name", "acct2")
    assert [a["name"] for a in parse_json_lines(moat.moat("storage-account", "list", "-o", "json").stdout)] == \
        ["devstoreaccount1"]
    p = moat.moat("storage-account", "delete", "--name", "acct2", check=False)
    assert p.returncode != 0 and "no storage account 'acct2'" in p.stderr
    ops = [e["operationName"] for e in activity(moat) if "Storage" in e.get("operationName", "")]
    assert ops == ["Microsoft.Storage/storageAccounts/write"] * 2 + ["Microsoft.Storage/storageAccounts/delete"]


def test_azurite_fixture_gives_a_container_and_a_working_sas(azurite):
    uri = azurite.create_container("fixture-check")
    assert uri == f"http://127.0.0.1:{azurite.port}/devstoreaccount1/fixture-check"
    azurite.put_blob("fixture-check", "a.tar", b"archive", {"category": "acr-transfer-blob"})
    [b] = azurite.list_blobs("fixture-check")
    assert (b["name"], b["size"], b["metadata"]) == ("a.tar", 7, {"category": "acr-transfer-blob"})
    assert b["content_md5"]
    sas = azurite.account_sas("rl")
    r = requests.get(f"{uri}/a.tar{sas}", timeout=30)
    assert r.status_code == 200 and r.content == b"archive"
    r = requests.get(f"{uri}/a.tar{azurite.account_sas('rl', key='AAAA' * 16)}", timeout=30)
    assert r.status_code == 403
