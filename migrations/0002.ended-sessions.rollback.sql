-- Undo 0002.ended-sessions.

DROP INDEX IF EXISTS user_sessions_revoked_at_idx;
DROP INDEX IF EXISTS user_sessions_expires_at_idx;
