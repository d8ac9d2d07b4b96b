-- The event stream (SQLite). Events are written in the same transaction as the change they
-- describe, with seq NULL; the sequencer later numbers committed events per stream, so
-- readers following "seq > cursor" never skip an event that committed late.

CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    stream   TEXT NOT NULL,
    seq      INTEGER,                 -- per-stream sequence, assigned by the sequencer
    kind     TEXT NOT NULL,           -- e.g. 'user.created'
    subject  TEXT,                    -- the id of what changed
    at       INTEGER NOT NULL,
    cid      TEXT,
    data     TEXT NOT NULL,
    UNIQUE (stream, seq)
);
CREATE INDEX events_unsequenced ON events (id) WHERE seq IS NULL;

CREATE TABLE event_streams (
    stream    TEXT PRIMARY KEY NOT NULL,
    last_seq  INTEGER NOT NULL
);

-- One row; the sequencer holds its lock while numbering, so only one sequencer (of all the
-- nodes sharing this database) numbers at a time.
CREATE TABLE event_sequencer (id INTEGER PRIMARY KEY);
INSERT INTO event_sequencer (id) VALUES (1);
