-- The health check proves the database still takes writes by writing here: a row that needs
-- new pages, deleted again in the same committed transaction (a full disk or a size limit
-- refuses it; nothing stays behind).
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
