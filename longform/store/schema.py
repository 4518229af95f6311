"""The schema's shape as the code uses it: its version and the columns of the tables written in
batches (appends.py). The tables themselves are made by the migrations in migrations.py.
"""

from longform.store.migrations import MIGRATIONS

LATEST = len(MIGRATIONS)

# Tables written through the batched appender, with their columns in insert order.
APPEND_TABLES: dict[str, tuple[str, ...]] = {
    "prompts": ("prompt_id", "instruction", "target_words", "meta", "source", "created_at", "min_words", "max_words"),
    "requests": ("request_id", "key", "run_id", "stage", "model", "request", "response_text", "finish_reason",
                 "tokens_in", "tokens_out", "latency_s", "attempts", "error", "created_at", "sample_id", "prompt_id",
                 "section", "endpoint", "logprobs"),
    "texts": ("hash", "text"),
    "samples": ("sample_id", "prompt_id", "run_id", "writer", "model", "sample_index", "text", "words",
                "length_counter", "required_words", "required_source", "length_score", "n_sections",
                "plan_source", "tokens_out", "created_at", "length_kind", "length_low", "length_high", "length_unit",
                "length_span", "bound_ok", "length_stop"),
    "sections": ("sample_id", "idx", "main_point", "planned_words", "text", "words", "length_counter",
                 "continuations", "finish_reason", "budget_words", "elided"),
    "judgments": ("judgment_id", "run_id", "kind", "judge_model", "prompt_id", "sample_id", "other_sample_id",
                  "scores", "quality", "winner", "parse_status", "raw", "key", "created_at", "p_first",
                  "expected_quality", "signal"),
    "filter_checks": ("run_id", "subject", "subject_id", "filter", "passed", "reason", "created_at"),
    "length_fits": ("run_id", "judge_model", "kind", "status", "reason", "n", "phi", "ci_low", "ci_high", "scale",
                    "detail", "created_at"),
    "scores": ("run_id", "sample_id", "metric", "value", "source", "created_at"),
    "selections": ("selection_id", "run_id", "purpose", "prompt_id", "sample_id", "rejected_sample_id", "selected",
                   "reason", "scores", "created_at"),
    "eval_answers": ("eval_id", "model", "prompt_id", "instruction", "answer_key", "text", "words", "length_counter",
                     "required_words", "length_kind", "length_low", "length_high", "length_unit", "length_score",
                     "bound_ok", "tokens_out", "max_tokens", "finish_reason", "repeated_ngram", "repeated_paragraphs",
                     "quality", "judge_model", "error", "train_id", "created_at"),
    "lengthen_steps": ("step_id", "run_id", "prompt_id", "sample_id", "parent_step_id", "iteration", "round", "role",
                       "words_before", "words_after", "length_counter", "verdicts", "accepted", "reason",
                       "finish_reason", "text", "created_at"),
    "instruction_candidates": ("candidate_id", "run_id", "attempt", "instruction", "accepted", "reason", "key",
                               "created_at"),
    "gateau_measures": ("key", "sample_id", "status", "reason", "log_ppl_long", "log_ppl_short", "cam", "segments",
                        "scored_tokens", "created_at"),
    "failures": ("failure_id", "run_id", "stage", "prompt_id", "sample_id", "key", "reason", "detail",
                 "created_at"),
    "shard_attempts": ("attempt_id", "run_id", "shard", "attempt", "flow_run_name", "worker", "state", "message",
                       "file_found", "tokens_out", "started_at", "ended_at"),
}
