-- Look-alike usernames: `username_skeleton` is the Unicode TR39 confusable skeleton of the
-- username's key (see muster_core::directory::username), unique so that two look-alike names
-- cannot both be created, even concurrently. Neither PRECIS nor TR39 can be computed in SQL:
-- rows written before this migration have NULL here until the store fills them in when it
-- migrates (Store::migrate), recomputing `username_key` by RFC 8265 on the way. A row whose keys
-- clash with an earlier user's keeps its account and its old key, and gets a skeleton of its
-- own (`conflict:<uuid>`) and an audit record `user.username_conflict`.
ALTER TABLE users ADD COLUMN username_skeleton TEXT;
CREATE UNIQUE INDEX users_username_skeleton ON users (username_skeleton);
