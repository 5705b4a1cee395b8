-- Weft schema, version 3 (SQLite): durable runs. A run, its step rows (one per step of the
-- definition that became ready), the attempts of each step, the signals posted to it, and the
-- global event log.
--
-- Same conventions as 0001 (TEXT ids and fixed-width UTC TEXT timestamps, JSON TEXT checked
-- with json_valid(), STRICT tables; STRICT knows no BIGINT, and INTEGER is 64-bit).
-- Statuses are upper case (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED); step phases are
-- lower case (queued, executing, waiting, done): see engine/store/src/runs.rs.

CREATE TABLE workflow_runs (
    id                 TEXT    NOT NULL PRIMARY KEY,
    -- No foreign key: a run keeps the name and version it ran even if the definition goes.
    definition_id      TEXT    NOT NULL,
    definition_name    TEXT    NOT NULL,
    definition_version TEXT    NOT NULL,
    status             TEXT    NOT NULL
        CHECK (status IN ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    input              TEXT    NOT NULL CHECK (json_valid(input)),
    output             TEXT             CHECK (output IS NULL OR json_valid(output)),
    error              TEXT             CHECK (error IS NULL OR json_valid(error)),
    -- Unique when set (NULLs are all distinct).
    idempotency_key    TEXT,
    -- A sub-workflow's parent run and the parent's step row that started it.
    parent_run_id      TEXT             REFERENCES workflow_runs (id),
    parent_step_row_id TEXT,
    depth              INTEGER NOT NULL DEFAULT 0 CHECK (depth >= 0),
    deadline_at        TEXT,
    created_at         TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    started_at         TEXT,
    completed_at       TEXT,
    updated_at         TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    CONSTRAINT workflow_runs_idempotency_key_key UNIQUE (idempotency_key),
    CONSTRAINT workflow_runs_parent_check
        CHECK ((parent_run_id IS NULL) = (parent_step_row_id IS NULL)),
    -- completed_at is set exactly when the status is terminal.
    CONSTRAINT workflow_runs_completed_check
        CHECK ((status IN ('COMPLETED', 'FAILED', 'CANCELLED')) = (completed_at IS NOT NULL))
) STRICT;

-- Listing order is (created_at, id), newest first; the filters of RunQuery.
CREATE INDEX workflow_runs_created_idx ON workflow_runs (created_at, id);
CREATE INDEX workflow_runs_status_idx ON workflow_runs (status, created_at, id);
CREATE INDEX workflow_runs_definition_idx ON workflow_runs (definition_id, created_at, id);
CREATE INDEX workflow_runs_definition_name_idx
    ON workflow_runs (definition_name, created_at, id);
CREATE INDEX workflow_runs_parent_idx ON workflow_runs (parent_run_id, created_at, id)
    WHERE parent_run_id IS NOT NULL;

CREATE TABLE step_runs (
    id           TEXT    NOT NULL PRIMARY KEY,
    run_id       TEXT    NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    -- The definition's stepDefinitionId.
    step_id      TEXT    NOT NULL,
    status       TEXT    NOT NULL
        CHECK (status IN ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    phase        TEXT    NOT NULL CHECK (phase IN ('queued', 'executing', 'waiting', 'done')),
    -- Attempts started so far.
    attempt      INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    input        TEXT             CHECK (input IS NULL OR json_valid(input)),
    output       TEXT             CHECK (output IS NULL OR json_valid(output)),
    error        TEXT             CHECK (error IS NULL OR json_valid(error)),
    runner       TEXT,
    -- Who holds the lease (phase executing only).
    lease_owner  TEXT,
    -- The phase the current (or last) claim took the step from.
    claimed_from TEXT
        CHECK (claimed_from IS NULL OR claimed_from IN ('queued', 'executing', 'waiting')),
    -- queued: when it may start; executing: lease expiry; waiting: wake time or NULL.
    due_at       TEXT,
    wait         TEXT             CHECK (wait IS NULL OR json_valid(wait)),
    created_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    started_at   TEXT,
    completed_at TEXT,
    updated_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    -- Each step of a definition has at most one row per run (retries are attempts of it).
    -- Its index also serves lookups by run (leading column).
    CONSTRAINT step_runs_run_step_key UNIQUE (run_id, step_id),
    -- The phase/status pairs of the module docs of engine/store/src/runs.rs.
    CONSTRAINT step_runs_phase_status_check CHECK (
        (phase = 'queued' AND status = 'PENDING')
        OR (phase IN ('executing', 'waiting') AND status = 'RUNNING')
        OR (phase = 'done' AND status IN ('COMPLETED', 'FAILED', 'CANCELLED'))
    ),
    -- A queued or executing step without due_at would never be claimed again.
    CONSTRAINT step_runs_due_check CHECK (phase NOT IN ('queued', 'executing') OR due_at IS NOT NULL),
    CONSTRAINT step_runs_lease_check CHECK (phase <> 'executing' OR lease_owner IS NOT NULL),
    CONSTRAINT step_runs_completed_check
        CHECK ((status IN ('COMPLETED', 'FAILED', 'CANCELLED')) = (completed_at IS NOT NULL))
) STRICT;

-- Claiming: the not-done rows, oldest due first (also next_due_at).
CREATE INDEX step_runs_due_idx ON step_runs (due_at, id) WHERE phase <> 'done';
-- Releasing a replica's leases.
CREATE INDEX step_runs_lease_idx ON step_runs (lease_owner) WHERE phase = 'executing';

CREATE TABLE step_attempts (
    step_row_id  TEXT    NOT NULL REFERENCES step_runs (id) ON DELETE CASCADE,
    -- The step's run, copied from the step row when the attempt is recorded.
    run_id       TEXT    NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL CHECK (attempt >= 0),
    status       TEXT    NOT NULL
        CHECK (status IN ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    input        TEXT             CHECK (input IS NULL OR json_valid(input)),
    output       TEXT             CHECK (output IS NULL OR json_valid(output)),
    error        TEXT             CHECK (error IS NULL OR json_valid(error)),
    runner       TEXT,
    lease_owner  TEXT,
    started_at   TEXT    NOT NULL,
    completed_at TEXT    NOT NULL,
    PRIMARY KEY (step_row_id, attempt)
) STRICT;

CREATE INDEX step_attempts_run_idx ON step_attempts (run_id);

CREATE TABLE run_signals (
    id          TEXT NOT NULL PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL CHECK (json_valid(payload)),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    -- Set when a transition consumed it; consumed signals are kept as history.
    consumed_at TEXT
) STRICT;

-- Unconsumed signals of a run by name, oldest first; also the foreign key's checks.
CREATE INDEX run_signals_run_idx ON run_signals (run_id, name, created_at, id);

CREATE TABLE events (
    -- Global and strictly increasing; never reused (AUTOINCREMENT).
    seq        INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT    NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step_id    TEXT,
    kind       TEXT    NOT NULL,
    data       TEXT    NOT NULL CHECK (json_valid(data)),
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
) STRICT;

-- One run's events in order.
CREATE INDEX events_run_idx ON events (run_id, seq);
