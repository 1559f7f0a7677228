-- Small blobs live in the database: one group commit makes many of them durable with a single fsync, where a
-- file each would cost two (file and directory). The blobs row is the same either way.
CREATE TABLE blob_data (
    digest TEXT PRIMARY KEY REFERENCES blobs(digest),
    data BLOB NOT NULL
);
