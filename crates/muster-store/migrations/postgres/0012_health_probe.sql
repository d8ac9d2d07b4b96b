-- The health check proves the database still takes writes by writing here: a row written and
-- deleted again in one committed transaction (a full disk or a read-only server refuses it;
-- nothing stays behind).
CREATE TABLE health_probe (
    id BIGINT PRIMARY KEY,
    data BYTEA NOT NULL
);
