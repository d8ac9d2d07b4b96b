-- Unix ids an operator released so that they may be given again. A uid or gid below its pool's
-- counter was handed out once (or skipped) and is otherwise never given again; a released one,
-- held by no account, may be claimed once more by set_posix_attributes (the claim removes the
-- row). The counter itself never goes back.
CREATE TABLE posix_released_ids (
    offering_uuid BLOB NOT NULL REFERENCES offerings (uuid) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('uid', 'gid')),
    number        INTEGER NOT NULL,
    released_at   INTEGER NOT NULL,
    released_by   TEXT,
    PRIMARY KEY (offering_uuid, kind, number)
);
