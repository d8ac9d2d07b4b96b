-- Mail waiting to be sent, or sent. Written in the same transaction as the change that causes
-- it; a background task delivers it (retries with back-off) and records the outcome.
-- The message (subject and bodies, which may hold a one-time link) is sealed with the server
-- key, and erased once delivered: only its envelope and outcome stay.
CREATE TABLE mail_outbox (
    id              UUID PRIMARY KEY,
    created_at      TIMESTAMPTZ NOT NULL,
    kind            TEXT NOT NULL,                -- template name, e.g. password_reset
    recipient       TEXT NOT NULL,
    user_uuid       UUID REFERENCES users (uuid) ON DELETE SET NULL,
    sealed_message  TEXT,                         -- NULL once sent
    status          TEXT NOT NULL,                -- pending | sent | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    claimed_until   TIMESTAMPTZ,                  -- a node is sending it until then
    last_error      TEXT,
    sent_at         TIMESTAMPTZ
);
CREATE INDEX mail_outbox_due ON mail_outbox (status, next_attempt_at);
CREATE INDEX mail_outbox_user ON mail_outbox (user_uuid, kind);
