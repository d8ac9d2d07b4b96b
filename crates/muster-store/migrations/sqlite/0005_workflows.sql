-- Products, subscriptions and the durable workflow engine (SQLite). Times are integer microseconds since the epoch, as elsewhere.
-- Follows orchestrator-core's model (reference/orchestrator-core.md §1) with typed block tables
-- instead of an all-strings EAV, so the database itself keeps user_id and username unique.

-- The catalogue: static, seeded here.
CREATE TABLE products (
    product_id    BLOB PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL UNIQUE,
    description   TEXT NOT NULL,
    product_type  TEXT NOT NULL,
    tag           TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'pre production', 'phase out', 'end of life')),
    created_at    INTEGER NOT NULL,
    end_date      INTEGER
);
CREATE TABLE fixed_inputs (
    fixed_input_id  BLOB PRIMARY KEY NOT NULL,
    product_id      BLOB NOT NULL REFERENCES products (product_id),
    name            TEXT NOT NULL,
    value           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    UNIQUE (product_id, name)
);
CREATE TABLE product_blocks (
    product_block_id  BLOB PRIMARY KEY NOT NULL,
    name              TEXT NOT NULL UNIQUE,
    description       TEXT NOT NULL,
    tag               TEXT NOT NULL,
    status            TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    end_date          INTEGER
);
CREATE TABLE product_block_resource_types (
    product_block_id  BLOB NOT NULL REFERENCES product_blocks (product_block_id),
    resource_type     TEXT NOT NULL,
    description       TEXT NOT NULL,
    value_type        TEXT NOT NULL,   -- 'str', 'int', 'list[uuid]'
    position          INTEGER NOT NULL,
    PRIMARY KEY (product_block_id, resource_type)
);
CREATE TABLE product_product_blocks (
    product_id        BLOB NOT NULL REFERENCES products (product_id),
    product_block_id  BLOB NOT NULL REFERENCES product_blocks (product_block_id),
    PRIMARY KEY (product_id, product_block_id)
);
CREATE TABLE product_block_relations (
    in_use_by_id   BLOB NOT NULL REFERENCES product_blocks (product_block_id),
    depends_on_id  BLOB NOT NULL REFERENCES product_blocks (product_block_id),
    attribute      TEXT NOT NULL,
    PRIMARY KEY (in_use_by_id, depends_on_id)
);
CREATE TABLE workflows (
    workflow_id  BLOB PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL UNIQUE,
    target       TEXT NOT NULL CHECK (target IN ('CREATE', 'MODIFY', 'TERMINATE', 'SYSTEM', 'VALIDATE')),
    description  TEXT NOT NULL,
    is_task      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE TABLE products_workflows (
    product_id   BLOB NOT NULL REFERENCES products (product_id),
    workflow_id  BLOB NOT NULL REFERENCES workflows (workflow_id),
    PRIMARY KEY (product_id, workflow_id)
);

-- Subscriptions: instances of products.
CREATE TABLE subscriptions (
    subscription_id    BLOB PRIMARY KEY NOT NULL,
    description        TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('initial', 'provisioning', 'active', 'disabled', 'terminated', 'migrating')),
    product_id         BLOB NOT NULL REFERENCES products (product_id),
    customer_id        TEXT NOT NULL,
    insync             INTEGER NOT NULL,
    start_date         INTEGER,
    end_date           INTEGER,
    note               TEXT,
    -- The process that holds the subscription: one workflow at a time, taken by a conditional
    -- UPDATE (… WHERE locked_by_process IS NULL) and released by resync or abort.
    locked_by_process  BLOB,
    version            INTEGER NOT NULL DEFAULT 1,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX subscriptions_product_status ON subscriptions (product_id, status);
CREATE INDEX subscriptions_status ON subscriptions (status, created_at);
CREATE INDEX subscriptions_customer ON subscriptions (customer_id);

CREATE TABLE user_group_blocks (
    subscription_instance_id  BLOB PRIMARY KEY NOT NULL,
    subscription_id           BLOB NOT NULL UNIQUE REFERENCES subscriptions (subscription_id) ON DELETE CASCADE,
    group_name                TEXT,
    group_id                  INTEGER UNIQUE,
    offerings                 TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE user_blocks (
    subscription_instance_id  BLOB PRIMARY KEY NOT NULL,
    subscription_id           BLOB NOT NULL UNIQUE REFERENCES subscriptions (subscription_id) ON DELETE CASCADE,
    username                  TEXT UNIQUE,
    age                       INTEGER,
    user_id                   INTEGER UNIQUE,
    directory_user            BLOB REFERENCES users (uuid) ON DELETE SET NULL
);
-- Cross-subscription relations: a User's `group` depends on a UserGroup subscription.
CREATE TABLE subscription_relations (
    in_use_by_id   BLOB NOT NULL REFERENCES subscriptions (subscription_id) ON DELETE CASCADE,
    attribute      TEXT NOT NULL,
    depends_on_id  BLOB NOT NULL REFERENCES subscriptions (subscription_id),
    PRIMARY KEY (in_use_by_id, attribute)
);
CREATE INDEX subscription_relations_depends_on ON subscription_relations (depends_on_id);

-- Unique numbers handed out to workflows (user_id, group_id): UPDATE … RETURNING takes the
-- row lock, so concurrent allocations serialise and never repeat.
CREATE TABLE id_allocators (
    name        TEXT PRIMARY KEY,
    next_value  INTEGER NOT NULL
);
INSERT INTO id_allocators (name, next_value) VALUES ('user_id', 10000), ('group_id', 1000);

-- Processes: workflow runs. The row is also the queue entry (run_after) and the claim (lease).
CREATE TABLE processes (
    process_id           BLOB PRIMARY KEY NOT NULL,
    workflow_name        TEXT NOT NULL,
    workflow_version     INTEGER NOT NULL,
    target               TEXT NOT NULL,
    is_task              INTEGER NOT NULL,
    last_status          TEXT NOT NULL CHECK (last_status IN ('created', 'running', 'suspended', 'waiting', 'awaiting_callback', 'failed', 'aborted', 'completed', 'resumed')),
    last_step            TEXT,
    next_step            TEXT,          -- the name of the step to run next (resume by name)
    assignee             TEXT NOT NULL,
    failed_reason        TEXT,
    traceback            TEXT,
    created_by           TEXT NOT NULL,
    started_at           INTEGER NOT NULL,
    last_modified_at     INTEGER NOT NULL,
    state                TEXT NOT NULL,
    run_after            INTEGER,   -- queued: claimable from this time on; NULL: not queued
    lease_owner          TEXT,
    lease_until          INTEGER,
    attempt              INTEGER NOT NULL DEFAULT 0,  -- fencing token: bumped by every claim
    retries              INTEGER NOT NULL DEFAULT 0, -- consecutive retries of the current step
    callback_token_hash  TEXT,
    callback_deadline    INTEGER,
    callback_early       TEXT,         -- a callback that came while its step was still running
    note                 TEXT
);
CREATE INDEX processes_queue ON processes (run_after) WHERE run_after IS NOT NULL;
CREATE INDEX processes_status ON processes (last_status, started_at);
CREATE INDEX processes_workflow ON processes (workflow_name, started_at);
CREATE INDEX processes_started ON processes (started_at);
CREATE INDEX processes_callback_deadline ON processes (callback_deadline) WHERE callback_deadline IS NOT NULL;

-- The step log: one row per executed step, holding the step's state delta.
CREATE TABLE process_steps (
    step_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    process_id    BLOB NOT NULL REFERENCES processes (process_id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('success', 'skipped', 'suspend', 'waiting', 'awaiting_callback', 'failed', 'abort', 'complete')),
    state_delta   TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    completed_at  INTEGER NOT NULL,
    attempt       INTEGER NOT NULL,
    retries       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX process_steps_process ON process_steps (process_id, step_id);

CREATE TABLE processes_subscriptions (
    process_id       BLOB NOT NULL REFERENCES processes (process_id) ON DELETE CASCADE,
    subscription_id  BLOB NOT NULL REFERENCES subscriptions (subscription_id) ON DELETE CASCADE,
    workflow_target  TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    PRIMARY KEY (process_id, subscription_id)
);
CREATE INDEX processes_subscriptions_subscription ON processes_subscriptions (subscription_id);

CREATE TABLE engine_settings (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    global_lock  INTEGER NOT NULL
);
INSERT INTO engine_settings (id, global_lock) VALUES (1, 0);

-- Scheduled tasks. A node fires a schedule by moving next_run_at forward with a conditional
-- UPDATE; only the node whose UPDATE matched starts the task, so each tick fires once.
CREATE TABLE schedules (
    name              TEXT PRIMARY KEY,
    workflow_name     TEXT NOT NULL,
    interval_seconds  INTEGER NOT NULL CHECK (interval_seconds > 0),
    offset_seconds    INTEGER NOT NULL DEFAULT 0,  -- fire at multiples of the interval plus this
    next_run_at       INTEGER,
    last_run_at       INTEGER,
    last_process_id   BLOB
);
INSERT INTO schedules (name, workflow_name, interval_seconds, offset_seconds) VALUES
    ('validate subscriptions', 'task_validate_subscriptions', 86400, 600),
    ('resume workflows', 'task_resume_workflows', 3600, 0),
    ('clean up tasks', 'task_clean_up_tasks', 21600, 0);

-- The catalogue: products User Group, User internal and User external (reference §6.1).
-- Ids are fixed (UUIDv5 of their names) so every installation names them alike.
INSERT INTO product_blocks (product_block_id, name, description, tag, status, created_at) VALUES (X'd9c5c41d7ee5597c8b43d031061586ac', 'UserGroupBlock', 'user group settings', 'UGB', 'active', (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO product_block_resource_types (product_block_id, resource_type, description, value_type, position) VALUES (X'd9c5c41d7ee5597c8b43d031061586ac', 'group_name', 'Unique name of user group', 'str', 0);
INSERT INTO product_block_resource_types (product_block_id, resource_type, description, value_type, position) VALUES (X'd9c5c41d7ee5597c8b43d031061586ac', 'group_id', 'Unique ID of user group', 'int', 1);
INSERT INTO product_block_resource_types (product_block_id, resource_type, description, value_type, position) VALUES (X'd9c5c41d7ee5597c8b43d031061586ac', 'offerings', 'Hosting offerings the members get accounts on', 'list[uuid]', 2);
INSERT INTO product_blocks (product_block_id, name, description, tag, status, created_at) VALUES (X'aacfe2f6f02a58788ec7ae54e4165663', 'UserBlock', 'user settings', 'UB', 'active', (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO product_block_resource_types (product_block_id, resource_type, description, value_type, position) VALUES (X'aacfe2f6f02a58788ec7ae54e4165663', 'username', 'Unique name of user', 'str', 0);
INSERT INTO product_block_resource_types (product_block_id, resource_type, description, value_type, position) VALUES (X'aacfe2f6f02a58788ec7ae54e4165663', 'age', 'Age of user', 'int', 1);
INSERT INTO product_block_resource_types (product_block_id, resource_type, description, value_type, position) VALUES (X'aacfe2f6f02a58788ec7ae54e4165663', 'user_id', 'Unique ID of user', 'int', 2);
INSERT INTO product_block_relations (in_use_by_id, depends_on_id, attribute) VALUES (X'aacfe2f6f02a58788ec7ae54e4165663', X'd9c5c41d7ee5597c8b43d031061586ac', 'group');
INSERT INTO products (product_id, name, description, product_type, tag, status, created_at) VALUES (X'318929646ad152eb8c0977fba68b51b6', 'User Group', 'user group administration', 'UserGroup', 'GROUP', 'active', (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO product_product_blocks (product_id, product_block_id) VALUES (X'318929646ad152eb8c0977fba68b51b6', X'd9c5c41d7ee5597c8b43d031061586ac');
INSERT INTO products (product_id, name, description, product_type, tag, status, created_at) VALUES (X'091035e795a15997828674a4ad1cc551', 'User internal', 'user administration - internal', 'User', 'USER_INT', 'active', (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO fixed_inputs (fixed_input_id, product_id, name, value, created_at) VALUES (X'45d8895d5faf522a9d2bbef3f0d77555', X'091035e795a15997828674a4ad1cc551', 'affiliation', 'internal', (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO product_product_blocks (product_id, product_block_id) VALUES (X'091035e795a15997828674a4ad1cc551', X'aacfe2f6f02a58788ec7ae54e4165663');
INSERT INTO products (product_id, name, description, product_type, tag, status, created_at) VALUES (X'df953f9e85c75c2692f1c605c38af9ac', 'User external', 'user administration - external', 'User', 'USER_EXT', 'active', (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO fixed_inputs (fixed_input_id, product_id, name, value, created_at) VALUES (X'e077dbe801da53f8a5bf7b3090a6b153', X'df953f9e85c75c2692f1c605c38af9ac', 'affiliation', 'external', (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO product_product_blocks (product_id, product_block_id) VALUES (X'df953f9e85c75c2692f1c605c38af9ac', X'aacfe2f6f02a58788ec7ae54e4165663');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES (X'956612ba732b523aad34a7b05a0e73c0', 'create_user_group', 'CREATE', 'Create user group', 0, (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO products_workflows (product_id, workflow_id) VALUES (X'318929646ad152eb8c0977fba68b51b6', X'956612ba732b523aad34a7b05a0e73c0');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES (X'a3fa5541db9851fbbd013b051006711c', 'modify_user_group', 'MODIFY', 'Modify user group', 0, (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO products_workflows (product_id, workflow_id) VALUES (X'318929646ad152eb8c0977fba68b51b6', X'a3fa5541db9851fbbd013b051006711c');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES (X'fc43aabf212755b3b01f2edacf21d274', 'terminate_user_group', 'TERMINATE', 'Terminate user group', 0, (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO products_workflows (product_id, workflow_id) VALUES (X'318929646ad152eb8c0977fba68b51b6', X'fc43aabf212755b3b01f2edacf21d274');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES (X'e88ee97e76e0540487688eb50ded6da5', 'validate_user_group', 'VALIDATE', 'Validate user group', 0, (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO products_workflows (product_id, workflow_id) VALUES (X'318929646ad152eb8c0977fba68b51b6', X'e88ee97e76e0540487688eb50ded6da5');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES (X'4ba651f566275f95a19c3f33abf54ee2', 'create_user', 'CREATE', 'Create user', 0, (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO products_workflows (product_id, workflow_id) VALUES (X'091035e795a15997828674a4ad1cc551', X'4ba651f566275f95a19c3f33abf54ee2');
INSERT INTO products_workflows (product_id, workflow_id) VALUES (X'df953f9e85c75c2692f1c605c38af9ac', X'4ba651f566275f95a19c3f33abf54ee2');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES (X'3587b1026f815c43947922788b72d411', 'modify_user', 'MODIFY', 'Modify user', 0, (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO products_workflows (product_id, workflow_id) VALUES (X'091035e795a15997828674a4ad1cc551', X'3587b1026f815c43947922788b72d411');
INSERT INTO products_workflows (product_id, workflow_id) VALUES (X'df953f9e85c75c2692f1c605c38af9ac', X'3587b1026f815c43947922788b72d411');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES (X'e87fe63e5f53588dbce6bd7931620c7f', 'terminate_user', 'TERMINATE', 'Terminate user', 0, (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO products_workflows (product_id, workflow_id) VALUES (X'091035e795a15997828674a4ad1cc551', X'e87fe63e5f53588dbce6bd7931620c7f');
INSERT INTO products_workflows (product_id, workflow_id) VALUES (X'df953f9e85c75c2692f1c605c38af9ac', X'e87fe63e5f53588dbce6bd7931620c7f');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES (X'9c363ee4a03e5c48b2541b32db30a285', 'validate_user', 'VALIDATE', 'Validate user', 0, (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO products_workflows (product_id, workflow_id) VALUES (X'091035e795a15997828674a4ad1cc551', X'9c363ee4a03e5c48b2541b32db30a285');
INSERT INTO products_workflows (product_id, workflow_id) VALUES (X'df953f9e85c75c2692f1c605c38af9ac', X'9c363ee4a03e5c48b2541b32db30a285');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES (X'62154a00314253c5b2829fc4b5d93995', 'task_validate_subscriptions', 'SYSTEM', 'Validate subscriptions', 1, (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES (X'37df2a084bea589dabab475dd7fa4ad4', 'task_resume_workflows', 'SYSTEM', 'Resume workflows', 1, (CAST(strftime('%s','now') AS INTEGER) * 1000000));
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES (X'def0f7deb5275a5ab72aec94a1a18f95', 'task_clean_up_tasks', 'SYSTEM', 'Clean up old tasks', 1, (CAST(strftime('%s','now') AS INTEGER) * 1000000));
