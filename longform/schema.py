"""The DuckDB schema as an ordered list of migrations.

A database records the highest migration it has applied; opening it applies the rest in one
transaction. Never edit a released migration: append a new one, so every database converges on the
same schema whatever version created it.
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
        required_source VARCHAR NOT NULL,   -- target_words | instruction | default
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
]

LATEST = len(MIGRATIONS)

# Tables written through the batched appender, with their columns in insert order.
APPEND_TABLES: dict[str, tuple[str, ...]] = {
    "prompts": ("prompt_id", "instruction", "target_words", "meta", "source", "created_at"),
    "requests": ("request_id", "key", "run_id", "stage", "model", "request", "response_text", "finish_reason",
                 "tokens_in", "tokens_out", "latency_s", "attempts", "error", "created_at"),
    "samples": ("sample_id", "prompt_id", "run_id", "writer", "model", "sample_index", "text", "words",
                "length_counter", "required_words", "required_source", "length_score", "n_sections",
                "plan_source", "tokens_out", "created_at"),
    "sections": ("sample_id", "idx", "main_point", "planned_words", "text", "words", "length_counter",
                 "continuations", "finish_reason"),
    "failures": ("failure_id", "run_id", "stage", "prompt_id", "sample_id", "key", "reason", "detail",
                 "created_at"),
}
