-- Usage and quotas. Each answer counts on the UTC day it started
-- (messages.usage_day): one answer, and its prompt and completion tokens.
-- usage_days is the per-user, per-day rollup, kept in the transactions that
-- start and finish answers: starting one reserves it against the user's daily
-- quotas under the row's lock, finishing one adds its tokens. Reports read the
-- rollup, never the messages. A user's own daily limits live on their row
-- (NULL: the deployment's default).
--
-- Every user's sums over a range of days (the admins' report) would read a
-- row per user and day; usage_spans holds the same sums over aligned spans of
-- 2, 4, ... 512 days (a span of 2^level days starts where the days since
-- 0001-01-01 are a multiple of 2^level), kept by a trigger on usage_days, so
-- any range of up to a year is a handful of spans and days per user.
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

CREATE TABLE usage_spans (
    level             smallint NOT NULL,
    start             date     NOT NULL,
    user_id           bigint   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    messages          integer  NOT NULL DEFAULT 0,
    prompt_tokens     bigint   NOT NULL DEFAULT 0,
    completion_tokens bigint   NOT NULL DEFAULT 0,
    CONSTRAINT usage_spans_pkey PRIMARY KEY (level, start, user_id)
        INCLUDE (messages, prompt_tokens, completion_tokens),
    CONSTRAINT usage_spans_level_check CHECK (level BETWEEN 1 AND 9)
);

INSERT INTO usage_spans (level, start, user_id, messages, prompt_tokens, completion_tokens)
SELECT level, DATE '0001-01-01' + ((day - DATE '0001-01-01') & ~((1 << level) - 1)),
       user_id, sum(messages), sum(prompt_tokens), sum(completion_tokens)
FROM usage_days CROSS JOIN generate_series(1, 9) AS level
GROUP BY 1, 2, 3;

-- What a row of usage_days gains, its spans gain. Rows of usage_days are only
-- ever added to (and deleted with their user, as the spans are).
CREATE FUNCTION usage_spans_follow() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    added_messages integer := NEW.messages;
    added_prompt bigint := NEW.prompt_tokens;
    added_completion bigint := NEW.completion_tokens;
    since integer := NEW.day - DATE '0001-01-01';
BEGIN
    IF TG_OP = 'UPDATE' THEN
        added_messages := added_messages - OLD.messages;
        added_prompt := added_prompt - OLD.prompt_tokens;
        added_completion := added_completion - OLD.completion_tokens;
    END IF;
    IF added_messages = 0 AND added_prompt = 0 AND added_completion = 0 THEN
        RETURN NULL;
    END IF;
    INSERT INTO usage_spans AS s (level, start, user_id, messages, prompt_tokens, completion_tokens)
    SELECT level, DATE '0001-01-01' + (since & ~((1 << level) - 1)), NEW.user_id,
           added_messages, added_prompt, added_completion
    FROM generate_series(1, 9) AS level
    ORDER BY level
    ON CONFLICT (level, start, user_id) DO UPDATE
    SET messages = s.messages + excluded.messages,
        prompt_tokens = s.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = s.completion_tokens + excluded.completion_tokens;
    RETURN NULL;
END
$$;

CREATE TRIGGER usage_days_spans AFTER INSERT OR UPDATE ON usage_days
    FOR EACH ROW EXECUTE FUNCTION usage_spans_follow();
