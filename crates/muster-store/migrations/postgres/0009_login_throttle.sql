-- The login throttle (muster_core::directory::throttle): counters are now keyed by keyed hashes
-- ('pair:…', 'account:…', never a typed name or address). The old rows were keyed by the
-- lower-cased typed name in plain text and last at most 15 minutes: they are dropped.
DELETE FROM login_throttle;

-- The account names failing from each address (keyed hashes), for the per-address limit on
-- distinct names.
CREATE TABLE login_address_failures (
    address_key   TEXT NOT NULL,
    account_key   TEXT NOT NULL,
    last_failure  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (address_key, account_key)
);
CREATE INDEX login_address_failures_last_failure ON login_address_failures (last_failure);

-- Addresses each account name logged in from (keyed hashes): an account over its failure
-- ceiling is not slowed from these.
CREATE TABLE login_known_addresses (
    account_key   TEXT NOT NULL,
    address_key   TEXT NOT NULL,
    last_success  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (account_key, address_key)
);
CREATE INDEX login_known_addresses_last_success ON login_known_addresses (last_success);
