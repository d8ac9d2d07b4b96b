-- Event retention: the task_clean_up_events task deletes numbered events older than the
-- retention period, oldest first, per stream. `purged_seq` is the highest number deleted, so a
-- follower whose cursor is older is told that it missed events (410) instead of silently
-- skipping them.
ALTER TABLE event_streams ADD COLUMN purged_seq BIGINT NOT NULL DEFAULT 0;

INSERT INTO schedules (name, workflow_name, interval_seconds, offset_seconds) VALUES
    ('clean up events', 'task_clean_up_events', 86400, 1800);
INSERT INTO workflows (workflow_id, name, target, description, is_task, created_at) VALUES
    ('74ebdd77-2307-5993-93f9-6e69fade424a', 'task_clean_up_events', 'SYSTEM', 'Clean up old events', TRUE, now());
