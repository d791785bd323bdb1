-- The initial schema: accounts, chats and their messages, uploaded files,
-- one-time codes and refresh-token sessions.
--
-- Emails and usernames are unique regardless of case (unique indexes on
-- lower(...)); the service stores emails lower-cased, but the database does
-- not rely on it. Constraint and index names are part of the contract: the
-- adapters turn a unique violation into ConflictError(field=...) by name.

CREATE TABLE users (
    id              bigint GENERATED ALWAYS AS IDENTITY,
    email           text        NOT NULL,
    username        text        NOT NULL,
    full_name       text,
    password_hash   text        NOT NULL,
    is_active       boolean     NOT NULL DEFAULT true,
    is_verified     boolean     NOT NULL DEFAULT false,
    is_admin        boolean     NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_login_at   timestamptz,
    last_seen_at    timestamptz,
    deleted_at      timestamptz,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_email_not_blank CHECK (email <> ''),
    CONSTRAINT users_username_not_blank CHECK (username <> '')
);

CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
-- The admin statistics count recent sign-ups.
CREATE INDEX users_created_at_idx ON users (created_at);

CREATE TABLE chats (
    id              bigint GENERATED ALWAYS AS IDENTITY,
    user_id         bigint      NOT NULL,
    title           text,
    model           text        NOT NULL,
    system_prompt   text,
    pinned          boolean     NOT NULL DEFAULT false,
    archived        boolean     NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    message_count   integer     NOT NULL DEFAULT 0,
    CONSTRAINT chats_pkey PRIMARY KEY (id),
    CONSTRAINT chats_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT chats_message_count_check CHECK (message_count >= 0)
);

-- The chat list: one user's chats, archived or not, in the list's own order,
-- so keyset pagination is an index range scan.
CREATE INDEX chats_user_list_idx
    ON chats (user_id, archived, pinned DESC, updated_at DESC, id DESC);

CREATE TABLE messages (
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    chat_id             bigint      NOT NULL,
    user_id             bigint      NOT NULL,
    role                text        NOT NULL,
    content             text        NOT NULL,
    file_ids            bigint[]    NOT NULL DEFAULT '{}',
    status              text        NOT NULL DEFAULT 'complete',
    model               text,
    prompt_tokens       integer,
    completion_tokens   integer,
    created_at          timestamptz NOT NULL DEFAULT now(),
    search_vector       tsvector    NOT NULL
        GENERATED ALWAYS AS (to_tsvector('english'::regconfig, content)) STORED,
    CONSTRAINT messages_pkey PRIMARY KEY (id),
    CONSTRAINT messages_chat_id_fkey FOREIGN KEY (chat_id) REFERENCES chats (id) ON DELETE CASCADE,
    CONSTRAINT messages_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT messages_role_check CHECK (role IN ('user', 'assistant')),
    CONSTRAINT messages_status_check CHECK (status IN ('complete', 'failed')),
    CONSTRAINT messages_file_ids_check CHECK (array_position(file_ids, NULL) IS NULL),
    CONSTRAINT messages_prompt_tokens_check CHECK (prompt_tokens >= 0),
    CONSTRAINT messages_completion_tokens_check CHECK (completion_tokens >= 0)
);

-- A chat's history, paged by id.
CREATE INDEX messages_chat_id_idx ON messages (chat_id, id);
-- Search is scoped to the caller; this also serves the cascade from users.
CREATE INDEX messages_user_id_idx ON messages (user_id);
-- Full-text search: websearch_to_tsquery('english', ...) @@ search_vector.
CREATE INDEX messages_search_idx ON messages USING gin (search_vector);

CREATE TABLE file_uploads (
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    user_id             bigint      NOT NULL,
    filename            text        NOT NULL,
    original_filename   text        NOT NULL,
    content_type        text        NOT NULL,
    file_size           bigint      NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT file_uploads_pkey PRIMARY KEY (id),
    CONSTRAINT file_uploads_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT file_uploads_filename_key UNIQUE (filename),
    CONSTRAINT file_uploads_file_size_check CHECK (file_size >= 0)
);

-- A user's files newest first, and the sum of their sizes.
CREATE INDEX file_uploads_user_id_idx ON file_uploads (user_id, id);

-- Codes are issued to an email before any account exists, so no user_id.
CREATE TABLE otp_verifications (
    id              bigint GENERATED ALWAYS AS IDENTITY,
    email           text        NOT NULL,
    purpose         text        NOT NULL,
    code_hash       text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    expires_at      timestamptz NOT NULL,
    consumed_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT otp_verifications_pkey PRIMARY KEY (id),
    CONSTRAINT otp_verifications_purpose_check
        CHECK (purpose IN ('email_verification', 'password_reset')),
    CONSTRAINT otp_verifications_attempts_check CHECK (attempts >= 0)
);

-- The newest code for an email and purpose.
CREATE INDEX otp_verifications_email_idx
    ON otp_verifications (lower(email), purpose, id DESC);
-- The hourly cap counts an email's recent codes of any purpose.
CREATE INDEX otp_verifications_email_created_idx
    ON otp_verifications (lower(email), created_at);
-- Purging expired codes.
CREATE INDEX otp_verifications_expires_at_idx ON otp_verifications (expires_at);

CREATE TABLE user_sessions (
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    user_id             bigint      NOT NULL,
    refresh_token_hash  text        NOT NULL,
    user_agent          text,
    ip                  text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_used_at        timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    revoked_at          timestamptz,
    CONSTRAINT user_sessions_pkey PRIMARY KEY (id),
    CONSTRAINT user_sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);

-- A user's sessions that may still be live (the sessions page, revoke-all).
CREATE INDEX user_sessions_live_idx ON user_sessions (user_id, id DESC) WHERE revoked_at IS NULL;
-- The cascade from users covers revoked sessions too.
CREATE INDEX user_sessions_user_id_idx ON user_sessions (user_id);
