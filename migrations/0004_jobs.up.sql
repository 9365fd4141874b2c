-- The durable job queue: named jobs with stored arguments, so work resumes after a restart.
-- A claimed job is 'running' under a lease (locked_by until locked_until); a worker that
-- dies leaves the lease to expire, and then any worker may claim the job again.

CREATE TABLE jobs (
    id {uuid} PRIMARY KEY,
    kind TEXT NOT NULL,
    payload {bytes} NOT NULL,                    -- the handler's arguments, opaque here
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,         -- runs started, counted at claim
    max_attempts INTEGER NOT NULL,
    run_at BIGINT NOT NULL,                      -- not before (epoch ms)
    locked_by TEXT,                              -- the worker holding the lease
    locked_until BIGINT,
    last_error TEXT,
    dedupe_key TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The claim query: due queued jobs, and running jobs whose lease has expired.
CREATE INDEX jobs_claim ON jobs (state, run_at);
-- "Process media X" is queued once; after it has finished, it may be queued again.
CREATE UNIQUE INDEX jobs_dedupe ON jobs (dedupe_key) WHERE state IN ('queued', 'running');
-- Pruning finished jobs without reading the live ones.
CREATE INDEX jobs_finished ON jobs (updated_at) WHERE state IN ('done', 'failed');
