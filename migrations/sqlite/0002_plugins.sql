-- Weft schema, version 2 (SQLite): Wasm step plugins (uploaded components).
--
-- Same conventions as 0001 (TEXT ids and fixed-width UTC TEXT timestamps, JSON TEXT checked
-- with json_valid(), STRICT tables; STRICT knows no BIGINT, and INTEGER is 64-bit).
--
-- The component bytes are content-addressed: one plugin_blobs row per distinct SHA-256, shared
-- by every plugin version with the same bytes. The engine computes the hash; the database
-- neither computes nor checks it.

CREATE TABLE plugin_blobs (
    -- SHA-256 of `wasm`, lowercase hex.
    sha256_hex TEXT    NOT NULL PRIMARY KEY,
    wasm       BLOB    NOT NULL,
    -- Length of `wasm` in bytes.
    size       INTEGER NOT NULL CHECK (size >= 0),
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
) STRICT;

CREATE TABLE plugins (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    -- A blob is deleted by the engine with its last plugin version; this key forbids it earlier.
    sha256_hex    TEXT    NOT NULL REFERENCES plugin_blobs (sha256_hex),
    -- The blob's size, copied here so listing plugins never touches the blobs.
    wasm_size     INTEGER NOT NULL CHECK (wasm_size >= 0),
    description   TEXT    NOT NULL,
    input_schema  TEXT    NOT NULL CHECK (json_valid(input_schema)),
    output_schema TEXT    NOT NULL CHECK (json_valid(output_schema)),
    limits        TEXT             CHECK (limits IS NULL OR json_valid(limits)),
    created_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    -- One row per (name, version); its index also serves lookups by name.
    CONSTRAINT plugins_name_version_key UNIQUE (name, version)
) STRICT;

-- "Does any version still use this blob?" on delete, and the foreign key's own checks.
CREATE INDEX plugins_sha256_hex_idx ON plugins (sha256_hex);
