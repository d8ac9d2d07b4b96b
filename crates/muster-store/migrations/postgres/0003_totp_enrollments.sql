-- TOTP keys being enrolled: shown once to the user, activated only by a valid code from them.
CREATE TABLE totp_enrollments (
    user_uuid   UUID PRIMARY KEY REFERENCES users (uuid) ON DELETE CASCADE,
    key_sealed  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
