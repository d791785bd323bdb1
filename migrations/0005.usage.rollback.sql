-- Without usage: no rollup, no per-user limits (the tokens stay on the messages).
DROP TABLE IF EXISTS usage_spans;
DROP TABLE IF EXISTS usage_days;
DROP FUNCTION IF EXISTS usage_spans_follow();
ALTER TABLE messages DROP COLUMN IF EXISTS usage_day;
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_daily_message_quota_check;
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_daily_token_quota_check;
ALTER TABLE users DROP COLUMN IF EXISTS daily_message_quota;
ALTER TABLE users DROP COLUMN IF EXISTS daily_token_quota;
