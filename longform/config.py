"""Every setting, validated once at the edge.

One pydantic model per concern; unknown keys are errors (a mistyped key silently ignored is a
build that runs with the wrong settings). Secrets are never part of the config: an endpoint names
the environment variable that holds its key, so a config snapshot can be stored as it is.
"""

from __future__ import annotations

import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from longform.errors import LongformError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuildConfig(_Section):
    # Names the run and its export folder under out_dir.
    name: str = Field("build", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    prompts: Path | None = None  # JSONL prompts file (or --prompts)
    db: Path = Path("datasets_out/corpus.duckdb")  # the corpus's DuckDB file (or --db)
    out_dir: Path = Path("datasets_out")  # where exports, reports and shard files go
    samples_per_prompt: int = Field(1, ge=1)  # independent candidates per prompt (the index is in the cache key)
    seed: int = 0  # base seed; a request's seed is seed + its sample index
    # Prompts per Prefect task. Concurrency lives in the engine, so a shard is a unit of
    # bookkeeping (retry, observability), not of parallelism.
    shard_size: int = Field(256, ge=1)
    # With --until-accepted N: the most candidate samples to try (default 4 x N).
    candidate_budget: int | None = Field(None, ge=1)
    # Samples in progress at once (default: 4 x endpoint concurrency; 1 on the embedded server).
    # Enough to keep every slot busy; few enough that a sample's next request finds its prefix
    # still in the server's KV cache (llama.cpp keeps one: requests of one sample back to back
    # reuse all but the newest paragraph), and that a killed build leaves few samples half-done.
    max_active_samples: int | None = Field(None, ge=1)
    # With several endpoints: a sample's requests all go to one server while it is healthy, so its
    # prefix cache is reused ("affinity", engine/router.py). The others are for comparison.
    routing: Literal["affinity", "least_loaded", "round_robin"] = "affinity"
    # Split the build into this many shards, each written into its own DuckDB file by a run of the
    # `shard_deployment` (Prefect work-pool workers; or local processes with --local), then merged
    # (flows/shards.py). Shard files go to `shard_dir` (default <out_dir>/<name>/shards), which
    # may be a shared filesystem.
    shards: int = Field(1, ge=1)
    shard_dir: Path | None = None  # where shard databases go (default <out_dir>/<name>/shards)
    shard_deployment: str = "build-shard/longform"  # the Prefect deployment shard runs are submitted to
    # Runs of one shard the parent submits before the build fails naming it: a shard whose run
    # crashed (its machine lost: detected by Prefect's heartbeat automation, `longform deploy`) or
    # failed past Prefect's own retries is submitted again, to whichever worker takes it. Three
    # outlive two lost machines in one build; a shard that fails for a reason of its own (a bad
    # node's config) stops after three instead of looping.
    shard_attempts: int = Field(3, ge=1)
    # Set by longform on a shard's own runs (which shard of `shards` it wrote); not for configs.
    shard: int | None = Field(None, ge=0)


class EndpointConfig(_Section):
    # "embedded" (the llama.cpp server longform starts) or "openai" (any compatible server).
    kind: Literal["embedded", "openai"] = "embedded"
    base_url: str | None = None  # the server's OpenAI-compatible URL, e.g. "http://gpu-box:8000/v1"
    model: str | None = None  # the served model's name (default: the one the server serves)
    api_key_env: str | None = None  # the NAME of an environment variable holding the key, never the key
    # Requests in flight (default: 1 embedded, 32 otherwise). llama-cpp-python's server runs one
    # request at a time, so more would only queue there.
    concurrency: int | None = Field(None, ge=1)
    timeout_s: float = Field(600.0, gt=0)  # one request's timeout
    max_attempts: int = Field(5, ge=1)  # attempts for connection errors, timeouts and 5xx
    max_rate_limit_waits: int = Field(10, ge=0)  # 429 waits per request (Retry-After honoured)
    backoff_base_s: float = Field(0.5, gt=0)  # first backoff (exponential, full jitter)
    backoff_max_s: float = Field(30.0, gt=0)  # longest backoff
    # Stop the build when at least this share of the last `error_window` requests failed after
    # retries (0 disables). See engine/breaker.py.
    error_window: int = Field(20, ge=0)
    max_error_rate: float = Field(0.5, gt=0, le=1)  # the share of `error_window` that stops it
    # Structured-output dialect: llama-cpp-python takes {"type": "json_object", "schema": ...},
    # vLLM/SGLang/OpenAI take {"type": "json_schema", ...}. "auto" picks by `kind`.
    json_dialect: Literal["auto", "json_object", "json_schema", "none"] = "auto"
    context_window: int = Field(8192, ge=512)  # the model's window; the embedded server is started with it
    # How to continue an assistant prefix (Self-Lengthen): vLLM and SGLang take
    # continue_final_message; "none" if the server cannot. The embedded server always uses its
    # completions endpoint with the model's chat template.
    continuation: Literal["continue_final_message", "none"] = "continue_final_message"
    # Optional prices in your currency per million tokens, for cost estimates in `longform status`.
    price_in_per_mtok: float | None = Field(None, ge=0)
    price_out_per_mtok: float | None = Field(None, ge=0)  # per million generated tokens
    # Embedded server only.
    n_threads: int | None = Field(None, ge=1)
    # With several endpoints: this one's share of new samples (by capacity; engine/router.py), and
    # how long it gets no new work after it went down before one request probes it again.
    weight: float = Field(1.0, gt=0)
    cooldown_s: float = Field(10.0, gt=0)  # doubles while it keeps failing

    @model_validator(mode="after")
    def _check_kind(self) -> "EndpointConfig":
        if self.kind == "openai" and not self.base_url:
            raise ValueError("kind = \"openai\" needs base_url (e.g. \"http://localhost:8000/v1\")")
        if self.kind == "embedded" and self.base_url:
            raise ValueError("base_url is set but kind = \"embedded\"; set kind = \"openai\" to use it")
        return self

    @property
    def max_concurrency(self) -> int:
        return self.concurrency or (1 if self.kind == "embedded" else 32)

    @property
    def dialect(self) -> str:
        if self.json_dialect != "auto":
            return self.json_dialect
        return "json_object" if self.kind == "embedded" else "json_schema"


class GenerationConfig(_Section):
    temperature: float = Field(0.7, ge=0)  # writers' sampling temperature
    top_p: float = Field(0.95, gt=0, le=1)  # writers' nucleus sampling


class AgentWriteConfig(_Section):
    max_steps: int = Field(50, ge=1, le=50)  # most plan steps (paragraphs)
    # LongWriter asks for paragraphs of 200-1000 words; a planned step above this is split.
    max_section_words: int = Field(1000, ge=10)
    plan_max_tokens: int = Field(1024, ge=64)  # budget of the plan request
    # Used when an instruction names no length and has no target_words.
    default_words: int = Field(1000, ge=50)
    # max_tokens per section = words budget x tokens_per_word x headroom. The ratio is
    # re-measured from each sample's own answers once it has one.
    tokens_per_word: float = Field(1.5, gt=0)
    headroom: float = Field(1.5, ge=1)  # see tokens_per_word
    # A section shorter than this share of its budget gets continuation requests.
    min_section_ratio: float = Field(0.6, ge=0, le=1)
    max_continuations: int = Field(2, ge=0)  # continuation requests a short section may get
    # Closed-loop length control (writers/agentwrite.py): re-allocate the words still owed after each
    # section, stop early past the spec's band, and add up to `max_extra_sections` sections when the
    # plan is done and the answer is still short of it. Off: LongWriter's open loop.
    length_control: bool = True
    max_extra_sections: int = Field(3, ge=0)  # sections length control may add
    # Lengths are counted in words, but a model pays in tokens: a small model that loops on ids, markup
    # or symbols writes thousands of tokens and hardly a word, and length control, seeing the answer
    # short, would ask for ever more. An answer spending more tokens per word than this (over at least
    # 64 tokens) gets no continuation and, under length control, stops the sample after that section
    # (`length_stop = "degenerate_text"`); no request is sized above this ratio. Natural text on
    # SmolLM2's tokenizer: English 1.1-1.2, Chinese 1.3-1.7 per character; one looping demo sample
    # spent 7.3 over its whole text, 24 in its worst section.
    max_tokens_per_word: float = Field(4.0, gt=0)
    # How a section request is laid out (writers/agentwrite.py says more). "single_message": LongWriter's
    # own, one user message holding the instruction, the plan, the text so far and which paragraph to
    # write; a prefix cache reuses it up to the text so far, so each section is read once more.
    # "continuation": one fixed message (instruction and plan) and the text so far as the start of the
    # assistant's answer, which the model continues: every request extends the previous one, and a
    # prefix cache reads nothing twice. "conversation": a chat, one user turn per section.
    layout: Literal["continuation", "single_message", "conversation"] = "continuation"


class SelfLengthenConfig(_Section):
    # Extender micro-rounds per answer; each is accepted only if it passes the filters and grows.
    rounds: int = Field(3, ge=1)
    # Keep the final answer only if it is longer than this multiple of the generator's.
    min_growth: float = Field(1.2, ge=1)
    generator_max_tokens: int = Field(1024, ge=16)  # budget of the generator's first answer
    round_max_tokens: int = Field(2048, ge=16)  # budget of one Extender round
    tokens_per_word: float = Field(1.5, gt=0)  # to turn word budgets into max_tokens
    # The paper's filters a round must pass to be accepted (all are run and stored either way).
    required_filters: list[Literal["ends_with_punctuation", "repeated_ngram", "meta_words"]] = [
        "ends_with_punctuation", "repeated_ngram", "meta_words"]
    # Extender training input: each line of the first answer kept with this probability.
    noise_keep: float = Field(0.8, gt=0, le=1)
    # Macro iterations. Each writes training data for both roles (datasets_out/<build>/self_lengthen/
    # iter_<k>/<role>/); after iteration k a LoRA adapter per role is trained on it ([train] settings,
    # TRL) and iteration k+1 writes with them: on the embedded endpoint served by llama.cpp as GGUF
    # LoRA files (by transformers, hf_server.py, for a train_model other than "embedded"), on a remote
    # one loaded into the running vLLM server (its runtime LoRA API).
    iterations: int = Field(1, ge=1, le=10)
    # The base the roles are retrained from (an HF id in the local cache, a path, or "embedded"):
    # the endpoint's model in transformers form. Default: "embedded" on the embedded endpoint, the
    # endpoint's `model` on a remote one (Settings.lengthen_base).
    train_model: str | None = None
    train_max_steps: int | None = Field(None, ge=1)  # a cap on each retraining's optimizer steps


class InstructionsConfig(_Section):
    # Self-instruct: before writing, grow the build's prompts (the seeds) by `n` new instructions.
    enabled: bool = False
    n: int = Field(10, ge=1)  # new instructions to keep
    shots: int = Field(3, ge=1)  # known prompts shown as examples in each request
    max_attempts: int = Field(40, ge=1)  # most candidates to try
    temperature: float = Field(0.9, ge=0)  # sampling temperature for candidates
    # rapidfuzz ratio from which a candidate counts as a copy of a known prompt.
    near_duplicate: float = Field(85.0, gt=0, le=100)


class WritersConfig(_Section):
    # Both may run on the same prompts in one build, to compare them in SQL. Self-Lengthen writes
    # [build] samples_per_prompt answers per instruction.
    enabled: list[Literal["agentwrite", "self_lengthen"]] = Field(["agentwrite"], min_length=1)


class JudgesConfig(_Section):
    # The judges run on the build's endpoints, or on their own ([[judges.endpoints]], same keys as
    # [[endpoints]]: e.g. a larger model judging while a small one writes). A sample is judged as
    # soon as it is written, and a prompt's pairs as soon as its last candidate is.
    endpoints: list[EndpointConfig] | None = Field(None, min_length=1)
    rubric: bool = False  # run the rubric judge (six dimensions, 1-5 each → S_q)
    pairwise: bool = False  # run the pairwise judge (each pair in both orders)
    max_tokens: int = Field(128, ge=16)  # budget of a judge request
    temperature: float = Field(0.0, ge=0)  # judges' sampling temperature (0: the argmax)
    # "logprobs": graded verdicts read from token log-probabilities (judges/verdicts.py): the pairwise
    # judge answers one letter and P(A) comes from its top alternatives; rubric ratings are also
    # scored in expectation. Where the server sends no logprobs, the row falls back to the argmax
    # and says so. "text": the argmax only, as JSON.
    verdicts: Literal["logprobs", "text"] = "logprobs"
    top_logprobs: int = Field(20, ge=2, le=20)  # alternatives per token asked for (the most servers give)
    # Pairs judged per prompt, in both orders (all pairs of its first candidates up to this many).
    max_pairs_per_prompt: int = Field(6, ge=1)
    # What the pairwise length-control fit compares (its per-group quality θ): samples' writer or model.
    compare: Literal["writer", "model"] = "writer"
    # Per-instruction group offsets in the pairwise fit, for instructions with at least this many
    # cross-group verdicts (off by default: on a custom prompt set they are rarely identified).
    instruction_terms_min: int | None = Field(None, ge=2)


FilterName = Literal["min_length_score", "length_bound", "plan_labels", "repeated_paragraphs", "near_duplicate_prompt",
                     "ends_with_punctuation", "repeated_ngram", "meta_words"]


class FiltersConfig(_Section):
    # rapidfuzz ratios (0-100) at or above which two prompts, or two paragraphs of one sample,
    # count as near-duplicates.
    near_duplicate_prompts: float = Field(90.0, gt=0, le=100)
    repeated_paragraphs: float = Field(90.0, gt=0, le=100)  # the same, for two paragraphs of one sample
    # Filters whose failure excludes a sample from selection; the others are only recorded.
    required: list[FilterName] = ["min_length_score", "length_bound", "plan_labels", "repeated_paragraphs", "near_duplicate_prompt"]


class SelectionConfig(_Section):
    # SFT: keep samples with S_l at least this (also --until-accepted's test).
    min_length_score: float = Field(0.0, ge=0, le=100)
    # Floor on the length-controlled rubric score (needs [judges] rubric).
    min_lc_quality: float | None = Field(None, ge=0, le=100)
    # DPO pairs: chosen = the best candidate of a prompt that meets the length requirement,
    # rejected = its worst candidate if at least this far below (in the ranking score's units).
    dpo_min_length_score: float = Field(80.0, ge=0, le=100)
    dpo_margin: float = Field(5.0, ge=0)  # the gap the pair needs


class GateauConfig(_Section):
    enabled: bool = False  # rank the SFT selection with GATEAU after scoring (needs the `train` extra)
    # The long-context model, and optionally a homologous short-context one; without it the short
    # model is the same model limited to the last `window` tokens. An HF id in the local cache, a
    # path, or "embedded".
    model: str = "embedded"
    short_model: str | None = None  # see model
    window: int = Field(512, ge=16)  # the short model's window in tokens
    alpha: float = Field(0.8, ge=0, le=1)  # weight of HMG (vs CAM) in the final score
    # Keep the top k, or else the top share, of the samples the SFT policy selected.
    top_k: int | None = Field(None, ge=1)
    ratio: float | None = Field(0.5, gt=0, le=1)  # the share, when top_k is not set
    max_segments: int = Field(8, ge=1)  # CAM's context segments per sample
    batch_size: int = Field(8, ge=1)  # sequences per forward pass
    # The models' weights and arithmetic: float32, bfloat16, or auto (bfloat16 where the GPU or CPU
    # computes in it natively, float32 elsewhere). bfloat16 moves the measures in their third digit.
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    max_tokens: int = Field(8192, ge=64)  # longest sample scored (tokens); longer ones are not scored
    # CAM scores this many tokens at the start of the later part.
    cam_probe: int = Field(256, ge=8)


class ExportConfig(_Section):
    enabled: bool = True  # export the run's selections at the end of a build
    # Share of prompts (by hash of their id) whose rows go to the test split.
    test_ratio: float = Field(0.1, ge=0, lt=1)
    # Prefix each SFT answer with Ruler's Meta Length Token for its length ("[MLT:300] ...").
    meta_length_tokens: bool = False
    # Rewrite each instruction's length phrase to its answer's real length (longform/dataset/relabel.py); the
    # instruction as asked stays in the row's `original_instruction`.
    relabel_length: bool = False
    # Evaluation prompt files (JSONL, longform's or LongBench-Write's): a sample whose instruction
    # overlaps one of them is not exported, with a `decontaminate` row in filter_checks saying which.
    decontaminate: list[Path] = []
    # LongWriter's plan-augmented ablation: the SFT target is the plan, then the answer.
    include_plan: bool = False


class TrainConfig(_Section):
    # Passed to TRL's SFTConfig / DPOConfig under TRL's own names, e.g. learning_rate, num_train_epochs,
    # max_length, gradient_accumulation_steps, beta (DPO).
    sft: dict[str, Any] = {}
    dpo: dict[str, Any] = {}  # see sft
    lora: bool = False  # train a LoRA adapter (peft) instead of the whole model
    lora_r: int = Field(16, ge=1)  # LoRA rank
    lora_alpha: int = Field(32, ge=1)  # LoRA scaling
    lora_dropout: float = Field(0.05, ge=0, lt=1)  # LoRA dropout
    lora_target_modules: str | list[str] = "all-linear"  # modules adapted (peft's names)
    # An example longer than [train.sft] / [train.dpo] max_length is never cut (a cut answer loses its
    # end of sequence and teaches the model not to stop): "drop" leaves it out and says how many,
    # "refuse" stops before training. Without a configured max_length it is the longest example's.
    over_length: Literal["drop", "refuse"] = "drop"


def check_pool(endpoints: list[EndpointConfig], where: str) -> None:
    """One pool serves one model the same way: the request body, and so the cache key, must not
    depend on which of its servers answers."""
    first = endpoints[0]
    for i, ep in enumerate(endpoints[1:], start=2):
        for name, a, b in (("model", ep.model, first.model), ("json_dialect", ep.dialect, first.dialect),
                           ("continuation", ep.continuation, first.continuation),
                           ("context_window", ep.context_window, first.context_window)):
            if a != b:
                raise ValueError(f"{where} {i}: {name} {a!r} differs from endpoint 1's {b!r}; the endpoints of one"
                                 " pool must serve the same model the same way (a different model can judge under"
                                 " [[judges.endpoints]])")
    if sum(ep.kind == "embedded" for ep in endpoints) > 1:
        raise ValueError(f"{where}: more than one embedded endpoint; the embedded server is one local process")


class Settings(_Section):
    build: BuildConfig = BuildConfig()
    # One endpoint ([endpoint]) or a pool of them ([[endpoints]]); the embedded server by default.
    endpoint: EndpointConfig = EndpointConfig()
    endpoints: list[EndpointConfig] | None = Field(None, min_length=1)
    generation: GenerationConfig = GenerationConfig()
    writers: WritersConfig = WritersConfig()
    agentwrite: AgentWriteConfig = AgentWriteConfig()
    self_lengthen: SelfLengthenConfig = SelfLengthenConfig()
    instructions: InstructionsConfig = InstructionsConfig()
    judges: JudgesConfig = JudgesConfig()
    filters: FiltersConfig = FiltersConfig()
    selection: SelectionConfig = SelectionConfig()
    gateau: GateauConfig = GateauConfig()
    export: ExportConfig = ExportConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _check_pools(self) -> "Settings":
        if self.endpoints is not None:
            if self.endpoint != EndpointConfig():  # a stored snapshot carries both, the single one default
                raise ValueError("give [endpoint] or [[endpoints]], not both")
            check_pool(self.endpoints, "[[endpoints]]")
        if self.judges.endpoints is not None:
            check_pool(self.judges.endpoints, "[[judges.endpoints]]")
        return self

    @property
    def writer_endpoints(self) -> list[EndpointConfig]:
        return list(self.endpoints) if self.endpoints else [self.endpoint]

    @property
    def primary(self) -> EndpointConfig:
        """The writers' first endpoint: what the pool serves (model, window) and its retry settings."""
        return self.writer_endpoints[0]

    @property
    def lengthen_base(self) -> str:
        """What Self-Lengthen's roles are retrained from ([self_lengthen] train_model, by default the endpoint's model)."""
        if self.self_lengthen.train_model:
            return self.self_lengthen.train_model
        primary = self.primary
        if primary.kind == "embedded":
            return "embedded"
        if not primary.model:
            raise LongformError("[self_lengthen] iterations > 1 retrains the roles from the endpoint's model, but"
                                " [endpoint] model is not set; set it or [self_lengthen] train_model")
        return primary.model

    @property
    def active_samples(self) -> int:
        if self.build.max_active_samples:
            return self.build.max_active_samples
        pool = self.writer_endpoints
        if all(ep.kind == "embedded" for ep in pool):
            return 1
        return 4 * sum(ep.max_concurrency for ep in pool)

    def snapshot(self) -> dict:
        """The config as stored with a run. Holds no secrets: keys are referenced by env var name."""
        return self.model_dump(mode="json")

    @classmethod
    def from_stored(cls, config: dict) -> "Settings":
        """A run's stored config read as the data it is: a key an earlier (or later) version had and
        this one does not is left out, rather than refused as it would be in a config file."""
        def section(annotation: object) -> type[BaseModel] | None:
            # The settings model a field holds, directly or in a list / an optional: EndpointConfig
            # for `list[EndpointConfig] | None`.
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                return annotation
            return next((m for m in map(section, typing.get_args(annotation)) if m), None)

        def known(model: type[BaseModel], data: object) -> object:
            if isinstance(data, list):
                return [known(model, item) for item in data]
            if not isinstance(data, dict):
                return data
            out = {}
            for key, value in data.items():
                field = model.model_fields.get(key)
                if field is not None:
                    sub = section(field.annotation)
                    out[key] = known(sub, value) if sub else value
            return out
        return cls.model_validate(known(cls, config))


def load_settings(path: Path, **overrides: object) -> Settings:
    """Read and validate a TOML config; `overrides` are `section.key` values from the CLI."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LongformError(f"{path}: config file not found") from None
    except UnicodeDecodeError as e:
        raise LongformError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise LongformError(f"{path}: invalid TOML: {e}") from None
    for dotted, value in overrides.items():
        if value is not None:
            section, key = dotted.split(".")
            raw.setdefault(section, {})[key] = value
    return parse_settings(raw, source=str(path))


def parse_settings(raw: dict, source: str = "<config>") -> Settings:
    try:
        return Settings.model_validate(raw)
    except ValidationError as e:
        raise LongformError(f"{source}: {describe_error(e)}") from None


def describe_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = [str(part) for part in err["loc"]]
    # List items are numbered from 1, as a user counts [[endpoints]] tables: "[endpoints] #2.base_url".
    rest = ".".join(f"#{int(part) + 1}" if part.isdigit() else part for part in loc[1:])
    where = f"[{loc[0]}] {rest}" if len(loc) > 1 else (loc[0] if loc else "")
    if err["type"] == "extra_forbidden":
        return f"unknown key {where}".rstrip()
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg
