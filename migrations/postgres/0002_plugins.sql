-- Weft schema, version 2 (PostgreSQL): Wasm step plugins (uploaded components).
--
-- The component bytes are content-addressed: one plugin_blobs row per distinct SHA-256, shared
-- by every plugin version with the same bytes. The engine computes the hash; the database
-- neither computes nor checks it.

CREATE TABLE plugin_blobs (
    -- SHA-256 of `wasm`, lowercase hex.
    sha256_hex TEXT        NOT NULL PRIMARY KEY,
    wasm       BYTEA       NOT NULL,
    -- Length of `wasm` in bytes.
    size       BIGINT      NOT NULL CHECK (size >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE plugins (
    id            UUID        NOT NULL PRIMARY KEY,
    name          TEXT        NOT NULL,
    version       TEXT        NOT NULL,
    -- A blob is deleted by the engine with its last plugin version; this key forbids it earlier.
    sha256_hex    TEXT        NOT NULL REFERENCES plugin_blobs (sha256_hex),
    -- The blob's size, copied here so listing plugins never touches the blobs.
    wasm_size     BIGINT      NOT NULL CHECK (wasm_size >= 0),
    description   TEXT        NOT NULL,
    input_schema  JSONB       NOT NULL,
    output_schema JSONB       NOT NULL,
    limits        JSONB,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- One row per (name, version); its index also serves lookups by name.
    CONSTRAINT plugins_name_version_key UNIQUE (name, version)
);

-- "Does any version still use this blob?" on delete, and the foreign key's own checks.
CREATE INDEX plugins_sha256_hex_idx ON plugins (sha256_hex);
