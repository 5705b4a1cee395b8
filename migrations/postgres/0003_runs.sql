-- Weft schema, version 3 (PostgreSQL): durable runs. A run, its step rows (one per step of the
-- definition that became ready), the attempts of each step, the signals posted to it, and the
-- global event log.
--
-- Statuses are upper case (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED); step phases are
-- lower case (queued, executing, waiting, done): see engine/store/src/runs.rs.

CREATE TABLE workflow_runs (
    id                 UUID        NOT NULL PRIMARY KEY,
    -- No foreign key: a run keeps the name and version it ran even if the definition goes.
    definition_id      UUID        NOT NULL,
    definition_name    TEXT        NOT NULL,
    definition_version TEXT        NOT NULL,
    status             TEXT        NOT NULL
        CHECK (status IN ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    input              JSONB       NOT NULL,
    output             JSONB,
    error              JSONB,
    -- Unique when set (NULLs are all distinct).
    idempotency_key    TEXT,
    -- A sub-workflow's parent run and the parent's step row that started it.
    parent_run_id      UUID        REFERENCES workflow_runs (id),
    parent_step_row_id UUID,
    depth              INTEGER     NOT NULL DEFAULT 0 CHECK (depth >= 0),
    deadline_at        TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at         TIMESTAMPTZ,
    completed_at       TIMESTAMPTZ,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT workflow_runs_idempotency_key_key UNIQUE (idempotency_key),
    CONSTRAINT workflow_runs_parent_check
        CHECK ((parent_run_id IS NULL) = (parent_step_row_id IS NULL)),
    -- completed_at is set exactly when the status is terminal.
    CONSTRAINT workflow_runs_completed_check
        CHECK ((status IN ('COMPLETED', 'FAILED', 'CANCELLED')) = (completed_at IS NOT NULL))
);

-- Listing order is (created_at, id), newest first; the filters of RunQuery.
CREATE INDEX workflow_runs_created_idx ON workflow_runs (created_at, id);
CREATE INDEX workflow_runs_status_idx ON workflow_runs (status, created_at, id);
CREATE INDEX workflow_runs_definition_idx ON workflow_runs (definition_id, created_at, id);
CREATE INDEX workflow_runs_definition_name_idx
    ON workflow_runs (definition_name, created_at, id);
CREATE INDEX workflow_runs_parent_idx ON workflow_runs (parent_run_id, created_at, id)
    WHERE parent_run_id IS NOT NULL;

CREATE TABLE step_runs (
    id           UUID        NOT NULL PRIMARY KEY,
    run_id       UUID        NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    -- The definition's stepDefinitionId.
    step_id      TEXT        NOT NULL,
    status       TEXT        NOT NULL
        CHECK (status IN ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    phase        TEXT        NOT NULL CHECK (phase IN ('queued', 'executing', 'waiting', 'done')),
    -- Attempts started so far.
    attempt      INTEGER     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    input        JSONB,
    output       JSONB,
    error        JSONB,
    runner       TEXT,
    -- Who holds the lease (phase executing only).
    lease_owner  TEXT,
    -- The phase the current (or last) claim took the step from.
    claimed_from TEXT
        CHECK (claimed_from IS NULL OR claimed_from IN ('queued', 'executing', 'waiting')),
    -- queued: when it may start; executing: lease expiry; waiting: wake time or NULL.
    due_at       TIMESTAMPTZ,
    wait         JSONB,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at   TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
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
);

-- Claiming: the not-done rows, oldest due first (also next_due_at).
CREATE INDEX step_runs_due_idx ON step_runs (due_at, id) WHERE phase <> 'done';
-- Releasing a replica's leases.
CREATE INDEX step_runs_lease_idx ON step_runs (lease_owner) WHERE phase = 'executing';

CREATE TABLE step_attempts (
    step_row_id  UUID        NOT NULL REFERENCES step_runs (id) ON DELETE CASCADE,
    -- The step's run, copied from the step row when the attempt is recorded.
    run_id       UUID        NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    attempt      INTEGER     NOT NULL CHECK (attempt >= 0),
    status       TEXT        NOT NULL
        CHECK (status IN ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    input        JSONB,
    output       JSONB,
    error        JSONB,
    runner       TEXT,
    lease_owner  TEXT,
    started_at   TIMESTAMPTZ NOT NULL,
    completed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (step_row_id, attempt)
);

CREATE INDEX step_attempts_run_idx ON step_attempts (run_id);

CREATE TABLE run_signals (
    id          UUID        NOT NULL PRIMARY KEY,
    run_id      UUID        NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    name        TEXT        NOT NULL,
    payload     JSONB       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set when a transition consumed it; consumed signals are kept as history.
    consumed_at TIMESTAMPTZ
);

-- Unconsumed signals of a run by name, oldest first; also the foreign key's checks.
CREATE INDEX run_signals_run_idx ON run_signals (run_id, name, created_at, id);

CREATE TABLE events (
    -- Global and strictly increasing. Transactions that append events serialise their
    -- appends (see engine/store/src/postgres.rs), so seq order is also commit order.
    seq        BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     UUID        NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step_id    TEXT,
    kind       TEXT        NOT NULL,
    data       JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One run's events in order.
CREATE INDEX events_run_idx ON events (run_id, seq);
