-- The engine's hot-path statements, each under a named header with its purpose.
-- Every state change is one conditional statement: it moves a row only from the state it
-- expects, so a redelivered or stale message changes nothing.

-- pass_start --
-- Open a pass: take the team's pass lock (false: another pass holds it), and read the team share-locked (a pause waits for the pass) with its manager. The pass commits without waiting for its WAL flush: an assignment lost in a crash leaves its task pending, and an entry emitted for it is refused by claim.
SELECT pg_try_advisory_xact_lock(hashtextextended('pass:' || CAST(:team_id AS text), 0)) AS locked,
       t.status, t.status_reason, t.token_budget, m.id AS manager_id,
       m.agent_id AS manager_agent_id,
       set_config('synchronous_commit', 'off', true) AS relaxed
FROM teams t
LEFT JOIN LATERAL (
    SELECT id, agent_id FROM team_members
    WHERE team_id = t.id AND role = 'manager'
    ORDER BY joined_at, id
    LIMIT 1
) m ON true
WHERE t.id = :team_id
FOR SHARE OF t;

-- workers_and_ready_tasks --
-- What a pass works on, in one round trip: the workers that can take work now (not locked: only passes raise a load, so what this reads stays an upper bound until assign re-checks it), and the team's assignable tasks best first, no more than the free capacity (reads ix_tasks_ready in order).
WITH workers AS (
    SELECT id, agent_id, specialization, skills, current_workload, max_concurrent_tasks,
           tasks_completed, tasks_failed, joined_at
    FROM team_members
    WHERE team_id = :team_id
      AND role = 'worker'
      AND status <> 'offline'
      AND current_workload < max_concurrent_tasks
), ready AS (
    SELECT id, title, priority, required_skills, created_at
    FROM tasks
    WHERE team_id = :team_id
      AND status = 'pending'
      AND NOT is_summary
      AND (not_before IS NULL OR not_before <= now())
    ORDER BY priority DESC, created_at, id
    LIMIT (SELECT coalesce(sum(max_concurrent_tasks - current_workload), 0) FROM workers)
)
SELECT
    (SELECT coalesce(json_agg(w ORDER BY w.current_workload, w.joined_at, w.id), '[]')
     FROM workers w) AS workers,
    (SELECT coalesce(json_agg(r ORDER BY r.priority DESC, r.created_at, r.id), '[]')
     FROM ready r) AS ready;

-- assign --
-- Assign the chosen tasks that are still pending, each under a fresh assignment id (its stream entry carries it), count them on their workers (locked in id order; fits is false if a worker went offline or lost capacity meanwhile: roll back), log each assignment and its event, in one statement.
WITH chosen AS (
    SELECT *
    FROM unnest(
        CAST(:task_ids AS uuid[]), CAST(:worker_ids AS uuid[]), CAST(:agent_ids AS text[]),
        CAST(:scores AS float8[]), CAST(:breakdowns AS jsonb[]), CAST(:explanations AS text[])
    ) AS c(task_id, worker_id, agent_id, score, breakdown, explanation)
), moved AS (
    UPDATE tasks t
    SET status = 'assigned', assigned_to = c.worker_id, assigned_by = CAST(:manager_id AS uuid),
        claim = NULL, assignment = gen_random_uuid(), updated_at = now()
    FROM chosen c
    WHERE t.id = c.task_id AND t.status = 'pending' AND NOT t.is_summary
    RETURNING t.id, t.assigned_to, t.priority, t.assignment
), workers AS (
    SELECT id FROM team_members
    WHERE id IN (SELECT assigned_to FROM moved)
    ORDER BY id
    FOR UPDATE
), loaded AS (
    UPDATE team_members m
    SET current_workload = m.current_workload + n.added,
        status = CASE WHEN m.status = 'offline' THEN m.status ELSE 'active' END,
        last_active_at = now()
    FROM (SELECT assigned_to, count(*) AS added FROM moved GROUP BY assigned_to) n
    JOIN workers w ON w.id = n.assigned_to
    WHERE m.id = n.assigned_to
      AND m.status <> 'offline'
      AND m.current_workload + n.added <= m.max_concurrent_tasks
    RETURNING m.id
), logged AS (
    INSERT INTO messages (team_id, from_agent_id, to_agent_id, task_id, worker_id,
                          message_type, content, metadata)
    SELECT CAST(:team_id AS uuid), :manager_agent_id, c.agent_id, c.task_id, c.worker_id,
           'task_assignment', c.explanation,
           jsonb_build_object('score', c.score, 'breakdown', c.breakdown)
    FROM chosen c JOIN moved m ON m.id = c.task_id
    RETURNING id
), evented AS (
    INSERT INTO task_events (team_id, task_id, kind, data)
    SELECT CAST(:team_id AS uuid), c.task_id, 'task.assigned',
           jsonb_build_object('worker_id', c.worker_id::text, 'score', c.score)
    FROM chosen c JOIN moved m ON m.id = c.task_id
)
SELECT m.id, m.assigned_to, m.priority, m.assignment, c.score,
       (SELECT count(*) FROM loaded) = (SELECT count(DISTINCT assigned_to) FROM moved) AS fits
FROM moved m JOIN chosen c ON c.task_id = m.id;

-- claim --
-- Take assigned tasks (parallel arrays) for execution by their workers, each for the assignment its entry names (null: any, for an entry emitted before entries named it); a new claim fences out any earlier holder, and an entry of an earlier assignment of the task takes nothing. Returns each agent's profile, and logs first starts. Commits without waiting for its WAL flush: the completion's synchronous commit flushes it too, and a claim lost in a crash only makes that completion stale (the task, still assigned, is re-emitted).
WITH wanted AS (
    SELECT *
    FROM unnest(
        CAST(:task_ids AS uuid[]), CAST(:worker_ids AS uuid[]), CAST(:claims AS text[]),
        CAST(:assignments AS uuid[])
    ) AS w(task_id, worker_id, claim, assignment)
), old AS (
    SELECT t.id, t.status FROM tasks t
    WHERE t.id = ANY(CAST(:task_ids AS uuid[]))
    ORDER BY t.id
    FOR UPDATE
), claimed AS (
    UPDATE tasks t
    SET status = CASE WHEN old.status = 'review' THEN 'review'::task_status ELSE 'in_progress' END,
        attempts = CASE WHEN old.status = 'review' THEN t.attempts ELSE t.attempts + 1 END,
        start_time = coalesce(t.start_time, now()),
        claim = w.claim,
        updated_at = now()
    FROM old, wanted w, team_members m
    WHERE t.id = old.id
      AND w.task_id = t.id
      AND m.id = t.assigned_to
      AND t.assigned_to = w.worker_id
      AND (w.assignment IS NULL OR t.assignment = w.assignment)
      AND t.status IN ('assigned', 'in_progress', 'review')
    RETURNING old.status AS previous_status, t.*,
        m.agent_id AS agent_id, m.role AS agent_role, m.specialization AS agent_specialization,
        m.skills AS agent_skills,
        EXISTS (SELECT 1 FROM task_dependencies d WHERE d.task_id = t.id) AS has_dependencies
), started AS (
    INSERT INTO task_events (team_id, task_id, kind, data)
    SELECT team_id, id, 'task.started', jsonb_build_object('worker_id', assigned_to::text)
    FROM claimed WHERE previous_status = 'assigned'
)
SELECT claimed.*, set_config('synchronous_commit', 'off', true) AS relaxed FROM claimed;

-- lost_claims --
-- Which of the runs (task_ids[i] under claims[i]) are no longer theirs to finish: the task was cancelled, failed or taken by another claim meanwhile.
SELECT r.id
FROM unnest(CAST(:task_ids AS uuid[]), CAST(:claims AS text[])) AS r(id, claim)
LEFT JOIN tasks t
    ON t.id = r.id AND t.claim = r.claim AND t.status IN ('in_progress', 'review')
WHERE t.id IS NULL;

-- dependency_outputs --
-- What the dependencies of the claimed tasks produced, for their agents (first completed first).
SELECT d.task_id AS for_task, t.id, t.title, t.output_data, t.completion_time
FROM task_dependencies d JOIN tasks t ON t.id = d.depends_on_task_id
WHERE d.task_id = ANY(CAST(:task_ids AS uuid[]))
ORDER BY d.task_id, t.completion_time NULLS LAST, t.created_at;

-- start_ancestors --
-- Show summary tasks as in progress once any task below them starts.
WITH RECURSIVE up(id) AS (
    SELECT parent_task_id FROM tasks
    WHERE id = ANY(CAST(:task_ids AS uuid[])) AND parent_task_id IS NOT NULL
    UNION
    SELECT t.parent_task_id FROM tasks t JOIN up ON t.id = up.id WHERE t.parent_task_id IS NOT NULL
)
UPDATE tasks SET status = 'in_progress', start_time = coalesce(start_time, now()), updated_at = now()
WHERE id IN (SELECT id FROM up) AND status = 'pending'
RETURNING id;

-- submit_for_review --
-- Record the output of a task with acceptance criteria and hand it to the reviewer.
WITH moved AS (
    UPDATE tasks
    SET status = 'review', output_data = CAST(:output AS jsonb),
        actual_tokens = coalesce(actual_tokens, 0) + :tokens, cost = cost + :cost,
        updated_at = now()
    WHERE id = :task_id AND claim = :claim AND status = 'in_progress'
    RETURNING id, assigned_to
)
UPDATE team_members m
SET total_tokens_used = total_tokens_used + :tokens, total_cost = total_cost + :cost,
    last_active_at = now()
FROM moved WHERE m.id = moved.assigned_to
RETURNING moved.id;

-- send_back --
-- The reviewer rejected the output: count a revision and execute again with the feedback.
UPDATE tasks
SET status = 'in_progress', revision_count = revision_count + 1, review_feedback = :feedback,
    updated_at = now()
WHERE id = :task_id AND claim = :claim AND status = 'review'
RETURNING revision_count;

-- complete --
-- Finish tasks (parallel arrays): completed, each outcome counted once on its worker (members locked in id order), its load released, the completion logged.
WITH finishing AS (
    SELECT *
    FROM unnest(
        CAST(:task_ids AS uuid[]), CAST(:claims AS text[]), CAST(:from_statuses AS task_status[]),
        CAST(:outputs AS jsonb[]), CAST(:tokens AS bigint[]), CAST(:costs AS numeric[])
    ) AS f(task_id, claim, from_status, output, tokens, cost)
), done AS (
    UPDATE tasks t
    SET status = 'completed', completion_time = now(),
        output_data = coalesce(f.output, t.output_data),
        actual_tokens = coalesce(t.actual_tokens, 0) + f.tokens, cost = t.cost + f.cost,
        error_message = NULL, claim = NULL, not_before = NULL, updated_at = now()
    FROM finishing f
    WHERE t.id = f.task_id AND t.claim = f.claim AND t.status = f.from_status
    RETURNING t.id, t.team_id, t.parent_task_id, t.assigned_to, f.tokens, f.cost
), workers AS (
    SELECT id FROM team_members
    WHERE id IN (SELECT assigned_to FROM done)
    ORDER BY id
    FOR UPDATE
), counted AS (
    UPDATE team_members m
    SET current_workload = m.current_workload - n.finished,
        tasks_completed = m.tasks_completed + n.finished,
        total_tokens_used = m.total_tokens_used + n.tokens,
        total_cost = m.total_cost + n.cost,
        status = CASE WHEN m.status = 'active' AND m.current_workload = n.finished THEN 'idle'
                      ELSE m.status END,
        last_active_at = now()
    FROM (SELECT assigned_to, count(*) AS finished, sum(tokens) AS tokens, sum(cost) AS cost
          FROM done GROUP BY assigned_to) n
    JOIN workers w ON w.id = n.assigned_to
    WHERE m.id = n.assigned_to
    RETURNING m.id
), logged AS (
    INSERT INTO task_events (team_id, task_id, kind, data)
    SELECT team_id, id, 'task.completed', jsonb_build_object('worker_id', assigned_to::text)
    FROM done
)
SELECT id, team_id, parent_task_id, assigned_to FROM done;

-- fail --
-- Fail a task for good (:claim NULL: whoever holds it): counted once on its worker, its load released.
WITH gone AS (
    UPDATE tasks
    SET status = 'failed', completion_time = now(), error_message = :error,
        actual_tokens = coalesce(actual_tokens, 0) + :tokens, cost = cost + :cost,
        claim = NULL, updated_at = now()
    WHERE id = :task_id AND (CAST(:claim AS text) IS NULL OR claim = :claim)
      AND status IN ('assigned', 'in_progress', 'review')
    RETURNING id, team_id, parent_task_id, assigned_to
), counted AS (
    UPDATE team_members m
    SET current_workload = m.current_workload - 1,
        tasks_failed = m.tasks_failed + 1,
        total_tokens_used = m.total_tokens_used + :tokens,
        total_cost = m.total_cost + :cost,
        status = CASE WHEN m.status = 'active' AND m.current_workload = 1 THEN 'idle'
                      ELSE m.status END,
        last_active_at = now()
    FROM gone WHERE m.id = gone.assigned_to
    RETURNING m.id
)
SELECT id, team_id, parent_task_id, assigned_to FROM gone;

-- retry_later --
-- An attempt failed (its run or its review) but attempts remain: back to pending after a
-- backoff, its load released.
WITH back AS (
    UPDATE tasks t
    SET status = 'pending', assigned_to = NULL, claim = NULL, error_message = :error,
        not_before = now() + make_interval(secs => :backoff),
        actual_tokens = coalesce(t.actual_tokens, 0) + :tokens, cost = t.cost + :cost,
        updated_at = now()
    FROM (SELECT id, assigned_to FROM tasks WHERE id = :task_id FOR UPDATE) old
    WHERE t.id = old.id AND t.claim = :claim AND t.status IN ('in_progress', 'review')
    RETURNING t.id, t.team_id, old.assigned_to AS worker_id
), released AS (
    UPDATE team_members m
    SET current_workload = m.current_workload - 1,
        total_tokens_used = m.total_tokens_used + :tokens,
        total_cost = m.total_cost + :cost,
        status = CASE WHEN m.status = 'active' AND m.current_workload = 1 THEN 'idle'
                      ELSE m.status END
    FROM back WHERE m.id = back.worker_id
    RETURNING m.id
)
SELECT id, team_id, worker_id FROM back;

-- dependents_met --
-- Tasks completed: each task depending on them has that many unmet dependencies fewer, and a blocked one left with none, under a parent not blocked, is pending again with its task.unblocked event (after: the first of the completed tasks it waited for), in one statement. Returns every task counted down, whether it was freed, and whether it is a summary task (a freed one's waiting subtasks go through free_subtasks).
WITH met AS (
    SELECT d.task_id, count(*) AS met, min(d.depends_on_task_id::text) AS after
    FROM task_dependencies d
    WHERE d.depends_on_task_id = ANY(CAST(:task_ids AS uuid[]))
    GROUP BY d.task_id
), counted AS (
    UPDATE tasks t
    SET unmet_dependencies = greatest(t.unmet_dependencies - m.met, 0),
        status = CASE
            WHEN t.status = 'blocked' AND t.unmet_dependencies <= m.met
                 AND NOT EXISTS (
                     SELECT 1 FROM tasks p WHERE p.id = t.parent_task_id AND p.status = 'blocked'
                 )
            THEN 'pending'::task_status ELSE t.status END,
        updated_at = now()
    FROM met m
    WHERE t.id = m.task_id AND t.unmet_dependencies > 0
    -- Freed: pending now, from blocked (a task waiting for a dependency is never pending).
    RETURNING t.id, t.team_id, t.is_summary, m.after, t.status = 'pending' AS freed
), logged AS (
    INSERT INTO task_events (team_id, task_id, kind, data)
    SELECT team_id, id, 'task.unblocked', jsonb_build_object('after', after)
    FROM counted WHERE freed
    ORDER BY id
)
SELECT id, is_summary, after, freed FROM counted ORDER BY id;

-- free_subtasks --
-- Summary tasks just freed: their blocked subtasks with nothing to wait for become pending, with the waiting tasks below them.
WITH RECURSIVE freed(id) AS (
    SELECT c.id FROM tasks c
    WHERE c.parent_task_id = ANY(CAST(:task_ids AS uuid[]))
      AND c.status = 'blocked' AND c.unmet_dependencies = 0
    UNION
    SELECT c.id FROM tasks c JOIN freed f ON c.parent_task_id = f.id
    WHERE c.status = 'blocked' AND c.unmet_dependencies = 0
)
UPDATE tasks SET status = 'pending', updated_at = now()
WHERE id IN (SELECT id FROM freed) AND status = 'blocked'
RETURNING id;

-- free_tasks --
-- Blocked tasks with nothing left to wait for become pending, with the waiting tasks below them.
WITH RECURSIVE freed(id) AS (
    SELECT t.id
    FROM tasks t LEFT JOIN tasks p ON p.id = t.parent_task_id
    WHERE t.id = ANY(CAST(:task_ids AS uuid[])) AND t.status = 'blocked'
      AND t.unmet_dependencies = 0 AND (p.id IS NULL OR p.status <> 'blocked')
    UNION
    SELECT c.id FROM tasks c JOIN freed f ON c.parent_task_id = f.id
    WHERE c.status = 'blocked' AND c.unmet_dependencies = 0
)
UPDATE tasks SET status = 'pending', updated_at = now()
WHERE id IN (SELECT id FROM freed) AND status = 'blocked'
RETURNING id, is_summary;

-- block_tasks --
-- Tasks that gained an unmet dependency (:task_ids) wait, with the pending tasks below them, each logging a task.blocked event carrying :data.
WITH RECURSIVE held(id) AS (
    SELECT id FROM tasks WHERE id = ANY(CAST(:task_ids AS uuid[])) AND status = 'pending'
    UNION
    SELECT c.id FROM tasks c JOIN held h ON c.parent_task_id = h.id WHERE c.status = 'pending'
), blocked AS (
    UPDATE tasks SET status = 'blocked', updated_at = now()
    WHERE id IN (SELECT id FROM held) AND status = 'pending'
    RETURNING id, team_id
), logged AS (
    INSERT INTO task_events (team_id, task_id, kind, data)
    SELECT team_id, id, 'task.blocked', CAST(:data AS jsonb) FROM blocked
)
SELECT id FROM blocked;

-- release_assigned --
-- A member went offline (:beyond_capacity false: all of them) or its capacity went down (true: as many as its load exceeds it by, the lowest priority and newest first): its tasks assigned but not claimed yet go back to pending (locked in id order, then the member), for the next pass to give to another worker, each with its task.unassigned event; its load drops by as many. A claim that got there first keeps its task; one that comes after finds the task no longer its worker's.
WITH old AS (
    SELECT id FROM tasks
    WHERE id IN (
        SELECT id FROM tasks
        WHERE assigned_to = :member_id AND status = 'assigned'
        ORDER BY priority, created_at DESC, id
        LIMIT CASE WHEN :beyond_capacity THEN (
            SELECT greatest(current_workload - max_concurrent_tasks, 0) FROM team_members
            WHERE id = :member_id) END
    )
    ORDER BY id
    FOR UPDATE
), released AS (
    UPDATE tasks t
    SET status = 'pending', assigned_to = NULL, assigned_by = NULL, assignment = NULL,
        claim = NULL, updated_at = now()
    FROM old
    WHERE t.id = old.id AND t.status = 'assigned' AND t.assigned_to = :member_id
    RETURNING t.id, t.team_id
), counted AS (
    UPDATE team_members m
    SET current_workload = m.current_workload - (SELECT count(*) FROM released)
    WHERE m.id = :member_id AND EXISTS (SELECT 1 FROM released)
), evented AS (
    INSERT INTO task_events (team_id, task_id, kind, data)
    SELECT team_id, id, 'task.unassigned', jsonb_build_object('worker_id', CAST(:member_id AS text))
    FROM released
)
SELECT id FROM released;

-- stop_dependents --
-- Tasks failed or cancelled for good (parallel arrays: task_ids[i] ended as statuses[i]): every task waiting for one of them, not started (so blocked), can never run, and ends the same way with its whole unfinished subtree, each naming the dependency that stopped it (its first in id order; stopped_by keeps it, for a retry of that one to resume it), with its event; returns them, for their own dependents and summary tasks in turn.
WITH RECURSIVE ended AS (
    SELECT * FROM unnest(CAST(:task_ids AS uuid[]), CAST(:statuses AS text[])) AS e(id, status)
), waiting AS (
    SELECT DISTINCT ON (d.task_id) d.task_id AS id, e.id AS cause, e.status
    FROM task_dependencies d JOIN ended e ON e.id = d.depends_on_task_id
    ORDER BY d.task_id, e.id
), below(id, cause, status) AS (
    SELECT id, cause, status FROM waiting
    UNION
    SELECT t.id, b.cause, b.status FROM tasks t JOIN below b ON t.parent_task_id = b.id
), old AS (
    SELECT t.id FROM tasks t
    WHERE t.id IN (SELECT id FROM below) AND t.status IN ('pending', 'blocked')
    ORDER BY t.id
    FOR UPDATE
), stopped AS (
    UPDATE tasks t
    SET status = CAST(b.status AS task_status), stopped_by = b.cause,
        error_message = CASE WHEN b.status = 'failed' THEN 'dependency ' || b.cause || ' failed'
                             ELSE 'dependency ' || b.cause || ' was cancelled' END,
        completion_time = now(), updated_at = now()
    FROM (SELECT DISTINCT ON (id) * FROM below ORDER BY id, cause) b, old
    WHERE t.id = b.id AND old.id = t.id AND t.status IN ('pending', 'blocked')
    RETURNING t.id, t.team_id, t.parent_task_id, t.status, t.error_message, b.cause
), evented AS (
    INSERT INTO task_events (team_id, task_id, kind, data)
    SELECT team_id, id, 'task.' || status,
           jsonb_build_object('error', error_message, 'dependency', cause::text)
    FROM stopped
)
SELECT id, parent_task_id, status::text AS status, error_message, cause FROM stopped;

-- roll_up --
-- A subtask reached a final state: its summary task completes, fails or is cancelled when its subtasks say so; it completes only with no dependency of its own or above it unmet.
UPDATE tasks p
SET status = CASE
        WHEN s.failed > 0 THEN 'failed'::task_status
        WHEN s.completed > 0 THEN 'completed'
        ELSE 'cancelled' END,
    error_message = CASE WHEN s.failed > 0 THEN :error ELSE NULL END,
    completion_time = now(), updated_at = now()
FROM (
    SELECT count(*) FILTER (WHERE status = 'failed') AS failed,
           count(*) FILTER (WHERE status = 'completed') AS completed,
           count(*) FILTER (WHERE status NOT IN ('completed', 'failed', 'cancelled')) AS open
    FROM tasks WHERE parent_task_id = :task_id
) s
WHERE p.id = :task_id
  AND p.status IN ('pending', 'blocked', 'in_progress')
  AND (s.failed > 0 OR s.open = 0)
  -- Never completed while it or a task above it waits for a dependency: its dependents would
  -- start before that dependency (edges refused by started_below make this unreachable).
  AND (s.failed > 0 OR s.completed = 0 OR (p.status <> 'blocked' AND p.unmet_dependencies = 0))
RETURNING p.id, p.team_id, p.parent_task_id, p.status;

-- highest_rank --
-- The team's last point (an end always ranks above its start): a new top-level task goes after it.
SELECT max(end_rank) FROM tasks WHERE team_id = :team_id;

-- rank_below --
-- The team's highest point below :rank: a new subtask goes between it and its parent's end.
SELECT greatest(
    (SELECT max(start_rank) FROM tasks WHERE team_id = :team_id AND start_rank < :rank),
    (SELECT max(end_rank) FROM tasks WHERE team_id = :team_id AND end_rank < :rank)
);

-- reach_after --
-- Every point waiting for the start of :task_id, through subtasks, parents and dependents, ranked at most :bound, each with the team's next point above :bound (the gap they may move to).
WITH RECURSIVE reach(task_id, point, rank) AS (
    SELECT id, 'S'::text, start_rank FROM tasks WHERE id = :task_id
    UNION
    SELECT n.task_id, n.point, n.rank
    FROM reach r CROSS JOIN LATERAL (
        SELECT t.id AS task_id, 'E'::text AS point, t.end_rank AS rank
        FROM tasks t WHERE r.point = 'S' AND t.id = r.task_id
        UNION ALL
        SELECT c.id, 'S', c.start_rank FROM tasks c
        WHERE r.point = 'S' AND c.parent_task_id = r.task_id
        UNION ALL
        SELECT p.id, 'E', p.end_rank FROM tasks t JOIN tasks p ON p.id = t.parent_task_id
        WHERE r.point = 'E' AND t.id = r.task_id
        UNION ALL
        SELECT t.id, 'S', t.start_rank FROM task_dependencies d JOIN tasks t ON t.id = d.task_id
        WHERE r.point = 'E' AND d.depends_on_task_id = r.task_id
    ) n
    WHERE n.rank <= :bound
)
SELECT task_id, point, rank, least(
    (SELECT min(start_rank) FROM tasks WHERE team_id = :team_id AND start_rank > :bound),
    (SELECT min(end_rank) FROM tasks WHERE team_id = :team_id AND end_rank > :bound)
) AS next_rank
FROM reach;

-- batch_plans --
-- For the rest of a transaction adding dependencies: no JIT (the recursive search's row estimates are wild and compiling costs ~10x running it) and no hash or merge joins (joining a few thousand ids to tasks or task_dependencies by hash reads the whole table; by index it reads those rows).
SELECT set_config('jit', 'off', true), set_config('enable_hashjoin', 'off', true),
    set_config('enable_mergejoin', 'off', true);

-- reach_after_many --
-- Every point waiting for the start of any of :task_ids, through subtasks, parents and dependents, ranked at most :bound, once per waits-for edge it was reached by (via: the point it waits for there; null for the starts themselves); no more than :cap rows, the search stopping there.
-- Each row carries its task's end rank and parent, so a start reaches its end and an end its parent without looking the task up again.
WITH RECURSIVE reach(task_id, point, rank, end_rank, parent_id, via_id, via_point) AS (
    SELECT id, 'S'::text, start_rank, end_rank, parent_task_id, NULL::uuid, NULL::text
    FROM tasks WHERE id = ANY(CAST(:task_ids AS uuid[]))
    UNION
    SELECT n.task_id, n.point, n.rank, n.end_rank, n.parent_id, r.task_id, r.point
    FROM reach r CROSS JOIN LATERAL (
        SELECT r.task_id, 'E'::text AS point, r.end_rank AS rank, r.end_rank,
            r.parent_id
        WHERE r.point = 'S'
        UNION ALL
        SELECT c.id, 'S', c.start_rank, c.end_rank, c.parent_task_id FROM tasks c
        WHERE r.point = 'S' AND c.parent_task_id = r.task_id
        UNION ALL
        SELECT p.id, 'E', p.end_rank, p.end_rank, p.parent_task_id FROM tasks p
        WHERE r.point = 'E' AND p.id = r.parent_id
        UNION ALL
        SELECT t.id, 'S', t.start_rank, t.end_rank, t.parent_task_id
        FROM task_dependencies d JOIN tasks t ON t.id = d.task_id
        WHERE r.point = 'E' AND d.depends_on_task_id = r.task_id
    ) n
    WHERE n.rank <= :bound
)
-- Ids as text: the caller only compares and hashes them, and a str caches its hash.
SELECT task_id::text AS task_id, point, rank, via_id::text AS via_id, via_point
FROM reach LIMIT :cap;

-- next_ranks --
-- For each of :ranks (in order), the team's next point above it, or null: the free gap above it.
SELECT least(
    (SELECT min(start_rank) FROM tasks WHERE team_id = :team_id AND start_rank > r.rank),
    (SELECT min(end_rank) FROM tasks WHERE team_id = :team_id AND end_rank > r.rank)
) AS next_rank
FROM unnest(CAST(:ranks AS numeric[])) WITH ORDINALITY AS r(rank, i)
ORDER BY r.i;

-- move_and_insert --
-- Insert dependency edges (task_ids[i] depends on depends_on[i]) and update the tasks they touch, in one statement: ids[i] gets new ranks (a null keeps that point's rank) and added[i] more unmet dependencies, so a task both moved and waiting is written once.
WITH edges AS (
    INSERT INTO task_dependencies (task_id, depends_on_task_id)
    SELECT * FROM unnest(CAST(:task_ids AS uuid[]), CAST(:depends_on AS uuid[]))
)
UPDATE tasks t
SET start_rank = coalesce(n.start_rank, t.start_rank),
    end_rank = coalesce(n.end_rank, t.end_rank),
    unmet_dependencies = t.unmet_dependencies + n.added,
    updated_at = CASE WHEN n.added > 0 THEN now() ELSE t.updated_at END
FROM unnest(
    CAST(:ids AS uuid[]), CAST(:start_ranks AS numeric[]), CAST(:end_ranks AS numeric[]),
    CAST(:added AS integer[])
) AS n(id, start_rank, end_rank, added)
WHERE t.id = n.id;

-- edge_ends --
-- Lock the team's tasks at the ends of new edges (one edge's two, or a batch's) in id order, with what adding the edges reads: a claim or completion of any of them waits until it commits. Another team's tasks are neither read nor locked.
SELECT id, team_id, status::text AS status, is_summary, start_rank, end_rank
FROM tasks WHERE id = ANY(CAST(:ids AS uuid[])) AND team_id = :team_id
ORDER BY id
FOR NO KEY UPDATE;

-- started_below --
-- Which summary tasks among :task_ids have started (a task below is in flight or finished; a summary itself shows pending until a task below is claimed): per summary, the first such task in id order. Every task below them is share-locked in id order first, so a pass cannot assign one before the caller commits, and one assigned meanwhile is read as committed; the sort reads every locked row.
WITH RECURSIVE below(root, id) AS (
    SELECT parent_task_id, id FROM tasks WHERE parent_task_id = ANY(CAST(:task_ids AS uuid[]))
    UNION ALL
    SELECT b.root, c.id FROM tasks c JOIN below b ON c.parent_task_id = b.id
), held AS MATERIALIZED (
    SELECT b.root, t.id, t.status
    FROM below b JOIN tasks t ON t.id = b.id
    ORDER BY t.id
    FOR SHARE OF t
)
SELECT DISTINCT ON (root) root, id, status::text AS status
FROM held
WHERE status IN ('assigned', 'in_progress', 'review', 'completed', 'failed')
ORDER BY root, id;

-- add_ordered_edges --
-- The usual new edges (task_ids[i] depends on depends_on[i]), each decided on its own, in one statement run as its own transaction (one round trip; concurrent add_dependency calls share it): hold the team's graph lock shared, lock the tasks at their ends in id order (rows a concurrent holder of the lock alone changed are read as it committed them), and insert each edge the ranks already order (its dependency ends below its task's start: no cycle is possible) on a task of the team, pending or blocked and not a summary (a summary has started when a task below it has: the general path checks that, started_below), on a dependency that has not failed or been cancelled (the general path stops the task then), with its dependency.added event; a task gains one unmet dependency per new edge on an unfinished task and is then blocked, with one task.blocked event (by its first such edge) when it was pending. Returns a row for each edge inserted (i: its position); an edge without one was not written, and its caller runs the general path.
WITH graph AS (
    SELECT pg_advisory_xact_lock_shared(hashtextextended('graph:' || id::text, 0))
    FROM teams WHERE id = :team_id
), ends AS (
    SELECT id, team_id, status, is_summary, start_rank, end_rank FROM tasks
    WHERE id = ANY(CAST(:ids AS uuid[])) AND team_id = :team_id AND EXISTS (SELECT FROM graph)
    ORDER BY id
    FOR NO KEY UPDATE
), ordered AS (
    SELECT DISTINCT ON (p.task_id, p.depends_on)
        p.i, p.task_id, p.depends_on, t.status AS task_status, d.status <> 'completed' AS waits
    FROM unnest(CAST(:task_ids AS uuid[]), CAST(:depends_on AS uuid[]))
            WITH ORDINALITY AS p(task_id, depends_on, i)
        JOIN ends t ON t.id = p.task_id
        JOIN ends d ON d.id = p.depends_on
    WHERE t.team_id = :team_id AND d.team_id = :team_id
      AND t.status IN ('pending', 'blocked') AND NOT t.is_summary
      AND d.status NOT IN ('failed', 'cancelled') AND d.end_rank < t.start_rank
    ORDER BY p.task_id, p.depends_on, p.i
), edge AS (
    INSERT INTO task_dependencies (task_id, depends_on_task_id)
    SELECT task_id, depends_on FROM ordered ORDER BY i
    ON CONFLICT ON CONSTRAINT task_dependencies_unique DO NOTHING
    RETURNING id, task_id, depends_on_task_id, dependency_type, created_at
), made AS (
    SELECT o.i, e.id, e.task_id, e.depends_on_task_id, e.dependency_type, e.created_at, o.waits,
        o.waits AND o.task_status = 'pending'
            AND o.i = min(o.i) FILTER (WHERE o.waits) OVER (PARTITION BY o.task_id) AS blocks
    FROM edge e JOIN ordered o ON o.task_id = e.task_id AND o.depends_on = e.depends_on_task_id
), waiting AS (
    UPDATE tasks t
    SET unmet_dependencies = t.unmet_dependencies + w.added, status = 'blocked', updated_at = now()
    FROM (SELECT task_id, count(*) AS added FROM made WHERE waits GROUP BY task_id) w
    WHERE t.id = w.task_id
), logged AS (
    INSERT INTO task_events (team_id, task_id, kind, data)
    SELECT :team_id, m.task_id, e.kind, e.data
    FROM made m, LATERAL (VALUES
        (1, 'task.blocked', jsonb_build_object('by', m.depends_on_task_id::text)),
        (2, 'dependency.added', jsonb_build_object('depends_on', m.depends_on_task_id::text))
    ) AS e(n, kind, data)
    WHERE e.kind <> 'task.blocked' OR m.blocks
    ORDER BY m.i, e.n
)
SELECT i, id, task_id, depends_on_task_id, dependency_type, created_at, blocks FROM made;

-- existing_edges --
-- Which of the edges (task_ids[i] depends on depends_on[i]) are there already.
SELECT d.task_id, d.depends_on_task_id
FROM unnest(CAST(:task_ids AS uuid[]), CAST(:depends_on AS uuid[])) AS e(task_id, depends_on)
JOIN task_dependencies d ON d.task_id = e.task_id AND d.depends_on_task_id = e.depends_on;

-- rank_violations --
-- Waits-for edges of :team_id its ranks do not order (always 0; for tests and operators).
SELECT
    (SELECT count(*) FROM tasks c JOIN tasks p ON p.id = c.parent_task_id
     WHERE c.team_id = :team_id AND NOT (p.start_rank < c.start_rank AND c.end_rank < p.end_rank))
  + (SELECT count(*) FROM task_dependencies d
     JOIN tasks t ON t.id = d.task_id JOIN tasks dep ON dep.id = d.depends_on_task_id
     WHERE t.team_id = :team_id AND NOT dep.end_rank < t.start_rank)
  + (SELECT count(*) FROM tasks WHERE team_id = :team_id AND NOT start_rank < end_rank)
  + (SELECT count(*) - count(DISTINCT rank) FROM (
        SELECT start_rank AS rank FROM tasks WHERE team_id = :team_id
        UNION ALL
        SELECT end_rank FROM tasks WHERE team_id = :team_id) points);


-- task_hierarchy --
-- A task of :team_id and its subtasks down to :max_depth levels (NULL: all), depth first, each task's subtasks in list order (priority DESC, created_at, id): a tree of any size in one statement, whole rows carried through the recursion (no join back whose plan depends on the subtree's estimated size), written by the reader as it comes.
WITH RECURSIVE sub AS (
    SELECT t AS node, 0 AS depth, ARRAY[]::bigint[] AS path
    FROM tasks t
    WHERE t.id = :task_id AND t.team_id = :team_id
    UNION ALL
    SELECT c, sub.depth + 1,
           sub.path || row_number() OVER (
               PARTITION BY c.parent_task_id ORDER BY c.priority DESC, c.created_at, c.id)
    FROM sub JOIN tasks c ON c.parent_task_id = (sub.node).id
    WHERE CAST(:max_depth AS integer) IS NULL OR sub.depth < CAST(:max_depth AS integer)
)
SELECT (node).* FROM sub ORDER BY path;

-- prune_events --
-- One batch of the event history older than the cutoff, oldest first along the primary key (ids grow with time); returns how many went.
WITH old AS (
    SELECT id FROM task_events WHERE created_at < :cutoff ORDER BY id LIMIT :batch
), gone AS (
    DELETE FROM task_events e USING old WHERE e.id = old.id RETURNING 1
)
SELECT count(*) FROM gone;

-- prune_messages --
-- One batch of the message log (assignments) older than the cutoff; returns how many went.
WITH old AS (
    SELECT id FROM messages WHERE created_at < :cutoff LIMIT :batch
), gone AS (
    DELETE FROM messages m USING old WHERE m.id = old.id RETURNING 1
)
SELECT count(*) FROM gone;

-- prune_decompositions --
-- One batch of the decompositions that ended before the cutoff (open ones stay whatever their age); returns how many went.
WITH old AS (
    SELECT id FROM decompositions
    WHERE finished_at < :cutoff AND status IN ('succeeded', 'failed', 'cancelled')
    LIMIT :batch
), gone AS (
    DELETE FROM decompositions d USING old WHERE d.id = old.id RETURNING 1
)
SELECT count(*) FROM gone;

-- claim_decomposition --
-- Take the decomposition queued longest that no live consumer holds: queued, or planning under a lease that ran out (its consumer died) with attempts left; SKIP LOCKED lets consumers claim side by side, and the lock re-checks a row another consumer just changed. :claim, unique to this claim, fences what the attempt does later.
UPDATE decompositions d
SET status = 'planning', attempts = d.attempts + 1, claimed_by = :claim,
    lease_until = now() + make_interval(secs => :lease),
    started_at = coalesce(d.started_at, now())
WHERE d.id = (
    SELECT id FROM decompositions
    WHERE (status = 'queued' OR (status = 'planning' AND lease_until < now()))
      AND attempts < :max_attempts
    ORDER BY queued_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING d.id, d.team_id, d.goal, d.max_depth, d.attempts;

-- abandon_decompositions --
-- Fail the decompositions whose consumer was lost during their last attempt (lease over, no attempts left).
UPDATE decompositions
SET status = 'failed', finished_at = now(), lease_until = NULL,
    error = 'the process planning it was lost ' || attempts || ' times'
WHERE id IN (
    SELECT id FROM decompositions
    WHERE status = 'planning' AND lease_until < now() AND attempts >= :max_attempts
    FOR UPDATE SKIP LOCKED
)
RETURNING id, team_id, error;

-- renew_decomposition --
-- Extend the lease of a decomposition while its consumer plans it (no row: it was cancelled, or its lease ran out and another consumer took it).
UPDATE decompositions SET lease_until = now() + make_interval(secs => :lease)
WHERE id = :id AND status = 'planning' AND claimed_by = :claim
RETURNING id;

-- decomposition_succeeded --
-- Record a decomposition's tasks, in the transaction that creates them, if this attempt still holds it (no row: the transaction must roll back).
UPDATE decompositions
SET status = 'succeeded', task_ids = :task_ids, finished_at = now(), lease_until = NULL
WHERE id = :id AND status = 'planning' AND claimed_by = :claim
RETURNING id;

-- decomposition_failed --
-- Fail a decomposition if this attempt still holds it.
UPDATE decompositions
SET status = 'failed', error = :error, finished_at = now(), lease_until = NULL
WHERE id = :id AND status = 'planning' AND claimed_by = :claim
RETURNING team_id;

-- requeue_decomposition --
-- Give back a decomposition whose consumer stops before its plan came, the attempt uncounted: the next consumer takes it at once.
UPDATE decompositions
SET status = 'queued', attempts = attempts - 1, claimed_by = NULL, lease_until = NULL
WHERE id = :id AND status = 'planning' AND claimed_by = :claim
RETURNING id;

-- decomposition_usage --
-- Add what a planning attempt was billed, whatever became of it.
UPDATE decompositions SET tokens_used = tokens_used + :tokens, cost = cost + :cost
WHERE id = :id;

-- cancel_decomposition --
-- Cancel a decomposition of the team not yet planned (a plan arriving later is discarded: decomposition_succeeded finds it cancelled).
UPDATE decompositions
SET status = 'cancelled', finished_at = now(), lease_until = NULL
WHERE id = :id AND team_id = :team_id AND status IN ('queued', 'planning')
RETURNING id;

-- retry_decomposition --
-- Queue a failed or cancelled decomposition of the team again, as new (what it was billed stays counted).
UPDATE decompositions
SET status = 'queued', attempts = 0, error = NULL, claimed_by = NULL, lease_until = NULL,
    queued_at = now(), started_at = NULL, finished_at = NULL
WHERE id = :id AND team_id = :team_id AND status IN ('failed', 'cancelled')
RETURNING id;
