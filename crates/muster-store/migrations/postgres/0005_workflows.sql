-- Products, subscriptions and the durable workflow engine (PostgreSQL).
-- Follows orchestrator-core's model (reference/orchestrator-core.md §1) with typed block tables
-- instead of an all-strings EAV, so the database itself keeps user_id and username unique.

-- The catalogue: static, seeded here.
CREATE TABLE products (
    product_id    UUID PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    description   TEXT NOT NULL,
    product_type  TEXT NOT NULL,
    tag           TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('active', 'pre production', 'phase out', 'end of life')),
    created_at    TIMESTAMPTZ NOT NULL,
    end_date      TIMESTAMPTZ
);
CREATE TABLE fixed_inputs (
    fixed_input_id  UUID PRIMARY KEY,
    product_id      UUID NOT NULL REFERENCES products (product_id),
    name            TEXT NOT NULL,
    value           TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    UNIQUE (product_id, name)
);
CREATE TABLE product_blocks (
    product_block_id  UUID PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    description       TEXT NOT NULL,
    tag               TEXT NOT NULL,
    status            TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    end_date          TIMESTAMPTZ
);
CREATE TABLE product_block_resource_types (
    product_block_id  UUID NOT NULL REFERENCES product_blocks (product_block_id),
    resource_type     TEXT NOT NULL,
    description       TEXT NOT NULL,
    value_type        TEXT NOT NULL,   -- 'str', 'int', 'list[uuid]'
    position          INTEGER NOT NULL,
    PRIMARY KEY (product_block_id, resource_type)
);
CREATE TABLE product_product_blocks (
    product_id        UUID NOT NULL REFERENCES products (product_id),
    product_block_id  UUID NOT NULL REFERENCES product_blocks (product_block_id),
    PRIMARY KEY (product_id, product_block_id)
);
CREATE TABLE product_block_relations (
    in_use_by_id   UUID NOT NULL REFERENCES product_blocks (product_block_id),
    depends_on_id  UUID NOT NULL REFERENCES product_blocks (product_block_id),
    attribute      TEXT NOT NULL,
    PRIMARY KEY (in_use_by_id, depends_on_id)
);
CREATE TABLE workflows (
    workflow_id  UUID PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    target       TEXT NOT NULL CHECK (target IN ('CREATE', 'MODIFY', 'TERMINATE', 'SYSTEM', 'VALIDATE')),
    description  TEXT NOT NULL,
    is_task      BOOLEAN NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE TABLE products_workflows (
    product_id   UUID NOT NULL REFERENCES products (product_id),
    workflow_id  UUID NOT NULL REFERENCES workflows (workflow_id),
    PRIMARY KEY (product_id, workflow_id)
);

-- Subscriptions: instances of products.
CREATE TABLE subscriptions (
    subscription_id    UUID PRIMARY KEY,
    description        TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('initial', 'provisioning', 'active', 'disabled', 'terminated', 'migrating')),
    product_id         UUID NOT NULL REFERENCES products (product_id),
    customer_id        TEXT NOT NULL,
    insync             BOOLEAN NOT NULL,
    start_date         TIMESTAMPTZ,
    end_date           TIMESTAMPTZ,
    note               TEXT,
    -- The process that holds the subscription: one workflow at a time, taken by a conditional
    -- UPDATE (… WHERE locked_by_process IS NULL) and released by resync or abort.
    locked_by_process  UUID,
    version            BIGINT NOT NULL DEFAULT 1,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX subscriptions_product_status ON subscriptions (product_id, status);
CREATE INDEX subscriptions_status ON subscriptions (status, created_at);
CREATE INDEX subscriptions_customer ON subscriptions (customer_id);

CREATE TABLE user_group_blocks (
    subscription_instance_id  UUID PRIMARY KEY,
    subscription_id           UUID NOT NULL UNIQUE REFERENCES subscriptions (subscription_id) ON DELETE CASCADE,
    group_name                TEXT,
    group_id                  BIGINT UNIQUE,
    offerings                 JSONB NOT NULL DEFAULT '[]'
);
CREATE TABLE user_blocks (
    subscription_instance_id  UUID PRIMARY KEY,
    subscription_id           UUID NOT NULL UNIQUE REFERENCES subscriptions (subscription_id) ON DELETE CASCADE,
    username                  TEXT UNIQUE,
    age                       INTEGER,
    user_id                   BIGINT UNIQUE,
    directory_user            UUID REFERENCES users (uuid) ON DELETE SET NULL
);
-- Cross-subscription relations: a User's `group` depends on a UserGroup subscription.
CREATE TABLE subscription_relations (
    in_use_by_id   UUID NOT NULL REFERENCES subscriptions (subscription_id) ON DELETE CASCADE,
    attribute      TEXT NOT NULL,
    depends_on_id  UUID NOT NULL REFERENCES subscriptions (subscription_id),
    PRIMARY KEY (in_use_by_id, attribute)
);
CREATE INDEX subscription_relations_depends_on ON subscription_relations (depends_on_id);

-- Unique numbers handed out to workflows (user_id, group_id): sequences never hand out a
-- number twice and, unlike a counter row, take no lock that concurrent workflows would queue
-- on until commit (a rolled-back allocation leaves a gap; the UNIQUE columns back them up).
CREATE SEQUENCE user_id_seq START 10000;
CREATE SEQUENCE group_id_seq START 1000;

-- Processes: workflow runs. The row is also the queue entry (run_after) and the claim (lease).
CREATE TABLE processes (
    process_id           UUID PRIMARY KEY,
    workflow_name        TEXT NOT NULL,
    workflow_version     INTEGER NOT NULL,
    target               TEXT NOT NULL,
    is_task              BOOLEAN NOT NULL,
    last_status          TEXT NOT NULL CHECK (last_status IN ('created', 'running', 'suspended', 'waiting', 'awaiting_callback', 'failed', 'aborted', 'completed', 'resumed')),
    last_step            TEXT,
    next_step            TEXT,          -- the name of the step to run next (resume by name)
    assignee             TEXT NOT NULL,
    failed_reason        TEXT,
    traceback            TEXT,
    created_by           TEXT NOT NULL,
    started_at           TIMESTAMPTZ NOT NULL,
    last_modified_at     TIMESTAMPTZ NOT NULL,
    state                JSONB NOT NULL,
    run_after            TIMESTAMPTZ,   -- queued: claimable from this time on; NULL: not queued
    lease_owner          TEXT,
    lease_until          TIMESTAMPTZ,
    attempt              BIGINT NOT NULL DEFAULT 0,  -- fencing token: bumped by every claim
    retries              INTEGER NOT NULL DEFAULT 0, -- consecutive retries of the current step
    callback_token_hash  TEXT,
    callback_deadline    TIMESTAMPTZ,
    callback_early       JSONB,         -- a callback that came while its step was still running
    note                 TEXT
);
CREATE INDEX processes_queue ON processes (run_after) WHERE run_after IS NOT NULL;
CREATE INDEX processes_status ON processes (last_status, started_at);
CREATE INDEX processes_workflow ON processes (workflow_name, started_at);
CREATE INDEX processes_started ON processes (started_at);
CREATE INDEX processes_callback_deadline ON processes (callback_deadline) WHERE callback_deadline IS NOT NULL;

-- The step log: one row per executed step, holding the step's state delta.
CREATE TABLE process_steps (
    step_id       BIGSERIAL PRIMARY KEY,
    process_id    UUID NOT NULL REFERENCES processes (process_id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('success', 'skipped', 'suspend', 'waiting', 'awaiting_callback', 'failed', 'abort', 'complete')),
    state_delta   JSONB NOT NULL,
    created_by    TEXT NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    completed_at  TIMESTAMPTZ NOT NULL,
    attempt       BIGINT NOT NULL,
    retries       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX process_steps_process ON process_steps (process_id, step_id);

CREATE TABLE processes_subscriptions (
    process_id       UUID NOT NULL REFERENCES processes (process_id) ON DELETE CASCADE,
    subscription_id  UUID NOT NULL REFERENCES subscriptions (subscription_id) ON DELETE CASCADE,
    workflow_target  TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (process_id, subscription_id)
);
CREATE INDEX processes_subscriptions_subscription ON processes_subscriptions (subscription_id);

CREATE TABLE engine_settings (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    global_lock  BOOLEAN NOT NULL
);
INSERT INTO engine_settings (id, global_lock) VALUES (1, FALSE);

-- Scheduled tasks. A node fires a schedule by moving next_run_at forward with a conditional
-- UPDATE; only the node whose UPDATE matched starts the task, so each tick fires once.
CREATE TABLE schedules (
    name              TEXT PRIMARY KEY,
    workflow_name     TEXT NOT NULL,
    interval_seconds  BIGINT NOT NULL CHECK (interval_seconds > 0),
    offset_seconds    BIGINT NOT NULL DEFAULT 0,  -- fire at multiples of the interval plus this
    next_run_at       TIMESTAMPTZ,
    last_run_at       TIMESTAMPTZ,
    last_process_id   UUID
);
INSERT INTO schedules (name, workflow_name, interval_seconds, offset_seconds) VALUES
    ('validate subscriptions', 'task_validate_subscriptions', 86400, 600),
    ('resume workflows', 'task_resume_workflows', 3600, 0),
    ('clean up tasks', 'task_clean_up_tasks', 21600, 0);

-- The catalogue: products User Group, User internal and User external (reference §6.1).
-- Ids are fixed (UUIDv5 of their names) so every installation names them alike.
INSERT INTO product_blocks (product_block_id, name, description, tag, status, created_at) VALUES ('d9c5c41d-7ee5-597c-8b43-d031061586ac', 'UserGroupBlock', 'user group settings', 'UGB', 'active', now());
INSERT INTO product_block_resource_types (product_block_id, resource_type, description, value_type, position) VALUES ('d9c5c41d-7ee5-597c-8b43-d031061586ac', 'group_name', 'Unique name of user group', 'str', 0);
INSERT INTO product_block_resource_types (product_block_id, resource_type, description, value_type, position) VALUES ('d9c5c41d-7ee5-597c-8b43-d031061586ac', 'group_id', 'Unique ID of user group', 'int', 1);
INSERT INTO product_block_resource_types (product_block_id, resource_type, description, value_type, position) VALUES ('d9c5c41d-7ee5-597c-8b43-d031061586ac', 'offerings', 'Hosting offerings the members get accounts on', 'list[uuid]', 2);
INSERT INTO product_blocks (product_block_id, name, description, tag, status, created_at) VALUES ('aacfe2f6-f02a-5878-8ec7-ae54e4165663', 'UserBlock', 'user settings', 'UB', 'active', now());
INSERT INTO product_block_resource_types (product_block_id, resource_type, description, value_type, position) VALUES ('aacfe2f6-f02a-5878-8ec7-ae54e4165663', 'username', 'Unique name of user', 'str', 0);
INSERT INTO product_block_resource_types (product_block_id, resource_type, description, value_type, position) VALUES ('aacfe2f6-f02a-5878-8ec7-ae54e4165663', 'age', 'Age of user', 'int', 1);
INSERT INTO product_block_resource_types (product_block_id, resource_type, description, value_type, position) VALUES ('aacfe2f6-f02a-5878-8ec7-ae54e4165663', 'user_id', 'Unique ID of user', 'int', 2);
INSERT INTO product_block_relations (in_use_by_id, depends_on_id, attribute) VALUES ('aacfe2f6-f02a-5878-8ec7-ae54e4165663', 'd9c5c41d-7ee5-597c-8b43-d031061586ac', 'group');
INSERT INTO products (product_id, name, description, product_type, tag, status, created_at) VALUES ('31892964-6ad1-52eb-8c09-77fba68b51b6', 'User Group', 'user group administration', 'UserGroup', 'GROUP', 'active', now());
INSERT INTO product_product_blocks (product_id, product_block_id) VALUES ('31892964-6ad1-52eb-8c09-77fba68b51b6', 'd9c5c41d-7ee5-597c-8b43-d031061586ac');
INSERT INTO products (product_id, name, description, product_type, tag, status, created_at) VALUES ('091035e7-95a1-5997-8286-74a4ad1cc551', 'User internal', 'user administration - internal', 'User', 'USER_INT', 'active', now());
INSERT INTO fixed_inputs (fixed_input_id, product_id, name, value, created_at) VALUES ('45d8895d-5faf-522a-9d2b-bef3f0d77555', '091035e7-95a1-5997-8286-74a4ad1cc551', 'affiliation', 'internal', now());
INSERT INTO product_product_blocks (product_id, product_block_id) VALUES ('091035e7-95a1-5997-8286-74a4ad1cc551', 'aacfe2f6-f02a-5878-8ec7-ae54e4165663');
INSERT INTO products (product_id, name, description, product_type, tag, status, created_at) VALUES ('df953f9e-85c7-5c26-92f1-c605c38af9ac', 'User external', 'user administration - external', 'User', 'USER_EXT', 'active', now());
INSERT INTO fixed_inputs (fixed_input_id, product_id, name, value, created_at) VALUES ('e077dbe8-01da-53f8-a5bf-7b3090a6b153', 'df953f9e-85c7-5c26-92f1-c605c38af9ac', 'affiliation', 'external', now());
INSERT INTO product_product_blocks (product_id, product_block_id) VALUES ('df953f9e-85c7-5c26-92f1-c605c38af9ac', 'aacfe2f6-f02a-5878-8ec7-ae54e4165663');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES ('956612ba-732b-523a-ad34-a7b05a0e73c0', 'create_user_group', 'CREATE', 'Create user group', FALSE, now());
INSERT INTO products_workflows (product_id, workflow_id) VALUES ('31892964-6ad1-52eb-8c09-77fba68b51b6', '956612ba-732b-523a-ad34-a7b05a0e73c0');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES ('a3fa5541-db98-51fb-bd01-3b051006711c', 'modify_user_group', 'MODIFY', 'Modify user group', FALSE, now());
INSERT INTO products_workflows (product_id, workflow_id) VALUES ('31892964-6ad1-52eb-8c09-77fba68b51b6', 'a3fa5541-db98-51fb-bd01-3b051006711c');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES ('fc43aabf-2127-55b3-b01f-2edacf21d274', 'terminate_user_group', 'TERMINATE', 'Terminate user group', FALSE, now());
INSERT INTO products_workflows (product_id, workflow_id) VALUES ('31892964-6ad1-52eb-8c09-77fba68b51b6', 'fc43aabf-2127-55b3-b01f-2edacf21d274');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES ('e88ee97e-76e0-5404-8768-8eb50ded6da5', 'validate_user_group', 'VALIDATE', 'Validate user group', FALSE, now());
INSERT INTO products_workflows (product_id, workflow_id) VALUES ('31892964-6ad1-52eb-8c09-77fba68b51b6', 'e88ee97e-76e0-5404-8768-8eb50ded6da5');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES ('4ba651f5-6627-5f95-a19c-3f33abf54ee2', 'create_user', 'CREATE', 'Create user', FALSE, now());
INSERT INTO products_workflows (product_id, workflow_id) VALUES ('091035e7-95a1-5997-8286-74a4ad1cc551', '4ba651f5-6627-5f95-a19c-3f33abf54ee2');
INSERT INTO products_workflows (product_id, workflow_id) VALUES ('df953f9e-85c7-5c26-92f1-c605c38af9ac', '4ba651f5-6627-5f95-a19c-3f33abf54ee2');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES ('3587b102-6f81-5c43-9479-22788b72d411', 'modify_user', 'MODIFY', 'Modify user', FALSE, now());
INSERT INTO products_workflows (product_id, workflow_id) VALUES ('091035e7-95a1-5997-8286-74a4ad1cc551', '3587b102-6f81-5c43-9479-22788b72d411');
INSERT INTO products_workflows (product_id, workflow_id) VALUES ('df953f9e-85c7-5c26-92f1-c605c38af9ac', '3587b102-6f81-5c43-9479-22788b72d411');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES ('e87fe63e-5f53-588d-bce6-bd7931620c7f', 'terminate_user', 'TERMINATE', 'Terminate user', FALSE, now());
INSERT INTO products_workflows (product_id, workflow_id) VALUES ('091035e7-95a1-5997-8286-74a4ad1cc551', 'e87fe63e-5f53-588d-bce6-bd7931620c7f');
INSERT INTO products_workflows (product_id, workflow_id) VALUES ('df953f9e-85c7-5c26-92f1-c605c38af9ac', 'e87fe63e-5f53-588d-bce6-bd7931620c7f');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES ('9c363ee4-a03e-5c48-b254-1b32db30a285', 'validate_user', 'VALIDATE', 'Validate user', FALSE, now());
INSERT INTO products_workflows (product_id, workflow_id) VALUES ('091035e7-95a1-5997-8286-74a4ad1cc551', '9c363ee4-a03e-5c48-b254-1b32db30a285');
INSERT INTO products_workflows (product_id, workflow_id) VALUES ('df953f9e-85c7-5c26-92f1-c605c38af9ac', '9c363ee4-a03e-5c48-b254-1b32db30a285');
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES ('62154a00-3142-53c5-b282-9fc4b5d93995', 'task_validate_subscriptions', 'SYSTEM', 'Validate subscriptions', TRUE, now());
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES ('37df2a08-4bea-589d-abab-475dd7fa4ad4', 'task_resume_workflows', 'SYSTEM', 'Resume workflows', TRUE, now());
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES ('def0f7de-b527-5a5a-b72a-ec94a1a18f95', 'task_clean_up_tasks', 'SYSTEM', 'Clean up old tasks', TRUE, now());
