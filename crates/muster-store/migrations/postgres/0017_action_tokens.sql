-- One-time tokens sent by mail: password resets and invitations (first password). Only the
-- SHA-256 of a token is stored; one live token per user and purpose (issuing a new one
-- replaces the old).
CREATE TABLE action_tokens (
    token_hash  BYTEA PRIMARY KEY,
    purpose     TEXT NOT NULL,                    -- password_reset | invitation
    user_uuid   UUID NOT NULL REFERENCES users (uuid) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (user_uuid, purpose)
);
CREATE INDEX action_tokens_expires_at ON action_tokens (expires_at);

-- Addresses proven to reach their user (an invitation's link was used from a mail to it).
CREATE TABLE email_verifications (
    user_uuid    UUID PRIMARY KEY REFERENCES users (uuid) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    verified_at  TIMESTAMPTZ NOT NULL
);
