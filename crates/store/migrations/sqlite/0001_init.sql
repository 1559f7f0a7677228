-- Registries hosted by this server. `settings` is the model's RegistrySettings as JSON: it is read and written
-- whole, inside the transaction that checks the export-policy rules.
CREATE TABLE registries (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    login_server TEXT NOT NULL UNIQUE,
    resource_group TEXT NOT NULL,
    is_default INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    settings TEXT NOT NULL
);

CREATE TABLE identities (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per stored blob file, shared by every repository that links it.
CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE repositories (
    registry_id TEXT NOT NULL REFERENCES registries(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (registry_id, name)
);

-- Visibility: a repository sees a blob only through a link.
CREATE TABLE blob_links (
    registry_id TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL REFERENCES blobs(digest),
    created_at TEXT NOT NULL,
    PRIMARY KEY (registry_id, repository, digest),
    FOREIGN KEY (registry_id, repository) REFERENCES repositories(registry_id, name) ON DELETE CASCADE
);
CREATE INDEX blob_links_digest ON blob_links(digest);

CREATE TABLE manifests (
    registry_id TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    artifact_type TEXT,
    subject TEXT,
    annotations TEXT,
    size INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (registry_id, repository, digest),
    FOREIGN KEY (registry_id, repository) REFERENCES repositories(registry_id, name) ON DELETE CASCADE
);
CREATE INDEX manifests_subject ON manifests(registry_id, repository, subject) WHERE subject IS NOT NULL;

CREATE TABLE tags (
    registry_id TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (registry_id, repository, tag),
    FOREIGN KEY (registry_id, repository, digest) REFERENCES manifests(registry_id, repository, digest) ON DELETE CASCADE
);

-- Upload sessions outlive the process: a chunked upload continues after a restart.
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    registry_id TEXT NOT NULL,
    repository TEXT NOT NULL,
    committed_size INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time_generated TEXT NOT NULL,
    category TEXT NOT NULL,
    operation_name TEXT NOT NULL,
    registry TEXT NOT NULL,
    login_server TEXT NOT NULL,
    repository TEXT,
    tag TEXT,
    digest TEXT,
    media_type TEXT,
    size INTEGER,
    identity TEXT,
    caller_ip_address TEXT,
    user_agent TEXT,
    duration_ms INTEGER,
    result_type TEXT NOT NULL,
    result_description TEXT NOT NULL,
    correlation_id TEXT
);
CREATE INDEX audit_events_time ON audit_events(time_generated);
