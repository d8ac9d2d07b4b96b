-- Offering accounts (PostgreSQL): service providers and their managers, offerings, each
-- person's account on each offering (Waldur's OfferingUser), its transition history, and the
-- long-lived API tokens hosting-site agents use. The lifecycle itself lives in
-- muster_core::offering::lifecycle; the CHECK constraints list its storage names.

CREATE TABLE service_providers (
    uuid      UUID PRIMARY KEY,
    name      TEXT NOT NULL,
    created   TIMESTAMPTZ NOT NULL,
    modified  TIMESTAMPTZ NOT NULL
);

-- Directory users who may manage a provider's offering accounts (Waldur's
-- UPDATE_OFFERING_USER on the provider organisation).
CREATE TABLE provider_managers (
    provider_uuid  UUID NOT NULL REFERENCES service_providers (uuid) ON DELETE CASCADE,
    user_uuid      UUID NOT NULL REFERENCES users (uuid) ON DELETE CASCADE,
    created        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (provider_uuid, user_uuid)
);
CREATE INDEX provider_managers_user ON provider_managers (user_uuid);

CREATE TABLE offerings (
    uuid                     UUID PRIMARY KEY,
    provider_uuid            UUID NOT NULL REFERENCES service_providers (uuid) ON DELETE RESTRICT,
    name                     TEXT NOT NULL,
    slug                     TEXT NOT NULL UNIQUE,
    type                     TEXT NOT NULL,
    provider_can_create      BOOLEAN NOT NULL,  -- service_provider_can_create_offering_user
    username_policy          TEXT NOT NULL CHECK (username_policy IN ('service_provider', 'waldur_username')),
    created                  TIMESTAMPTZ NOT NULL,
    modified                 TIMESTAMPTZ NOT NULL
);
CREATE INDEX offerings_provider ON offerings (provider_uuid);

CREATE TABLE offering_users (
    uuid                          UUID PRIMARY KEY,
    offering_uuid                 UUID NOT NULL REFERENCES offerings (uuid) ON DELETE CASCADE,
    -- Copied from the offering (which never moves between providers) so the provider filter
    -- and the provider-scoped visibility rule are answered from this table's indexes alone.
    provider_uuid                 UUID NOT NULL,
    user_uuid                     UUID NOT NULL REFERENCES users (uuid) ON DELETE CASCADE,
    username                      TEXT NOT NULL DEFAULT '',  -- '' = not named yet
    state                         TEXT NOT NULL CHECK (state IN ('requested', 'creating',
        'pending_account_linking', 'pending_additional_validation', 'ok', 'deletion_requested',
        'deleting', 'deleted', 'error_creating', 'error_deleting')),
    runtime_state                 TEXT NOT NULL CHECK (runtime_state IN ('active',
        'pending_account_linking', 'pending_additional_validation')),
    is_restricted                 BOOLEAN NOT NULL,
    service_provider_comment      TEXT NOT NULL,
    service_provider_comment_url  TEXT NOT NULL,
    version                       BIGINT NOT NULL DEFAULT 1,
    created                       TIMESTAMPTZ NOT NULL,
    modified                      TIMESTAMPTZ NOT NULL,
    UNIQUE (offering_uuid, user_uuid)  -- one account per person per offering
);
-- Two live accounts of one offering never share a local username (Waldur has no such
-- constraint and its counters race). Deleted accounts release their name.
CREATE UNIQUE INDEX offering_users_username ON offering_users (offering_uuid, username)
    WHERE username <> '' AND state <> 'deleted';
-- The dashboard queries ("provider P, states S…, ordered by username"): equality on the
-- provider and state, then the default order, so each state is one ordered index range.
CREATE INDEX offering_users_provider_state ON offering_users (provider_uuid, state, username COLLATE "C", uuid);
CREATE INDEX offering_users_offering_state ON offering_users (offering_uuid, state, username COLLATE "C", uuid);
CREATE INDEX offering_users_provider_created ON offering_users (provider_uuid, created);
CREATE INDEX offering_users_user ON offering_users (user_uuid);
CREATE INDEX offering_users_order ON offering_users (username COLLATE "C", uuid);

-- Who moved an account from where to where, when, with which comment. Written in the same
-- transaction as the change.
CREATE TABLE offering_user_history (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    offering_user_uuid UUID NOT NULL REFERENCES offering_users (uuid) ON DELETE CASCADE,
    at                 TIMESTAMPTZ NOT NULL,
    actor              TEXT,
    action             TEXT NOT NULL,
    from_state         TEXT,
    to_state           TEXT NOT NULL,
    comment            TEXT NOT NULL,
    comment_url        TEXT NOT NULL,
    cid                TEXT NOT NULL
);
CREATE INDEX offering_user_history_account ON offering_user_history (offering_user_uuid, id);

-- Agents' API tokens, each scoped to one provider. Only the SHA-256 of the key is stored.
CREATE TABLE api_tokens (
    uuid           UUID PRIMARY KEY,
    provider_uuid  UUID NOT NULL REFERENCES service_providers (uuid) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    token_hash     BYTEA NOT NULL UNIQUE,
    created_by     TEXT NOT NULL,
    created        TIMESTAMPTZ NOT NULL
);
CREATE INDEX api_tokens_provider ON api_tokens (provider_uuid);
