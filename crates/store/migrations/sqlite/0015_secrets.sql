-- Moat's secret store, addressed like Key Vault secrets (vault, name, version): the SAS tokens a transfer
-- pipeline's keyVaultUri names. A set adds a version; the latest is the one with the highest seq. Values are
-- sealed (moat_auth::SecretBox) under the secrets key, bound to vault/name/version: the database alone reveals none.
CREATE TABLE secrets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    vault TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    value TEXT NOT NULL,
    content_type TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (vault, name, version)
);
CREATE INDEX secrets_latest ON secrets(vault, name, seq);

-- Account keys for storageAccessMode ManagedIdentity: Moat has no managed identity, so the operator registers a
-- key for each storage account a pipeline reaches that way (moat storage-account add). Sealed like secrets.
CREATE TABLE storage_accounts (
    account TEXT PRIMARY KEY,
    blob_endpoint TEXT NOT NULL,
    key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
