-- What every node must agree on, and who is at work.
--
-- `server_key`: the id (not the key) of the server key this database's secrets are sealed
-- with, recorded by the first node; a node started with another key refuses to start instead
-- of failing later on every sealed value.
CREATE TABLE server_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key_id TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
);

-- `workers`: each running workflow worker's heartbeat, so that a start with no worker alive
-- anywhere can say so instead of waiting silently.
CREATE TABLE workers (
    name TEXT PRIMARY KEY,
    concurrency INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
);
