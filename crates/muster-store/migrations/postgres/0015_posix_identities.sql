-- A Unix identity for every offering account (after Waldur's offering-user POSIX data:
-- backend_metadata uidnumber, primarygroup, loginShell, homeDir). An offering with a uid pool
-- gives each new account the next uid (and, unless the offering shares one primary group, the
-- next gid) from counters moved by one atomic UPDATE each: numbers are never handed out twice
-- (gaps are fine), and no lock outlives the statement.
ALTER TABLE offerings ADD COLUMN posix_uid_min BIGINT;
ALTER TABLE offerings ADD COLUMN posix_uid_max BIGINT;
ALTER TABLE offerings ADD COLUMN posix_gid_min BIGINT;
ALTER TABLE offerings ADD COLUMN posix_gid_max BIGINT;
ALTER TABLE offerings ADD COLUMN posix_home_prefix TEXT NOT NULL DEFAULT '/home/';
ALTER TABLE offerings ADD COLUMN posix_login_shell TEXT NOT NULL DEFAULT '/bin/bash';
ALTER TABLE offerings ADD COLUMN posix_shared_gid BIGINT;
-- The next uid / gid to hand out (NULL: the pool's minimum).
ALTER TABLE offerings ADD COLUMN posix_uid_next BIGINT;
ALTER TABLE offerings ADD COLUMN posix_gid_next BIGINT;

ALTER TABLE offering_users ADD COLUMN uidnumber BIGINT;
ALTER TABLE offering_users ADD COLUMN primarygroup BIGINT;
ALTER TABLE offering_users ADD COLUMN login_shell TEXT;
-- The home directory is the prefix and the username (so it follows a rename) unless set.
ALTER TABLE offering_users ADD COLUMN home_prefix TEXT;
ALTER TABLE offering_users ADD COLUMN home_directory TEXT;
-- A uid belongs to one account of its pool, for ever (deleted accounts keep theirs).
CREATE UNIQUE INDEX offering_users_uidnumber ON offering_users (offering_uuid, uidnumber)
    WHERE uidnumber IS NOT NULL;
