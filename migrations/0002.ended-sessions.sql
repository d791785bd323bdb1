-- Housekeeping deletes sessions that expired or were revoked long ago, once
-- an hour; these let it find them without reading the whole table.
-- depends: 0001.initial

CREATE INDEX user_sessions_expires_at_idx ON user_sessions (expires_at);
CREATE INDEX user_sessions_revoked_at_idx ON user_sessions (revoked_at)
    WHERE revoked_at IS NOT NULL;
