-- Metrics (issue 12 item 2): one-minute aggregates folded from the audit log by the consumer `metrics`, which
-- moves its cursor (log_consumers) in the transaction that adds to these rows, so each event counts once.
-- A series is one (registry, metric, dimensions) triple; points refer to it by id so that a point row stays a
-- few dozen bytes however long the identity or repository names are.
CREATE TABLE metric_series (
    id INTEGER PRIMARY KEY,
    -- The registry's lower-case name.
    registry TEXT NOT NULL,
    metric TEXT NOT NULL,
    -- JSON array of [name, value] pairs sorted by name ("[]" for a metric without dimensions).
    dimensions TEXT NOT NULL,
    UNIQUE (registry, metric, dimensions)
);

CREATE TABLE metric_points (
    series INTEGER NOT NULL REFERENCES metric_series(id) ON DELETE CASCADE,
    -- Unix seconds of the start of the minute (StorageUsed: of the hour).
    minute INTEGER NOT NULL,
    count INTEGER NOT NULL,
    total REAL NOT NULL,
    minimum REAL NOT NULL,
    maximum REAL NOT NULL,
    PRIMARY KEY (series, minute)
) WITHOUT ROWID;

-- Retention prunes by age.
CREATE INDEX metric_points_minute ON metric_points(minute);
