-- Username policies `anonymized`, `full_name` and `identity_claim` (after Waldur's
-- UsernameGenerationPolicy), with the settings they need.
--
-- `username_policy` keeps its CHECK constraint of two values: SQLite cannot change a CHECK
-- constraint without rebuilding the table, and rebuilding `offerings` would cascade-delete
-- every account (offering_users … ON DELETE CASCADE). The newer policies are stored in
-- `username_policy_generated` instead (with `username_policy` = 'service_provider'); the
-- effective policy is that column when set.
ALTER TABLE offerings ADD COLUMN username_policy_generated TEXT
    CHECK (username_policy_generated IN ('anonymized', 'full_name', 'identity_claim'));
-- The `anonymized` policy's prefix (Waldur's `username_anonymized_prefix`).
ALTER TABLE offerings ADD COLUMN username_prefix TEXT NOT NULL DEFAULT 'walduruser_';
-- The directory attribute the `identity_claim` policy names accounts after.
ALTER TABLE offerings ADD COLUMN username_claim TEXT NOT NULL DEFAULT 'username'
    CHECK (username_claim IN ('username', 'email_local_part', 'first_name', 'last_name', 'display_name'));
-- The `anonymized` policy's counter: the last number handed out (gaps are fine, repeats never).
ALTER TABLE offerings ADD COLUMN username_counter INTEGER NOT NULL DEFAULT 0;
