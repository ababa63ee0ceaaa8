-- agentreg schema, version 4: rotated successors' secrets held for the rotation retrieve window.
--
-- A row holds a successor's secret sealed by the app under the instance key (never in clear),
-- only until `expires_at_ms`; it is deleted when taken (at most once: the DELETE ... RETURNING
-- decides) and when the window ends. It is never part of a snapshot.
-- Contract test: a_held_rotation_secret_is_taken_once_by_its_rotator_within_the_window.
CREATE TABLE rotation_retrievals (
    predecessor_id BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    successor_id BIGINT NOT NULL,
    sealed_secret BYTEA NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    CONSTRAINT rotation_retrievals_pkey PRIMARY KEY (predecessor_id, idempotency_key)
);
