-- The create_user form refuses a username that any User subscription holds, compared without
-- case: without this index that check read every user block, on every form submitted.
CREATE INDEX user_blocks_username_lower ON user_blocks (LOWER(username));
