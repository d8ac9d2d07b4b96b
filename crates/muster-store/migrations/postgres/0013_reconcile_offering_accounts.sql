-- Group offerings follow membership: task_reconcile_offering_accounts brings every active
-- group's members' offering accounts in line with the group's offerings (drift left by
-- accounts changed by hand, or by processes that ran an older workflow version). Hourly,
-- at a quarter past, on one node.
INSERT INTO schedules (name, workflow_name, interval_seconds, offset_seconds) VALUES
    ('reconcile offering accounts', 'task_reconcile_offering_accounts', 3600, 900);
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES
    ('50933349-5bba-5a43-9b29-56cbae8d6cc7', 'task_reconcile_offering_accounts', 'SYSTEM', 'Reconcile offering accounts with group membership', TRUE, now());
