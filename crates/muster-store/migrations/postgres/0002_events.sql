-- The event stream (PostgreSQL). Events are written in the same transaction as the change they
-- describe, with seq NULL; the sequencer later numbers committed events per stream, so
-- readers following "seq > cursor" never skip an event that committed late (identity values
-- are handed out at insert time, not in commit order).

CREATE TABLE events (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream   TEXT NOT NULL,
    seq      BIGINT,                  -- per-stream sequence, assigned by the sequencer
    kind     TEXT NOT NULL,           -- e.g. 'user.created'
    subject  TEXT,                    -- the id of what changed
    at       TIMESTAMPTZ NOT NULL,
    cid      TEXT,
    data     JSONB NOT NULL,
    UNIQUE (stream, seq)
);
CREATE INDEX events_unsequenced ON events (id) WHERE seq IS NULL;

CREATE TABLE event_streams (
    stream    TEXT PRIMARY KEY,
    last_seq  BIGINT NOT NULL
);

-- One row; the sequencer holds its lock while numbering, so only one sequencer (of all the
-- nodes sharing this database) numbers at a time.
CREATE TABLE event_sequencer (id INTEGER PRIMARY KEY);
INSERT INTO event_sequencer (id) VALUES (1);
