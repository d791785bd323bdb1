-- Usage and quotas. Each answer counts on the UTC day it started
-- (messages.usage_day): one answer, and its prompt and completion tokens.
-- usage_days is the per-user, per-day rollup, kept in the transactions that
-- start and finish answers: starting one reserves it against the user's daily
-- quotas under the row's lock, finishing one adds its tokens. Reports read the
-- rollup, never the messages. A user's own daily limits live on their row
-- (NULL: the deployment's default).
-- depends: 0004.streaming-answers

ALTER TABLE users ADD COLUMN daily_token_quota bigint;
ALTER TABLE users ADD COLUMN daily_message_quota integer;
ALTER TABLE users ADD CONSTRAINT users_daily_token_quota_check CHECK (daily_token_quota >= 0);
ALTER TABLE users ADD CONSTRAINT users_daily_message_quota_check CHECK (daily_message_quota >= 0);

ALTER TABLE messages ADD COLUMN usage_day date;
UPDATE messages SET usage_day = (created_at AT TIME ZONE 'UTC')::date WHERE role = 'assistant';

CREATE TABLE usage_days (
    user_id           bigint  NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day               date    NOT NULL,
    messages          integer NOT NULL DEFAULT 0,
    prompt_tokens     bigint  NOT NULL DEFAULT 0,
    completion_tokens bigint  NOT NULL DEFAULT 0,
    CONSTRAINT usage_days_pkey PRIMARY KEY (user_id, day)
);
-- Every user's usage over a range of days (the admins' report).
CREATE INDEX usage_days_day_idx ON usage_days (day) INCLUDE (user_id, messages, prompt_tokens, completion_tokens);

INSERT INTO usage_days (user_id, day, messages, prompt_tokens, completion_tokens)
SELECT user_id, usage_day, count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0)
FROM messages
WHERE role = 'assistant'
GROUP BY user_id, usage_day;
