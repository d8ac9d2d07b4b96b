-- The directory: users, sessions, login throttling and the audit log (PostgreSQL).

CREATE TABLE users (
    uuid                      UUID PRIMARY KEY,
    username                  TEXT NOT NULL,
    username_key              TEXT NOT NULL UNIQUE,  -- lower-cased: usernames are unique case-insensitively
    email                     TEXT,
    email_key                 TEXT,
    display_name              TEXT,
    first_name                TEXT,
    middle_name               TEXT,
    last_name                 TEXT,
    search_names              TEXT NOT NULL,         -- lower-cased names for substring search
    is_active                 BOOLEAN NOT NULL,
    is_internal               BOOLEAN NOT NULL,
    is_super_user             BOOLEAN NOT NULL,
    is_approval_needed        BOOLEAN NOT NULL,
    approval_status           TEXT NOT NULL CHECK (approval_status IN ('before_decision', 'approved', 'rejected')),
    approval_status_mod_by    TEXT NOT NULL,
    approval_status_mod_time  TIMESTAMPTZ NOT NULL,
    is_locked                 BOOLEAN NOT NULL,
    locked_time               TIMESTAMPTZ,
    locked_by                 TEXT,
    password_hash             TEXT NOT NULL,
    password_is_set           BOOLEAN NOT NULL,
    password_must_change      BOOLEAN NOT NULL,
    password_last_set         TIMESTAMPTZ NOT NULL,
    password_expiry           TIMESTAMPTZ NOT NULL,
    sign_up_status            TEXT NOT NULL CHECK (sign_up_status IN ('before_confirmation', 'final')),
    sign_up_time              TIMESTAMPTZ NOT NULL,
    is_totp_enabled           BOOLEAN NOT NULL,
    totp_key_sealed           TEXT NOT NULL,
    totp_label                TEXT NOT NULL,
    totp_last_step            BIGINT,
    version                   BIGINT NOT NULL DEFAULT 1,
    updated_at                TIMESTAMPTZ NOT NULL
);
CREATE INDEX users_email_key ON users (email_key);
CREATE INDEX users_approval_status ON users (approval_status);
CREATE INDEX users_sign_up_status ON users (sign_up_status);
CREATE INDEX users_sign_up_time ON users (sign_up_time);

CREATE TABLE sessions (
    id            UUID PRIMARY KEY,
    token_hash    BYTEA NOT NULL UNIQUE,         -- SHA-256 of the token; the token is never stored
    user_uuid     UUID NOT NULL REFERENCES users (uuid) ON DELETE CASCADE,
    created_at    TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,          -- absolute expiry
    current_app   TEXT,
    remote_addr   TEXT,
    user_agent    TEXT
);
CREATE INDEX sessions_user ON sessions (user_uuid);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE login_throttle (
    key           TEXT PRIMARY KEY,              -- 'account:<username key>' or 'address:<ip>'
    failures      BIGINT NOT NULL,
    last_failure  TIMESTAMPTZ NOT NULL
);

CREATE TABLE audit_log (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL,
    cid          TEXT NOT NULL,
    actor        TEXT,
    current_app  TEXT,
    remote_addr  TEXT,
    action       TEXT NOT NULL,
    target       TEXT,
    outcome      TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),
    reason       TEXT,
    details      JSONB NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_target ON audit_log (target, id);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_cid ON audit_log (cid);
CREATE INDEX audit_log_action ON audit_log (action, id);
