-- How many offering accounts each (provider, offering, state) holds, kept by a trigger on every
-- write to offering_users, so that the dashboard's lifecycle diagram and the account lists'
-- totals read a few hundred rows instead of counting up to millions of accounts.
--
-- Append-only: a change adds a +1 and a -1 row and never updates a shared counter row, so
-- concurrent transitions do not wait on each other (nor deadlock, as two transactions moving
-- accounts in opposite directions would on counter rows). `Store::compact_offering_user_tallies`
-- folds the rows into one per key now and then.
CREATE TABLE offering_user_tallies (
    id             BIGSERIAL PRIMARY KEY,
    provider_uuid  UUID NOT NULL,
    offering_uuid  UUID NOT NULL,
    state          TEXT NOT NULL,
    n              INTEGER NOT NULL
);
CREATE INDEX offering_user_tallies_key ON offering_user_tallies (provider_uuid, offering_uuid, state);

INSERT INTO offering_user_tallies (provider_uuid, offering_uuid, state, n)
SELECT provider_uuid, offering_uuid, state, COUNT(*) FROM offering_users
GROUP BY provider_uuid, offering_uuid, state;

CREATE FUNCTION offering_users_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        IF TG_OP = 'DELETE' OR OLD.state IS DISTINCT FROM NEW.state
           OR OLD.provider_uuid IS DISTINCT FROM NEW.provider_uuid
           OR OLD.offering_uuid IS DISTINCT FROM NEW.offering_uuid THEN
            INSERT INTO offering_user_tallies (provider_uuid, offering_uuid, state, n)
            VALUES (OLD.provider_uuid, OLD.offering_uuid, OLD.state, -1);
        ELSE
            RETURN NULL;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO offering_user_tallies (provider_uuid, offering_uuid, state, n)
        VALUES (NEW.provider_uuid, NEW.offering_uuid, NEW.state, 1);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER offering_users_tally AFTER INSERT OR UPDATE OR DELETE ON offering_users
FOR EACH ROW EXECUTE FUNCTION offering_users_tally();

-- Whole-list pages in the orders the console offers, read from an index alone: accounts by
-- their last change (its default) or creation; processes and tasks newest first, and their
-- per-status counts; locked users (a dashboard figure).
CREATE INDEX offering_users_modified ON offering_users (modified, uuid);
CREATE INDEX offering_users_created ON offering_users (created, uuid);
CREATE INDEX processes_task_started ON processes (is_task, started_at, process_id);
CREATE INDEX processes_task_status ON processes (is_task, last_status);
CREATE INDEX users_locked ON users (is_locked);
-- Name searches (a substring anywhere) scan this instead of the whole users table.
CREATE INDEX users_search_names ON users (search_names);
-- A person's User subscriptions (their page in the console).
CREATE INDEX user_blocks_directory_user ON user_blocks (directory_user);
-- The users list's order (byte order, as on SQLite): without it every page sorts every user.
CREATE INDEX users_username_key_c ON users (username_key COLLATE "C");
