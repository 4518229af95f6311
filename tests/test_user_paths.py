"""Paths a user takes that no other test walks: a text-plan endpoint (no structured output) with
both writers in one build, `build --limit`, `query --format table`, `status --run` with a hostile
run id, `[judges] compare = "model"`, a second build refused while one holds the database, and the
role server's errors. The model is a deterministic stand-in over real HTTP; the CLI is the real one."""

import json
import math
import re
import subprocess
import sys

import httpx
import pytest

from judges.scoring import score_run
from longform.config import load_settings
from longform.models.hf_server import HFServer
from longform.store import Store

from fault_server import FaultServer, distinct_words, ok
from helpers import longform, remote_build, rows

TEXT_PLAN = "\n".join(f"Paragraph {i} - Main Point: part {i} of the piece, in detail - Word Count: 60 words"
                      for i in (1, 2, 3))


def stand_in(body: dict) -> dict:
    """A text plan when asked for one, a graded one-letter verdict (the longer text preferred) when
    asked to compare, and otherwise distinct words as long as max_tokens allows."""
    content = body.get("prompt") or body["messages"][-1]["content"]
    if "breaking a long writing instruction into subtasks" in content:
        return ok(TEXT_PLAN)
    shown = re.findall(r"<<<BEGIN RESPONSE [AB] \w+>>>\n(.*?)\n<<<END", content, re.DOTALL)
    if len(shown) == 2:
        a, b = (len(t.split()) for t in shown)
        p = 1 / (1 + math.exp(-(a - b) / 40))
        letter = "A" if p >= 0.5 else "B"
        return ok(letter, logprobs=[(letter, math.log(max(p, 1 - p)), {"A": math.log(p), "B": math.log(1 - p)})])
    return distinct_words(body, vary=30)


@pytest.fixture(scope="module")
def built(prefect, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paths")
    with FaultServer() as server:
        server.answer = stand_in
        config = remote_build(tmp, server.base_url, 5, name="paths", endpoint_extra='json_dialect = "none"')
        config.write_text(config.read_text() + """
[writers]
enabled = ["agentwrite", "self_lengthen"]

[self_lengthen]
rounds = 1
min_growth = 1.1
generator_max_tokens = 30
round_max_tokens = 80

[judges]
pairwise = true
rubric = false
compare = "writer"
""")
        proc = longform("build", "--config", str(config), "--limit", "4", cwd=tmp, env={"PREFECT_API_URL": prefect})
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        yield tmp, config, out, server


def test_text_plans_two_writers_and_limit(built):
    tmp, _, _, server = built
    db = tmp / "corpus.duckdb"
    assert not any("response_format" in b for b in server.received)  # the endpoint has no structured output
    assert rows(db, "select count(*) from prompts") == [(4,)]          # --limit 4 of 5
    written = rows(db, "select prompt_id, writer, plan_source from samples order by prompt_id, writer")
    assert [(p, w) for p, w, _ in written] == [(f"p{i:03d}", w) for i in range(4) for w in ("agentwrite", "self_lengthen")]
    assert {s for _, w, s in written if w == "agentwrite"} == {"text"}  # parsed from LongWriter's text format
    sections = rows(db, "select count(*) from sections join samples using (sample_id) group by sample_id")
    assert len(sections) == 4 and all(n >= 3 for (n,) in sections)  # the three planned, and any extra
    assert rows(db, "select count(*) from failures") == [(0,)]


def test_query_as_a_table_and_status_of_a_named_run(built):
    tmp, _, _, _ = built
    db = tmp / "corpus.duckdb"
    shown = longform("query", "select writer, count(*) as n from samples group by 1 order by 1", "--db", str(db),
                     "--format", "table", cwd=tmp)
    out, err = shown.communicate(timeout=120)
    assert shown.returncode == 0, err
    assert re.search(r"writer\s*┃\s*n", out) and re.search(r"agentwrite\s*│\s*4", out) \
        and re.search(r"self_lengthen\s*│\s*4", out)

    [(run_id,)] = rows(db, "select run_id from runs")
    status = longform("status", "--db", str(db), "--run", run_id, cwd=tmp)
    out, err = status.communicate(timeout=120)
    assert status.returncode == 0 and run_id in out, err
    assert re.search(r"│ plan\s+│ 4 ", out) and re.search(r"│ judge_pairwise\s+│ 8 ", out)
    hostile = longform("status", "--db", str(db), "--run", "x' or '1'='1", cwd=tmp)
    out, err = hostile.communicate(timeout=120)
    assert hostile.returncode == 2 and err.strip().splitlines() == [f"error: {db}: no run \"x' or '1'='1\""]


def test_compare_groups_by_writer_or_by_model(built):
    tmp, config, _, _ = built
    db = tmp / "corpus.duckdb"
    by_writer = json.loads(rows(db, "select detail from length_fits where kind = 'pairwise'")[0][0])
    assert set(by_writer["groups"]) == {"agentwrite", "self_lengthen"}
    # The same judgments, fitted per generator model: one model wrote everything, so no group term.
    settings = load_settings(config, **{"judges.compare": "model"})
    sample_ids = [s for (s,) in rows(db, "select sample_id from samples")]
    judgment_ids = [j for (j,) in rows(db, "select judgment_id from judgments")]
    with Store.open(db) as store:
        result = score_run(store, settings, run_id="r-by-model", sample_ids=sample_ids, judgment_ids=judgment_ids,
                           judge_model="fault-model")
    assert result.as_dict()["length_fits"]["pairwise"]["status"] == "fitted"
    by_model = json.loads(rows(db, "select detail from length_fits where run_id = 'r-by-model'"
                                   " and kind = 'pairwise'")[0][0])
    assert by_model["groups"] == {} and by_model["graded"] == by_writer["graded"] > 0


def test_a_second_build_is_refused_while_one_holds_the_database(built):
    tmp, config, _, _ = built
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path;"
                               " from longform.store import Store; s = Store.open(Path(sys.argv[1]));"
                               " print('open', flush=True); time.sleep(120)", str(tmp / "corpus.duckdb")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        second = longform("build", "--config", str(config), cwd=tmp)
        out, err = second.communicate(timeout=300)
        assert second.returncode == 2
        assert err.strip().splitlines() == [f"error: {tmp / 'corpus.duckdb'}: database is open for writing by another"
                                            f" longform process (PID {holder.pid}); wait for it to finish or use"
                                            " another --db"]
    finally:
        holder.kill()
        holder.wait()
    assert rows(tmp / "corpus.duckdb", "select count(*) from samples") == [(8,)]


def test_the_role_server_answers_every_failure_with_a_status_and_stays_up():
    with HFServer({}, context_window=2048) as server:
        url = server.base_url + "/chat/completions"
        missing = httpx.post(url, json={"model": "nope", "messages": []}, timeout=30)
        assert missing.status_code == 404 and "model 'nope' not served" in missing.json()["error"]["message"]
        bad = httpx.post(url, content=b"{not json", headers={"content-length": "9"}, timeout=30)
        assert bad.status_code == 400 and "bad request" in bad.json()["error"]["message"]

        def broken(body, chat):
            raise RuntimeError("CUDA out of memory")
        server.complete = broken
        failed = httpx.post(url, json={"model": "x", "messages": []}, timeout=30)
        assert failed.status_code == 500 and failed.json()["error"]["message"] == "RuntimeError: CUDA out of memory"
        assert httpx.get(server.base_url + "/models", timeout=30).status_code == 200  # still serving


def test_export_with_meta_length_tokens(tmp_path):
    """`export --mlt`: each SFT answer starts with Ruler's Meta Length Token for its measured length."""
    from longform.clock import now
    from longform.config import Settings
    from longform.length_reader import spec_for
    from longform.lengths import measure
    from longform.prompts import Prompt
    from datasets import load_dataset

    db = tmp_path / "c.duckdb"
    lengths = {"p300": 300, "p150": 150, "p100": 100}   # 100 words: between Ruler's buckets, no token
    with Store.open(db) as store:
        store.start_run("r-mlt", "mlt", Settings().snapshot(), None, None)
        prompts = [Prompt(p, f"Write {n} words.", n) for p, n in lengths.items()]
        store.add_prompts(prompts, "test")
        for prompt in prompts:
            p, text, spec = prompt.prompt_id, " ".join(["word"] * lengths[prompt.prompt_id]), spec_for(prompt, 1000)
            store.add("samples", {"sample_id": f"s-{p}", "prompt_id": p, "run_id": "r-mlt", "writer": "agentwrite",
                                  "model": "m", "sample_index": 0, "text": text, **spec.columns(),
                                  **measure(text, spec), "n_sections": 1, "created_at": now()})
            store.add("selections", {"selection_id": f"x-{p}", "run_id": "r-mlt", "purpose": "sft", "prompt_id": p,
                                     "sample_id": f"s-{p}", "selected": True, "reason": "test", "created_at": now()})
        store.finish_run("r-mlt", "finished", {})
    proc = longform("export", "--db", str(db), "--mlt", "--out-dir", str(tmp_path / "out"), "--test-ratio", "0",
                    cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    sft = load_dataset("parquet", data_dir=str(tmp_path / "out" / "mlt" / "sft"))["train"]
    answers = {r["prompt_id"]: r["messages"][1]["content"] for r in sft}
    assert answers["p300"].startswith("[MLT:300] word") and answers["p150"].startswith("[MLT:150] word")
    assert answers["p100"].startswith("word")
