"""Bad config and prompt files are refused with one line naming the file, line or key."""

from pathlib import Path

import pytest

from longform.config import load_settings
from longform.errors import LongformError
from longform.prompts import load_prompts, prompt_id_for

ROOT = Path(__file__).resolve().parents[1]


def test_demo_config_is_valid():
    settings = load_settings(ROOT / "configs" / "demo.toml")
    assert settings.endpoint.kind == "embedded"
    assert settings.endpoint.dialect == "json_object"
    assert len(load_prompts(ROOT / settings.build.prompts)) == 3
    assert settings.judges.rubric and settings.judges.pairwise and settings.gateau.enabled


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


@pytest.mark.parametrize("toml, message", [
    ("[endpoint]\nconcurency = 4\n", "unknown key [endpoint] concurency"),
    ("[buidl]\nname = 'x'\n", "unknown key buidl"),
    ("[endpoint]\nconcurrency = 0\n", "[endpoint] concurrency: Input should be greater than or equal to 1"),
    ("[endpoint]\nkind = 'openai'\n", "needs base_url"),
    ("[endpoint]\napi_key = 'sk-123'\n", "unknown key [endpoint] api_key"),
    ("[build\nname = 1\n", "invalid TOML"),
    ("[endpoint]\nkind = 'openai'\nbase_url = 'http://a/v1'\n[[endpoints]]\nkind = 'openai'\nbase_url = 'http://b/v1'\n",
     "give [endpoint] or [[endpoints]], not both"),
    ("[[endpoints]]\nkind = 'openai'\nbase_url = 'http://a/v1'\nmodel = 'x'\n"
     "[[endpoints]]\nkind = 'openai'\nbase_url = 'http://b/v1'\nmodel = 'y'\n",
     "[[endpoints]] 2: model 'y' differs from endpoint 1's 'x'"),
    ("[[endpoints]]\nkind = 'openai'\nbase_url = 'http://a/v1'\n[[endpoints]]\nkind = 'openai'\n",
     "[endpoints] #2: kind = \"openai\" needs base_url"),
    ("[[endpoints]]\nkind = 'openai'\nbase_url = 'http://a/v1'\nweight = 0\n",
     "[endpoints] #1.weight: Input should be greater than 0"),
    ("[build]\nrouting = 'random'\n", "[build] routing: Input should be 'affinity', 'least_loaded' or 'round_robin'"),
])
def test_bad_config_names_the_key(tmp_path, toml, message):
    path = _write(tmp_path, "c.toml", toml)
    with pytest.raises(LongformError) as e:
        load_settings(path)
    assert str(e.value).startswith(str(path))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_config(tmp_path):
    with pytest.raises(LongformError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_openai_endpoint_uses_json_schema_dialect(tmp_path):
    path = _write(tmp_path, "c.toml", "[endpoint]\nkind = 'openai'\nbase_url = 'http://h:8000/v1'\n")
    assert load_settings(path).endpoint.dialect == "json_schema"


@pytest.mark.parametrize("lines, message", [
    ('{"instruction": "a"}\n{"instruction": "b"\n', ":2: malformed JSON"),
    ('{"instruction": "   "}\n', ":1: empty instruction"),
    ('{"prompt": "x"}\n', ":1: missing string key 'instruction'"),
    ('[1, 2]\n', ":1: expected a JSON object"),
    ('{"id": "a", "instruction": "x"}\n{"id": "a", "instruction": "y"}\n', ":2: duplicate prompt id 'a'"),
    ('{"instruction": "x", "target_words": -5}\n', ":1: 'target_words' must be a positive integer"),
    ('\n\n', "no prompts in file"),
])
def test_bad_prompts_name_file_and_line(tmp_path, lines, message):
    path = _write(tmp_path, "p.jsonl", lines)
    with pytest.raises(LongformError) as e:
        load_prompts(path)
    assert str(e.value).startswith(str(path))
    assert message in str(e.value)


def test_non_utf8_prompts(tmp_path):
    path = _write(tmp_path, "p.jsonl", b'{"instruction": "ok"}\n{"instruction": "\xff"}\n')
    with pytest.raises(LongformError, match=r"p.jsonl:2: not UTF-8"):
        load_prompts(path)


def test_prompts_keep_ids_targets_and_extra_fields(tmp_path):
    path = _write(tmp_path, "p.jsonl",
                  '{"instruction": "Write 300 words", "lang": "en"}\n{"id": 7, "instruction": "b", "target_words": 50}\n')
    first, second = load_prompts(path)
    assert first.prompt_id == prompt_id_for("Write 300 words") and first.meta == {"lang": "en"}
    assert second.prompt_id == "7" and second.target_words == 50
    assert len(load_prompts(path, limit=1)) == 1


def test_prefect_yaml_deployments_point_at_the_build_flows_and_valid_configs():
    import importlib

    import yaml
    from prefect import Flow

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = set()
    for deployment in spec["deployments"]:
        path, _, name = deployment["entrypoint"].partition(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, name), Flow)
        names.add(name)
        if name == "build":  # scheduled builds of a config; shard runs get theirs from the parent
            settings = load_settings(ROOT / deployment["parameters"]["config"])
            assert settings.build.prompts is not None
            assert deployment["schedules"][0]["cron"]
    assert names == {"build", "build_shard"}


@pytest.mark.parametrize("extra, shards, message", [
    ('[writers]\nenabled = ["agentwrite", "self_lengthen"]\n', None, "--until-accepted runs one writer"),
    ("", 2, "cannot be sharded"),
    ('[build]\nshards = 3\n', None, "cannot be sharded"),   # a deployment's [build] shards, no CLI flag
])
def test_a_build_shape_that_cannot_run_is_refused_in_one_place(tmp_path, extra, shards, message):
    """The CLI and the flow (a deployment's run has no CLI) both ask load_build_inputs."""
    import asyncio

    from flows.build import build
    from longform.build.inputs import load_build_inputs

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"instruction": "Write about tea.", "target_words": 100}\n')
    build_table = f'[build]\nprompts = "{prompts}"\ndb = "{tmp_path / "c.duckdb"}"\nout_dir = "{tmp_path}"\n'
    if extra.startswith("[build]"):
        build_table += extra.removeprefix("[build]\n")
        extra = ""
    config = tmp_path / "c.toml"
    config.write_text(build_table + extra)
    with pytest.raises(LongformError, match=message):
        load_build_inputs(config, shards=shards, until_accepted=5)
    if shards is None:
        with pytest.raises(LongformError, match=message):
            asyncio.run(build.fn(config=str(config), until_accepted=5))
    assert not (tmp_path / "c.duckdb").exists()
