-- agentreg schema, version 1: every record the sled backend keeps, one table per kind.
--
-- Ids come from one sequence per kind, named after the sled counter they mirror, so they are
-- monotonic and never reused (a rolled-back insert leaves a gap, as on sled). A snapshot restore
-- sets each sequence to the snapshot's counter.
-- Contract test: ids_grow_and_are_never_reused.
--
-- Secrets: token secrets are stored only as argon2 PHC strings (`secret_hash`, checked below) and
-- private keys only sealed by the app (`sealed_*` bytea). Nothing secret is stored in clear.
--
-- Projects and users are never deleted, and, as on sled, agents and members name their project
-- by id without a foreign key: the app checks the project before it creates either.

CREATE SEQUENCE users_id_seq AS BIGINT MINVALUE 1;
CREATE SEQUENCE personal_access_tokens_id_seq AS BIGINT MINVALUE 1;
CREATE SEQUENCE projects_id_seq AS BIGINT MINVALUE 1;
CREATE SEQUENCE agents_id_seq AS BIGINT MINVALUE 1;
CREATE SEQUENCE agent_tokens_id_seq AS BIGINT MINVALUE 1;
CREATE SEQUENCE url_configurations_id_seq AS BIGINT MINVALUE 1;
CREATE SEQUENCE audit_events_id_seq AS BIGINT MINVALUE 1;
-- Orders an agent's token lists as sled's token set does: a token moves to the end of the
-- revoked list when it is revoked.
CREATE SEQUENCE agent_token_list_positions AS BIGINT MINVALUE 1;

CREATE TABLE users (
    id BIGINT PRIMARY KEY DEFAULT nextval('users_id_seq'),
    username TEXT NOT NULL,
    -- Rust's `to_lowercase` of the username, as sled's `usernames` index keys it.
    username_folded TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    -- Rust's `to_lowercase` of the e-mail, as sled's `user_emails` index keys it.
    email_folded TEXT NOT NULL,
    is_admin BOOLEAN NOT NULL,
    created_at_ms BIGINT NOT NULL
);
ALTER SEQUENCE users_id_seq OWNED BY users.id;
-- Invariant: usernames are unique case-insensitively.
-- Contract test: usernames_and_emails_are_unique_case_insensitively.
CREATE UNIQUE INDEX users_username_folded_key ON users (username_folded);
-- Invariant: e-mails are unique case-insensitively.
-- Contract test: usernames_and_emails_are_unique_case_insensitively.
CREATE UNIQUE INDEX users_email_folded_key ON users (email_folded);

CREATE TABLE personal_access_tokens (
    id BIGINT PRIMARY KEY DEFAULT nextval('personal_access_tokens_id_seq'),
    user_id BIGINT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    scopes TEXT[] NOT NULL,
    expires_at TEXT,
    revoked BOOLEAN NOT NULL,
    handle TEXT NOT NULL,
    secret_hash TEXT NOT NULL CHECK (secret_hash LIKE '$argon2%'),
    created_at_ms BIGINT NOT NULL
);
ALTER SEQUENCE personal_access_tokens_id_seq OWNED BY personal_access_tokens.id;
-- Invariant: a handle names at most one token, so authentication finds it with one lookup.
-- Contract test: a_personal_access_token_is_found_by_its_handle_with_its_user_and_hash.
CREATE UNIQUE INDEX personal_access_tokens_handle_key ON personal_access_tokens (handle);

CREATE TABLE projects (
    id BIGINT PRIMARY KEY DEFAULT nextval('projects_id_seq'),
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    description TEXT,
    owner_id BIGINT NOT NULL REFERENCES users (id),
    -- Rust's `to_lowercase` of `owner_username/path`, as sled's `project_paths` index keys it.
    full_path_folded TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
ALTER SEQUENCE projects_id_seq OWNED BY projects.id;
-- Invariant: project full paths are unique case-insensitively.
-- Contract test: project_paths_are_unique_case_insensitively_per_namespace.
CREATE UNIQUE INDEX projects_full_path_folded_key ON projects (full_path_folded);

CREATE TABLE members (
    project_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id),
    access_level BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    -- Invariant: a user is a member of a project at most once.
    -- Contract test: members_are_added_once_and_only_for_existing_users.
    CONSTRAINT members_pkey PRIMARY KEY (project_id, user_id)
);

CREATE TABLE agents (
    id BIGINT PRIMARY KEY DEFAULT nextval('agents_id_seq'),
    project_id BIGINT NOT NULL,
    -- Byte order, as sled's `agent_names` index orders the agent list.
    name TEXT COLLATE "C" NOT NULL,
    created_by_user_id BIGINT,
    created_at_ms BIGINT NOT NULL,
    -- Changes when the agent's URL configuration is created or deleted.
    updated_at_ms BIGINT NOT NULL
);
ALTER SEQUENCE agents_id_seq OWNED BY agents.id;
-- Invariant: agent names are unique per project; the index also pages the list by name.
-- Contract tests: agent_names_are_unique_within_a_project,
-- concurrent_creates_of_one_name_create_exactly_one_agent,
-- agents_are_paged_in_byte_order_of_their_names.
CREATE UNIQUE INDEX agents_project_id_name_key ON agents (project_id, name);

CREATE TABLE agent_tokens (
    id BIGINT PRIMARY KEY DEFAULT nextval('agent_tokens_id_seq'),
    -- Invariant: deleting an agent deletes its tokens (active and revoked).
    -- Contract test:
    -- deleting_an_agent_removes_its_tokens_and_url_configuration_and_frees_its_name.
    agent_id BIGINT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    project_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    revoked BOOLEAN NOT NULL,
    created_by_user_id BIGINT,
    created_at_ms BIGINT NOT NULL,
    handle TEXT NOT NULL,
    secret_hash TEXT NOT NULL CHECK (secret_hash LIKE '$argon2%'),
    -- Only ever raised (GREATEST), so a late batch never moves it backwards.
    -- Contract test: recorded_token_use_never_moves_backwards.
    last_used_at_ms BIGINT,
    list_position BIGINT NOT NULL DEFAULT nextval('agent_token_list_positions')
);
ALTER SEQUENCE agent_tokens_id_seq OWNED BY agent_tokens.id;
-- Invariant: a handle names at most one token, so authentication finds it with one lookup.
-- Contract test: a_token_is_found_by_its_handle_with_its_hash.
CREATE UNIQUE INDEX agent_tokens_handle_key ON agent_tokens (handle);
-- At most two active tokens per agent is enforced by locking the agent's row (SELECT ... FOR
-- UPDATE) in the create transaction before counting its active tokens.
-- Contract test: concurrent_token_creates_never_exceed_two_active_tokens.
CREATE INDEX agent_tokens_agent_id_idx ON agent_tokens (agent_id, list_position);

CREATE TABLE url_configurations (
    id BIGINT PRIMARY KEY DEFAULT nextval('url_configurations_id_seq'),
    -- Invariant: deleting an agent deletes its URL configuration.
    -- Contract test:
    -- deleting_an_agent_removes_its_tokens_and_url_configuration_and_frees_its_name.
    agent_id BIGINT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    project_id BIGINT NOT NULL,
    url TEXT NOT NULL,
    ca_cert TEXT,
    tls_host TEXT,
    auth_mode TEXT NOT NULL CHECK (auth_mode IN ('jwt', 'mtls')),
    public_key BYTEA,
    sealed_private_key BYTEA,
    client_cert TEXT,
    sealed_client_key BYTEA,
    created_by_user_id BIGINT,
    created_at_ms BIGINT NOT NULL,
    CONSTRAINT url_configurations_auth_check CHECK (
        (auth_mode = 'jwt' AND public_key IS NOT NULL AND sealed_private_key IS NOT NULL
            AND client_cert IS NULL AND sealed_client_key IS NULL)
        OR (auth_mode = 'mtls' AND client_cert IS NOT NULL AND sealed_client_key IS NOT NULL
            AND public_key IS NULL AND sealed_private_key IS NULL)
    )
);
ALTER SEQUENCE url_configurations_id_seq OWNED BY url_configurations.id;
-- Invariant: an agent has at most one URL configuration.
-- Contract tests: an_agent_has_at_most_one_url_configuration,
-- concurrent_url_configuration_creates_create_exactly_one.
CREATE UNIQUE INDEX url_configurations_agent_id_key ON url_configurations (agent_id);

CREATE TABLE audit_events (
    id BIGINT PRIMARY KEY DEFAULT nextval('audit_events_id_seq'),
    -- The project's id, or 0 for instance-wide events (no project has id 0).
    project_id BIGINT NOT NULL,
    author_id BIGINT,
    entity_id BIGINT NOT NULL,
    entity_type TEXT NOT NULL,
    -- JSON object text, given back verbatim.
    details TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
ALTER SEQUENCE audit_events_id_seq OWNED BY audit_events.id;
-- Each event is inserted in the transaction of the change it records.
-- Contract tests: an_audited_create_writes_its_event_with_the_change,
-- refused_writes_record_no_event.
CREATE INDEX audit_events_project_id_idx ON audit_events (project_id, id DESC);
