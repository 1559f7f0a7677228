-- ACR Transfer (moat_model::transfer): export and import pipelines of a registry, and pipeline runs. A pipeline's
-- properties are kept as the model's JSON (`body`); never a secret: a SAS token stays in the secret store and the
-- pipeline only names it (keyVaultUri). Names are ARM names: unique per registry whatever their case.
CREATE TABLE export_pipelines (
    registry_id TEXT NOT NULL,
    name TEXT NOT NULL COLLATE NOCASE,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (registry_id, name)
);

CREATE TABLE import_pipelines (
    registry_id TEXT NOT NULL,
    name TEXT NOT NULL COLLATE NOCASE,
    body TEXT NOT NULL,
    -- 1 when trigger.sourceTrigger.status is Enabled: what the source trigger polls.
    trigger_enabled INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (registry_id, name)
);
CREATE INDEX import_pipelines_triggered ON import_pipelines(trigger_enabled);

-- A run: its request as accepted, the job that carries it out, and the response the job fills in.
CREATE TABLE pipeline_runs (
    registry_id TEXT NOT NULL,
    name TEXT NOT NULL COLLATE NOCASE,
    pipeline_kind TEXT NOT NULL CHECK (pipeline_kind IN ('export', 'import')),
    pipeline_name TEXT NOT NULL,
    request TEXT NOT NULL,
    force_update_tag TEXT,
    job_id TEXT,
    provisioning_state TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (registry_id, name)
);
