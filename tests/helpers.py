from pathlib import Path

TINY_CONFIG = """
[build]
name = "{name}"
prompts = "{prompts}"
db = "{db}"
out_dir = "{out}"

[endpoint]
kind = "embedded"

[agentwrite]
plan_max_tokens = 200
max_section_words = 40
max_continuations = 0
"""

TINY_PROMPTS = (
    '{"id": "en", "instruction": "Write about a rainy morning.", "target_words": 60}\n'
    '{"id": "zh", "instruction": "写一篇50字的短文，介绍月亮。"}\n'
)


def tiny_build(tmp_path: Path, name: str = "tiny") -> Path:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(TINY_PROMPTS, encoding="utf-8")
    config = tmp_path / "build.toml"
    config.write_text(TINY_CONFIG.format(name=name, prompts=prompts, db=tmp_path / "corpus.duckdb",
                                         out=tmp_path / "out"), encoding="utf-8")
    return config
