"""The DuckDB schema as an ordered list of migrations: migration N brings a database from schema
v(N-1) to vN (opening.py applies the ones a database has not had, in one transaction). Never edit
one that has shipped; add the next.
"""

MIGRATIONS: list[str] = [
    # v1: the backbone.
    """
    CREATE TABLE runs (
        run_id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        status VARCHAR NOT NULL,            -- running | finished | failed | interrupted
        config JSON NOT NULL,               -- snapshot; secrets are referenced by env var name only
        prompts_path VARCHAR,
        prefect_flow_run_id VARCHAR,
        started_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ,
        summary JSON
    );
    CREATE TABLE prompts (
        prompt_id VARCHAR PRIMARY KEY,
        instruction VARCHAR NOT NULL,
        target_words INTEGER,               -- as given in the prompts file, if any
        meta JSON,
        source VARCHAR,
        created_at TIMESTAMPTZ NOT NULL
    );
    -- Every request that reached the network, answered or failed. The request cache is the
    -- answered subset: key = content hash of everything that determines the answer.
    CREATE TABLE requests (
        request_id VARCHAR PRIMARY KEY,
        key VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        stage VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        request JSON NOT NULL,
        response_text VARCHAR,
        finish_reason VARCHAR,
        tokens_in INTEGER,
        tokens_out INTEGER,
        latency_s DOUBLE,
        attempts INTEGER NOT NULL,
        error VARCHAR,                      -- NULL for an answer
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX requests_key ON requests (key);
    CREATE TABLE samples (
        sample_id VARCHAR PRIMARY KEY,
        prompt_id VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL,
        writer VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        sample_index INTEGER NOT NULL,
        text VARCHAR NOT NULL,
        words INTEGER NOT NULL,
        length_counter VARCHAR NOT NULL,
        required_words INTEGER NOT NULL,
        required_source VARCHAR NOT NULL,   -- target_words | min_max_words | instruction | default
        length_score DOUBLE NOT NULL,
        n_sections INTEGER NOT NULL,
        plan_source VARCHAR,                -- json | text (the fallback parser)
        tokens_out INTEGER,
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE sections (
        sample_id VARCHAR NOT NULL,
        idx INTEGER NOT NULL,
        main_point VARCHAR NOT NULL,
        planned_words INTEGER NOT NULL,
        text VARCHAR NOT NULL,
        words INTEGER NOT NULL,
        length_counter VARCHAR NOT NULL,
        continuations INTEGER NOT NULL,
        finish_reason VARCHAR,
        PRIMARY KEY (sample_id, idx)
    );
    CREATE TABLE failures (
        failure_id VARCHAR PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        stage VARCHAR NOT NULL,
        prompt_id VARCHAR,
        sample_id VARCHAR,
        key VARCHAR,
        reason VARCHAR NOT NULL,
        detail VARCHAR,
        created_at TIMESTAMPTZ NOT NULL
    );
    """,
    # v2: per-stage observability, rewritten every few seconds while a run is in progress.
    """
    CREATE TABLE run_stats (
        run_id VARCHAR NOT NULL,
        stage VARCHAR NOT NULL,
        requests INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        cache_hits INTEGER NOT NULL,
        tokens_in BIGINT NOT NULL,
        tokens_out BIGINT NOT NULL,
        truncated INTEGER NOT NULL,
        errors JSON NOT NULL,               -- {"http_502": 3, "timeout": 1, ...}
        wall_s DOUBLE NOT NULL,             -- first request sent to last answer, this stage
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (run_id, stage)
    );
    """,
    # v3: judges, filters, length control and selection.
    """
    CREATE TABLE judgments (
        judgment_id VARCHAR PRIMARY KEY,    -- hash of judge, template, settings and the samples shown
        run_id VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,              -- rubric | pairwise
        judge_model VARCHAR NOT NULL,
        prompt_id VARCHAR NOT NULL,
        sample_id VARCHAR NOT NULL,         -- pairwise: the candidate shown first (A)
        other_sample_id VARCHAR,            -- pairwise: the candidate shown second (B)
        scores JSON,                        -- rubric: {dimension: 1-5}
        quality DOUBLE,                     -- rubric: S_q, 0-100
        winner VARCHAR,                     -- pairwise: A | B | tie
        parse_status VARCHAR NOT NULL,      -- json | lenient | unparsable | failed
        raw VARCHAR,                        -- the judge's answer, or the request's error
        key VARCHAR,
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE filter_checks (
        run_id VARCHAR NOT NULL,
        subject VARCHAR NOT NULL,           -- sample | prompt
        subject_id VARCHAR NOT NULL,
        filter VARCHAR NOT NULL,
        passed BOOLEAN NOT NULL,
        reason VARCHAR,
        created_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (run_id, subject_id, filter)
    );
    CREATE TABLE length_fits (
        run_id VARCHAR NOT NULL,
        judge_model VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,              -- pairwise (phi) | rubric (phi_s)
        status VARCHAR NOT NULL,            -- fitted | not_identified
        reason VARCHAR,
        n INTEGER NOT NULL,
        phi DOUBLE,
        ci_low DOUBLE,
        ci_high DOUBLE,
        scale DOUBLE,                       -- sigma of the length difference, or sd of log length
        detail JSON,                        -- position bias, per-group theta and win rates
        created_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (run_id, judge_model, kind)
    );
    -- Per-sample scores computed by a run, long format: quality, lc_quality, pairwise_logit,
    -- lc_pairwise_logit (and later stages' own).
    CREATE TABLE scores (
        run_id VARCHAR NOT NULL,
        sample_id VARCHAR NOT NULL,
        metric VARCHAR NOT NULL,
        value DOUBLE NOT NULL,
        source VARCHAR NOT NULL,            -- what computed it (judge model, fit)
        created_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (run_id, sample_id, metric)
    );
    CREATE TABLE selections (
        selection_id VARCHAR PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        purpose VARCHAR NOT NULL,           -- sft | dpo
        prompt_id VARCHAR NOT NULL,
        sample_id VARCHAR,                  -- sft: the sample; dpo: chosen (NULL if no pair)
        rejected_sample_id VARCHAR,         -- dpo only
        selected BOOLEAN NOT NULL,
        reason VARCHAR NOT NULL,
        scores JSON,                        -- the numbers the decision was made on
        created_at TIMESTAMPTZ NOT NULL
    );
    """,
    # v4: training runs and length evaluations.
    """
    CREATE TABLE train_runs (
        train_id VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,              -- sft | dpo
        dataset VARCHAR NOT NULL,
        model VARCHAR NOT NULL,             -- as given: an HF id, a path or `embedded`
        model_path VARCHAR NOT NULL,
        params JSON NOT NULL,               -- TRL's SFTConfig / DPOConfig arguments
        lora JSON,
        rows INTEGER NOT NULL,
        status VARCHAR NOT NULL,            -- running | finished | failed
        steps INTEGER,
        final_loss DOUBLE,
        output_dir VARCHAR NOT NULL,
        error VARCHAR,
        started_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ
    );
    CREATE TABLE length_evals (
        eval_id VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        prompt_id VARCHAR NOT NULL,
        instruction VARCHAR NOT NULL,
        required_words INTEGER NOT NULL,
        text VARCHAR NOT NULL,
        words INTEGER NOT NULL,
        length_counter VARCHAR NOT NULL,
        length_score DOUBLE NOT NULL,
        tokens_out INTEGER NOT NULL,
        finish_reason VARCHAR NOT NULL,     -- stop | length (hit max_new_tokens)
        created_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (eval_id, prompt_id)
    );
    """,
    # v5: Self-Lengthen's lineage.
    """
    CREATE TABLE lengthen_steps (
        step_id VARCHAR PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        prompt_id VARCHAR NOT NULL,
        sample_id VARCHAR NOT NULL,         -- the chain's sample (a samples row if it was kept)
        parent_step_id VARCHAR,             -- the step this one extends
        iteration INTEGER NOT NULL,         -- macro iteration
        round INTEGER NOT NULL,             -- 0: generator (and its continuation); 1..: extender rounds
        role VARCHAR NOT NULL,              -- generator | continuation | extender
        words_before INTEGER NOT NULL,
        words_after INTEGER NOT NULL,
        length_counter VARCHAR NOT NULL,
        verdicts JSON NOT NULL,             -- {filter: "pass" | reason}
        accepted BOOLEAN NOT NULL,
        reason VARCHAR NOT NULL,
        finish_reason VARCHAR,
        text VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    );
    """,
    # v6: self-instruct candidates.
    """
    CREATE TABLE instruction_candidates (
        candidate_id VARCHAR PRIMARY KEY,
        run_id VARCHAR NOT NULL,
        attempt INTEGER NOT NULL,
        instruction VARCHAR NOT NULL,       -- as cleaned from the model's reply ('' if the request failed)
        accepted BOOLEAN NOT NULL,
        reason VARCHAR NOT NULL,            -- kept | why not (length, near-duplicate, the check's no)
        key VARCHAR,
        created_at TIMESTAMPTZ NOT NULL
    );
    """,
    # v7: GATEAU's per-sample measures, cached by what determines them, so a rerun (or a build that
    # failed after scoring) does not spend minutes recomputing them.
    """
    CREATE TABLE gateau_measures (
        key VARCHAR PRIMARY KEY,            -- hash of instruction, answer, model(s) and measure settings
        sample_id VARCHAR NOT NULL,         -- the sample first measured under this key
        status VARCHAR NOT NULL,            -- measured | not_scorable
        reason VARCHAR,                     -- not_scorable: why
        log_ppl_long DOUBLE,
        log_ppl_short DOUBLE,
        cam DOUBLE,
        segments INTEGER,
        scored_tokens INTEGER,
        created_at TIMESTAMPTZ NOT NULL
    );
    """,
    # v8: fleets. Requests name their sample, prompt, section and endpoint; long message texts are
    # stored once, in chunks keyed by their hash (`texts`), instead of a copy of the whole text so far
    # in every request (which grew with the square of a sample's sections). Rows written before v8
    # keep their full request JSON, and the cache (key + response) is untouched.
    """
    ALTER TABLE requests ADD COLUMN sample_id VARCHAR;
    ALTER TABLE requests ADD COLUMN prompt_id VARCHAR;
    ALTER TABLE requests ADD COLUMN section INTEGER;
    ALTER TABLE requests ADD COLUMN endpoint VARCHAR;   -- base URL of the server that answered, no credentials
    CREATE TABLE texts (
        hash VARCHAR PRIMARY KEY,           -- blake2b-128 of the text, hex
        text VARCHAR NOT NULL
    );
    CREATE TABLE endpoint_stats (
        run_id VARCHAR NOT NULL,
        pool VARCHAR NOT NULL,              -- writers | judges
        endpoint VARCHAR NOT NULL,
        state VARCHAR NOT NULL,             -- up | down | probing
        reason VARCHAR,                     -- why it is down
        concurrency INTEGER NOT NULL,       -- the adaptive limit now
        requests INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        failed_attempts INTEGER NOT NULL,
        tokens_in BIGINT NOT NULL,
        tokens_out BIGINT NOT NULL,
        errors JSON NOT NULL,
        wall_s DOUBLE NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (run_id, pool, endpoint)
    );
    """,
    # v9: lengths as specs, not numbers (longform/lengths.py). `required_words` stays the length a
    # writer aimed at; the spec says what was asked: exact | about | at_most | at_least | range | none,
    # its bounds, the unit it named and the words that named it. `bound_ok` is NULL for kinds without
    # a bound. `length_stop` says why AgentWrite's length control stopped adding text.
    """
    ALTER TABLE prompts ADD COLUMN min_words INTEGER;
    ALTER TABLE prompts ADD COLUMN max_words INTEGER;
    ALTER TABLE samples ADD COLUMN length_kind VARCHAR;
    ALTER TABLE samples ADD COLUMN length_low INTEGER;
    ALTER TABLE samples ADD COLUMN length_high INTEGER;
    ALTER TABLE samples ADD COLUMN length_unit VARCHAR;
    ALTER TABLE samples ADD COLUMN length_span VARCHAR;
    ALTER TABLE samples ADD COLUMN bound_ok BOOLEAN;
    ALTER TABLE samples ADD COLUMN length_stop VARCHAR;
    ALTER TABLE sections ADD COLUMN budget_words INTEGER;   -- what was asked after re-allocation
    ALTER TABLE sections ADD COLUMN elided BOOLEAN;         -- its prompt left the oldest text so far out
    ALTER TABLE length_evals ADD COLUMN length_kind VARCHAR;
    ALTER TABLE length_evals ADD COLUMN bound_ok BOOLEAN;
    -- Judges read graded verdicts from token log-probabilities (judges/verdicts.py). A request asked
    -- with top_logprobs keeps them, so a cached answer replays them: [[token, logprob, {alt: lp}], …].
    ALTER TABLE requests ADD COLUMN logprobs JSON;
    -- p_first: the judge's probability that the candidate shown first is better, from the verdict
    -- token's logprobs; expected_quality: S_q from each rating's expected value under its logprobs
    -- (G-Eval); signal: "logprobs", or "argmax: <why not>" where only the chosen token could be read.
    ALTER TABLE judgments ADD COLUMN p_first DOUBLE;
    ALTER TABLE judgments ADD COLUMN expected_quality DOUBLE;
    ALTER TABLE judgments ADD COLUMN signal VARCHAR;
    -- Provenance: what produced a run (longform/provenance.py); which export a training run read
    -- (content hash of its Parquet files, and the run that export came from); which trained model
    -- a length evaluation evaluated.
    ALTER TABLE runs ADD COLUMN versions JSON;
    ALTER TABLE train_runs ADD COLUMN dataset_hash VARCHAR;
    ALTER TABLE train_runs ADD COLUMN source_run_id VARCHAR;
    ALTER TABLE length_evals ADD COLUMN train_id VARCHAR;
    """,
    # v10: `longform eval` (judges/model_eval.py): one `evals` row per model evaluated by one command,
    # its answers in `eval_answers`, and the paired differences between its models in `eval_pairs`.
    # `answer_key` names what produced an answer (the model, prompt, seed, token cap and sampling),
    # so a rerun finds it and generates nothing. `length_evals` (one model per evaluation) moves into
    # `eval_answers` with its rows.
    """
    CREATE TABLE evals (
        eval_id VARCHAR NOT NULL,
        model VARCHAR NOT NULL,             -- the label the report uses
        source VARCHAR NOT NULL,            -- as given: a path, an HF id, `embedded`, or an endpoint
        backend VARCHAR NOT NULL,           -- transformers | endpoint
        train_id VARCHAR,                   -- the `train_runs` row that saved this model, if any
        prompts_path VARCHAR,
        settings JSON,                      -- seed, sampling, token caps, quality judge
        summary JSON,                       -- judges/length_eval.py: summarize()
        created_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (eval_id, model)
    );
    CREATE TABLE eval_answers (
        eval_id VARCHAR NOT NULL,
        model VARCHAR NOT NULL,
        prompt_id VARCHAR NOT NULL,
        instruction VARCHAR NOT NULL,
        answer_key VARCHAR,
        text VARCHAR NOT NULL,              -- '' where the request failed (see error)
        words INTEGER NOT NULL,
        length_counter VARCHAR NOT NULL,
        required_words INTEGER NOT NULL,    -- the spec's aim
        length_kind VARCHAR,
        length_low INTEGER,
        length_high INTEGER,
        length_unit VARCHAR,
        length_score DOUBLE NOT NULL,
        bound_ok BOOLEAN,
        tokens_out INTEGER NOT NULL,
        max_tokens INTEGER,
        finish_reason VARCHAR NOT NULL,     -- stop (end of sequence) | length (the token cap)
        repeated_ngram BOOLEAN,             -- judges/filters.py, as for samples
        repeated_paragraphs BOOLEAN,
        quality DOUBLE,                     -- S_q from the rubric judge, if asked
        judge_model VARCHAR,
        error VARCHAR,                      -- the request failed: why
        train_id VARCHAR,
        created_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (eval_id, model, prompt_id)
    );
    CREATE TABLE eval_pairs (
        eval_id VARCHAR NOT NULL,
        model_a VARCHAR NOT NULL,
        model_b VARCHAR NOT NULL,
        metric VARCHAR NOT NULL,            -- length_score | eos | repetitive | quality
        n INTEGER NOT NULL,                 -- prompts answered by both
        mean_diff DOUBLE,                   -- mean of (a - b) over those prompts
        ci_low DOUBLE,                      -- paired bootstrap 95% interval
        ci_high DOUBLE,
        created_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (eval_id, model_a, model_b, metric)
    );
    INSERT INTO eval_answers (eval_id, model, prompt_id, instruction, text, words, length_counter, required_words,
                              length_kind, length_score, bound_ok, tokens_out, finish_reason, train_id, created_at)
        SELECT eval_id, model, prompt_id, instruction, text, words, length_counter, required_words, length_kind,
               length_score, bound_ok, tokens_out, finish_reason, train_id, created_at FROM length_evals;
    INSERT INTO evals (eval_id, model, source, backend, train_id, created_at)
        SELECT eval_id, model, model, 'transformers', any_value(train_id), min(created_at)
        FROM length_evals GROUP BY eval_id, model;
    DROP TABLE length_evals;
    """,
    # v11: every run of a shard a sharded build submitted, kept by the parent: a lost machine's
    # attempt is a row (crashed, when, on which worker), and so is the attempt that redid it.
    """
    CREATE TABLE shard_attempts (
        attempt_id VARCHAR PRIMARY KEY,     -- the Prefect flow run's id (local: run id + shard + attempt)
        run_id VARCHAR NOT NULL,            -- the parent build's run
        shard INTEGER NOT NULL,
        attempt INTEGER NOT NULL,           -- 1, 2, … up to [build] shard_attempts
        flow_run_name VARCHAR,
        worker VARCHAR,                     -- where it ran: Prefect's infrastructure pid (host:pid), or local
        state VARCHAR NOT NULL,             -- Completed | Crashed | Failed | …
        message VARCHAR,                    -- the state's message: why it ended
        file_found BOOLEAN,                 -- the shard's database existed when it started (it resumed)
        tokens_out BIGINT,                  -- what the attempt generated (its shard's run summary), if it finished
        started_at TIMESTAMPTZ,
        ended_at TIMESTAMPTZ NOT NULL
    );
    """,
]
