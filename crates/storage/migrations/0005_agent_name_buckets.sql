-- agentreg schema, version 5: deep pages of a project's agents at the cost of the first.
--
-- Offset pages (GitLab's `page`) of a project's agents are ordered by name. `LIMIT ... OFFSET`
-- walks every agent before the page, and `count(*)` every agent for the total: the last page of
-- a 120,000-agent project read 120,000 rows twice.
--
-- `agent_name_buckets` cuts each project's name order into buckets of consecutive names with
-- their counts. A page sums the counts up to the bucket that holds its offset (a few hundred rows
-- for 120,000 agents, one index range), then skips fewer than 512 agents inside that bucket; the
-- total is the sum of all counts. It is one statement, so a page and its total share a snapshot.
--
-- Writers never wait for each other: a registration or deletion only appends its change (+1 or
-- -1 for its name) to `agent_name_changes`, in its own transaction, through the trigger below
-- (whichever replica, or version of agentreg, writes the agent). A count locked and updated by
-- every registration would serialize a project's registrations on one row until each commit:
-- 3,444 registrations/s fell to 649 with eight writers on this schema's first draft.
-- Now and then (one change in 32) the writer also folds the project's pending changes into its
-- buckets, splits a bucket that reached 512 names and merges small neighbours, unless another
-- transaction is folding that project (a transaction-scoped advisory lock, tried, never waited
-- for). Readers add the pending changes to the counts of the buckets their names fall in.
--
-- Invariant: a project's buckets partition its name space (the first has `lower_name` '', below
-- every name; each `upper_name` is the next bucket's `lower_name`, NULL for the last), and in
-- every snapshot, for every bucket, `n_agents` plus the deltas of the visible pending changes
-- whose names are in [lower_name, upper_name) is the number of visible agents with such names.
-- Why it holds: an agent and its change commit together; a fold deletes the changes it sees and
-- adds them to the buckets in one statement and one transaction; a split's left count is the
-- agents minus the pending changes of the left range, read in one statement; only the holder of
-- the fold lock changes buckets, so folds, splits and merges never race.
-- Contract tests: offset_pages_match_a_sorted_list_at_bucket_boundaries,
-- offset_pages_stay_exact_after_inserts_and_deletes_in_the_middle,
-- concurrent_registrations_and_deletions_keep_every_offset_page_exact,
-- random_changes_keep_offset_pages_equal_to_a_sorted_list.
-- Half-empty pages, so that a fold's updates of counts stay on their page (HOT) and the table
-- does not bloat with old versions.
CREATE TABLE agent_name_buckets (
    project_id BIGINT NOT NULL,
    lower_name TEXT COLLATE "C" NOT NULL,
    upper_name TEXT COLLATE "C",
    n_agents BIGINT NOT NULL CHECK (n_agents >= 0),
    CONSTRAINT agent_name_buckets_pkey PRIMARY KEY (project_id, lower_name)
) WITH (fillfactor = 50);

-- A queue: every row is deleted by a fold soon after it is written, so it is vacuumed after every
-- thousand dead rows rather than after a fifth of a table that stays nearly empty.
CREATE TABLE agent_name_changes (
    id BIGINT GENERATED ALWAYS AS IDENTITY,
    project_id BIGINT NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    delta SMALLINT NOT NULL CHECK (delta IN (-1, 1))
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
CREATE INDEX agent_name_changes_project_id_name_idx ON agent_name_changes (project_id, name);

-- Merges a bucket into the one before it, if either is empty or both fit in 256 names; says
-- whether it did.
CREATE FUNCTION agent_name_buckets_merge_if_small(
    before agent_name_buckets, after agent_name_buckets
) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (before.n_agents = 0 OR after.n_agents = 0
            OR before.n_agents + after.n_agents <= 256) THEN
        RETURN false;
    END IF;
    DELETE FROM agent_name_buckets
    WHERE project_id = after.project_id AND lower_name = after.lower_name;
    UPDATE agent_name_buckets
    SET upper_name = after.upper_name, n_agents = before.n_agents + after.n_agents
    WHERE project_id = before.project_id AND lower_name = before.lower_name;
    RETURN true;
END $$;

-- Folds the project's visible pending changes into its buckets, then splits a bucket it grew to
-- 512 names and merges one it shrank into a neighbour when either is empty or both fit in 256.
-- It visits only the buckets the changes fell in. The caller holds the project's fold lock.
CREATE FUNCTION agent_name_buckets_fold(target_project_id BIGINT)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    touched_names TEXT[];
    touched_deltas BIGINT[];
    touched_idx INTEGER;
    bucket agent_name_buckets%ROWTYPE;
    neighbour agent_name_buckets%ROWTYPE;
    split_name TEXT COLLATE "C";
    n_left BIGINT;
BEGIN
    WITH folded AS (
        DELETE FROM agent_name_changes WHERE project_id = target_project_id
        RETURNING name, delta
    ), per_bucket AS (
        SELECT coalesce((
                   SELECT max(b.lower_name) FROM agent_name_buckets b
                   WHERE b.project_id = target_project_id AND b.lower_name <= f.name
               ), '' COLLATE "C") AS lower_name,
               sum(f.delta) AS delta
        FROM folded f GROUP BY 1
    ), updated AS (
        UPDATE agent_name_buckets b SET n_agents = b.n_agents + p.delta
        FROM per_bucket p
        WHERE b.project_id = target_project_id AND b.lower_name = p.lower_name
        RETURNING b.lower_name, p.delta
    ), inserted AS (
        -- The project's first bucket, at its first fold.
        INSERT INTO agent_name_buckets (project_id, lower_name, upper_name, n_agents)
        SELECT target_project_id, lower_name, NULL, delta FROM per_bucket
        WHERE lower_name NOT IN (SELECT lower_name FROM updated)
        RETURNING lower_name, n_agents AS delta
    )
    SELECT array_agg(lower_name), array_agg(delta) INTO touched_names, touched_deltas
    FROM (SELECT * FROM updated UNION ALL SELECT * FROM inserted) touched;

    FOR touched_idx IN 1 .. coalesce(array_length(touched_names, 1), 0) LOOP
        SELECT * INTO bucket FROM agent_name_buckets
        WHERE project_id = target_project_id AND lower_name = touched_names[touched_idx];
        CONTINUE WHEN NOT FOUND;  -- merged into a bucket visited before
        IF touched_deltas[touched_idx] < 0 THEN
            SELECT * INTO neighbour FROM agent_name_buckets
            WHERE project_id = target_project_id AND lower_name < bucket.lower_name
            ORDER BY lower_name DESC LIMIT 1;
            IF FOUND AND agent_name_buckets_merge_if_small(neighbour, bucket) THEN
                CONTINUE;
            END IF;
            SELECT * INTO neighbour FROM agent_name_buckets
            WHERE project_id = target_project_id AND lower_name = bucket.upper_name;
            IF FOUND THEN
                PERFORM agent_name_buckets_merge_if_small(bucket, neighbour);
            END IF;
            CONTINUE;
        END IF;
        -- A bucket of 512 or more loses 256 names at a time to a new bucket after them.
        WHILE bucket.n_agents >= 512 LOOP
            SELECT a.name INTO split_name FROM agents a
            WHERE a.project_id = target_project_id AND a.name >= bucket.lower_name
              AND (bucket.upper_name IS NULL OR a.name < bucket.upper_name)
            ORDER BY a.name OFFSET 256 LIMIT 1;
            EXIT WHEN split_name IS NULL;
            -- One statement, one snapshot: the agents of the left part less its pending changes.
            SELECT (SELECT count(*) FROM agents a
                    WHERE a.project_id = target_project_id
                      AND a.name >= bucket.lower_name AND a.name < split_name)
                 - (SELECT coalesce(sum(c.delta), 0) FROM agent_name_changes c
                    WHERE c.project_id = target_project_id
                      AND c.name >= bucket.lower_name AND c.name < split_name)
            INTO n_left;
            UPDATE agent_name_buckets SET upper_name = split_name, n_agents = n_left
            WHERE project_id = target_project_id AND lower_name = bucket.lower_name;
            INSERT INTO agent_name_buckets (project_id, lower_name, upper_name, n_agents)
            VALUES (target_project_id, split_name, bucket.upper_name, bucket.n_agents - n_left);
            bucket.lower_name := split_name;
            bucket.n_agents := bucket.n_agents - n_left;
        END LOOP;
    END LOOP;
END $$;

-- Counts every agent into buckets of 256 names at once, replacing all buckets and pending
-- changes: the migration's backfill, and a restore's after it has inserted every agent.
CREATE FUNCTION agent_name_buckets_rebuild() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM agent_name_changes;
    DELETE FROM agent_name_buckets;
    INSERT INTO agent_name_buckets (project_id, lower_name, upper_name, n_agents)
    SELECT project_id, lower_name,
           lead(lower_name) OVER (PARTITION BY project_id ORDER BY lower_name),
           n_agents
    FROM (
        SELECT project_id,
               (CASE WHEN bucket_idx = 0 THEN '' ELSE min(name) END) COLLATE "C" AS lower_name,
               count(*) AS n_agents
        FROM (
            SELECT project_id, name,
                   (row_number() OVER (PARTITION BY project_id ORDER BY name) - 1) / 256
                       AS bucket_idx
            FROM agents
        ) numbered
        GROUP BY project_id, bucket_idx
    ) grouped;
END $$;

-- Records an agent's change of name (insert, delete, or rename) and folds one change in 32.
-- A restore sets `agentreg.rebuilding_agent_name_buckets` while it inserts agents in bulk, then
-- counts them all with agent_name_buckets_rebuild: changes recorded and folded one by one in one
-- transaction would cost it time quadratic in the number of agents.
CREATE FUNCTION agents_record_name_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    change_id BIGINT;
    changed_project_id BIGINT;
BEGIN
    IF current_setting('agentreg.rebuilding_agent_name_buckets', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO agent_name_changes (project_id, name, delta)
        VALUES (OLD.project_id, OLD.name, -1) RETURNING id INTO change_id;
        changed_project_id := OLD.project_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO agent_name_changes (project_id, name, delta)
        VALUES (NEW.project_id, NEW.name, 1) RETURNING id INTO change_id;
        changed_project_id := NEW.project_id;
    END IF;
    IF change_id % 32 = 0 AND pg_try_advisory_xact_lock(
        hashtextextended('agentreg.agent_name_buckets', changed_project_id)
    ) THEN
        PERFORM agent_name_buckets_fold(changed_project_id);
    END IF;
    RETURN NULL;
END $$;

-- Agents written while this migration runs wait for it, so the buckets count every agent.
LOCK TABLE agents IN SHARE ROW EXCLUSIVE MODE;

SELECT agent_name_buckets_rebuild();

CREATE TRIGGER agents_record_name_change
    AFTER INSERT OR DELETE OR UPDATE OF project_id, name ON agents
    FOR EACH ROW EXECUTE FUNCTION agents_record_name_change();

-- Keyset pages by id within a project (keyset pages by name use agents_project_id_name_key).
CREATE INDEX agents_project_id_id_idx ON agents (project_id, id);
