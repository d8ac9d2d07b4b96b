-- Provider-wide Unix identity pools (after Waldur's provider-scoped POSIX pools, which
-- replaced per-offering uid generation because offerings of one site sharing one directory
-- gave one uid to two people). An offering whose `posix_pool` is 'provider' draws from its
-- provider's pool instead of its own, and a person holds one identity per provider pool: the
-- same uid and primary gid on every offering of that provider, for ever (the row stays when
-- the person's accounts or the person go, so the numbers are never given to someone else).
ALTER TABLE service_providers ADD COLUMN posix_uid_min BIGINT;
ALTER TABLE service_providers ADD COLUMN posix_uid_max BIGINT;
ALTER TABLE service_providers ADD COLUMN posix_gid_min BIGINT;
ALTER TABLE service_providers ADD COLUMN posix_gid_max BIGINT;
ALTER TABLE service_providers ADD COLUMN posix_home_prefix TEXT NOT NULL DEFAULT '/home/';
ALTER TABLE service_providers ADD COLUMN posix_login_shell TEXT NOT NULL DEFAULT '/bin/bash';
ALTER TABLE service_providers ADD COLUMN posix_shared_gid BIGINT;
-- The next uid / gid to hand out (NULL: the pool's minimum), moved by one atomic UPDATE each.
ALTER TABLE service_providers ADD COLUMN posix_uid_next BIGINT;
ALTER TABLE service_providers ADD COLUMN posix_gid_next BIGINT;

ALTER TABLE offerings ADD COLUMN posix_pool TEXT NOT NULL DEFAULT 'offering'
    CHECK (posix_pool IN ('offering', 'provider'));

CREATE TABLE provider_posix_identities (
    provider_uuid UUID NOT NULL REFERENCES service_providers (uuid) ON DELETE CASCADE,
    -- No reference to users: the numbers stay taken after the person is deleted.
    user_uuid     UUID NOT NULL,
    uidnumber     BIGINT NOT NULL,
    primarygroup  BIGINT NOT NULL,
    created       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (provider_uuid, user_uuid),
    UNIQUE (provider_uuid, uidnumber)
);
