-- The directory: users, sessions, login throttling and the audit log (SQLite).
-- Times are integer microseconds since the Unix epoch (UTC), so comparisons are numeric.

CREATE TABLE users (
    uuid                      BLOB PRIMARY KEY NOT NULL,
    username                  TEXT NOT NULL,
    username_key              TEXT NOT NULL UNIQUE,  -- lower-cased: usernames are unique case-insensitively
    email                     TEXT,
    email_key                 TEXT,
    display_name              TEXT,
    first_name                TEXT,
    middle_name               TEXT,
    last_name                 TEXT,
    search_names              TEXT NOT NULL,         -- lower-cased names for substring search
    is_active                 INTEGER NOT NULL,
    is_internal               INTEGER NOT NULL,
    is_super_user             INTEGER NOT NULL,
    is_approval_needed        INTEGER NOT NULL,
    approval_status           TEXT NOT NULL CHECK (approval_status IN ('before_decision', 'approved', 'rejected')),
    approval_status_mod_by    TEXT NOT NULL,
    approval_status_mod_time  INTEGER NOT NULL,
    is_locked                 INTEGER NOT NULL,
    locked_time               INTEGER,
    locked_by                 TEXT,
    password_hash             TEXT NOT NULL,
    password_is_set           INTEGER NOT NULL,
    password_must_change      INTEGER NOT NULL,
    password_last_set         INTEGER NOT NULL,
    password_expiry           INTEGER NOT NULL,
    sign_up_status            TEXT NOT NULL CHECK (sign_up_status IN ('before_confirmation', 'final')),
    sign_up_time              INTEGER NOT NULL,
    is_totp_enabled           INTEGER NOT NULL,
    totp_key_sealed           TEXT NOT NULL,
    totp_label                TEXT NOT NULL,
    totp_last_step            INTEGER,
    version                   INTEGER NOT NULL DEFAULT 1,
    updated_at                INTEGER NOT NULL
);
CREATE INDEX users_email_key ON users (email_key);
CREATE INDEX users_approval_status ON users (approval_status);
CREATE INDEX users_sign_up_status ON users (sign_up_status);
CREATE INDEX users_sign_up_time ON users (sign_up_time);

CREATE TABLE sessions (
    id            BLOB PRIMARY KEY NOT NULL,
    token_hash    BLOB NOT NULL UNIQUE,          -- SHA-256 of the token; the token is never stored
    user_uuid     BLOB NOT NULL REFERENCES users (uuid) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,              -- absolute expiry
    current_app   TEXT,
    remote_addr   TEXT,
    user_agent    TEXT
);
CREATE INDEX sessions_user ON sessions (user_uuid);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE login_throttle (
    key           TEXT PRIMARY KEY NOT NULL,     -- 'account:<username key>' or 'address:<ip>'
    failures      INTEGER NOT NULL,
    last_failure  INTEGER NOT NULL
);

CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    cid          TEXT NOT NULL,
    actor        TEXT,
    current_app  TEXT,
    remote_addr  TEXT,
    action       TEXT NOT NULL,
    target       TEXT,
    outcome      TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    reason       TEXT,
    details      TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_target ON audit_log (target, id);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_cid ON audit_log (cid);
CREATE INDEX audit_log_action ON audit_log (action, id);
