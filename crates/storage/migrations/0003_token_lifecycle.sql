-- agentreg schema, version 3: the agent token lifecycle (expiry, revocation details).
--
-- Version 2 belongs to another change; the runner applies whichever versions a database lacks,
-- in ascending order, and does not require them to be contiguous.
--
-- Existing tokens never expire and keep no revocation details, exactly as sled reads its older
-- records, so nothing is rewritten.

ALTER TABLE agent_tokens
    -- When the token stops authenticating on its own (unix milliseconds); NULL for never.
    -- An expired token no longer counts toward the two-token limit: the create transaction
    -- counts only tokens with `NOT revoked AND (expires_at_ms IS NULL OR expires_at_ms > now)`
    -- under the agent's row lock.
    -- Contract test: an_expired_token_frees_its_slot.
    ADD COLUMN expires_at_ms BIGINT,
    -- Set once, when the token is revoked; a second revoke keeps the first details.
    -- Contract test: revoking_keeps_the_first_reason_and_expired_tokens_revoke_as_expired.
    ADD COLUMN revoked_at_ms BIGINT,
    ADD COLUMN revoked_by_user_id BIGINT,
    ADD COLUMN revoked_reason TEXT CHECK (char_length(revoked_reason) <= 255),
    -- Rotation. A rotated token is retiring: usable until its successor's first use or this
    -- deadline. At most two counted tokens plus one retiring per agent, and one successor per
    -- rotated token, hold because every rotate, create and completion locks the agent's row
    -- (SELECT ... FOR UPDATE) before reading the agent's tokens.
    -- Contract tests: concurrent_rotations_of_one_token_create_exactly_one_successor,
    -- fifty_mixed_rotations_and_creates_leave_two_counted_tokens_and_one_retiring.
    ADD COLUMN retiring_until_ms BIGINT,
    ADD COLUMN successor_id BIGINT,
    -- Set on a successor until its first use retires its predecessor (on any replica).
    -- Contract test: the_successors_first_use_retires_the_predecessor_once.
    ADD COLUMN pending_predecessor_id BIGINT;
