-- TOTP keys being enrolled: shown once to the user, activated only by a valid code from them.
CREATE TABLE totp_enrollments (
    user_uuid   BLOB PRIMARY KEY NOT NULL REFERENCES users (uuid) ON DELETE CASCADE,
    key_sealed  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
