"""A judged build on the embedded model, then, on its corpus, GATEAU, export → TRL training → eval on the
model's own weights. One build for the module: it is the suite's costliest to make."""

import asyncio
import json
import shutil

import pytest
from datasets import load_dataset

from flows.build import build

from helpers import cli, rows, tiny_build

pytestmark = pytest.mark.embedded  # the model's weights, in llama.cpp or transformers



def _run(*args, cwd):
    return cli(*args, cwd=cwd)


@pytest.fixture(scope="module")
def judged(prefect, tmp_path_factory):
    """A judged build with two candidates per prompt, selecting generously so both datasets have rows."""
    tmp = tmp_path_factory.mktemp("judged")
    config = tiny_build(tmp, name="judged")
    config.write_text(config.read_text().replace("out_dir", "samples_per_prompt = 2\nout_dir", 1) + """
[judges]
rubric = true
pairwise = true
max_tokens = 80

[filters]
required = ["min_length_score"]

[selection]
dpo_min_length_score = 0
dpo_margin = 0

[export]
enabled = false

[train.sft]
max_length = 256

[train.dpo]
max_length = 256
""")
    summary = asyncio.run(build(config=str(config)))
    return tmp, config, summary


@pytest.mark.slow
def test_judged_build_stores_verdicts_fits_and_decisions(judged, tmp_path):
    """The judged corpus built again in a copy of its database with GATEAU on: every request is
    answered from the cache, verdicts, length fits and decisions are stored, and GATEAU ranks what
    the SFT policy kept."""
    first_dir, first_config, first = judged
    db = tmp_path / "corpus.duckdb"
    for name in ("corpus.duckdb", "corpus.duckdb.journal"):
        if (first_dir / name).exists():
            shutil.copy(first_dir / name, tmp_path / name)
    config = tmp_path / "build.toml"
    config.write_text(first_config.read_text().replace(str(first_dir / "corpus.duckdb"), str(db))
                      + "\n[gateau]\nenabled = true\nwindow = 32\nratio = 0.5\n")
    summary = asyncio.run(build(config=str(config)))
    assert summary["requests_sent"] == 0 and summary["cache_hits"] == first["requests_sent"] > 0

    samples = {r[0]: r[1] for r in rows(db, "select sample_id, prompt_id from samples")}
    rubric = rows(db, "select sample_id, parse_status, quality, raw from judgments where kind = 'rubric'")
    assert {r[0] for r in rubric} == set(samples)            # each sample judged once
    for _, status, quality, raw in rubric:
        assert raw and status in ("json", "lenient", "unparsable", "failed")
        assert (quality is None) == (status in ("unparsable", "failed"))
    pairs = rows(db, "select prompt_id, sample_id, other_sample_id from judgments where kind = 'pairwise'")
    by_prompt = {}
    for sample_id, prompt_id in samples.items():
        by_prompt.setdefault(prompt_id, []).append(sample_id)
    expected = sum(2 for ids in by_prompt.values() if len(ids) == 2)   # one pair, both orders
    assert len(pairs) == expected
    assert {(a, b) for _, a, b in pairs} == {(b, a) for _, a, b in pairs}
    # Graded verdicts: each order's P(first) read from the verdict token's logprobs, and the pair's
    # position-debiased preference stored as a score of each candidate.
    graded = {(a, b): (p, signal) for a, b, p, signal in rows(
        db, "select sample_id, other_sample_id, p_first, signal from judgments where kind = 'pairwise'")}
    assert all(signal == "logprobs" and 0 <= p <= 1 for p, signal in graded.values()), graded
    preference = dict(rows(db, f"select sample_id, value from scores where run_id = '{summary['run_id']}'"
                               " and metric = 'pairwise_preference'"))
    for (a, b), (p_ab, _) in graded.items():
        p_ba = graded[(b, a)][0]
        if a < b:
            assert preference[a] == pytest.approx((p_ab + 1 - p_ba) / 2)
            assert preference[b] == pytest.approx(1 - (p_ab + 1 - p_ba) / 2)

    fits = rows(db, "select kind, status, reason, phi, ci_low, ci_high from length_fits where run_id = ?",
                [summary["run_id"]])
    assert {f[0] for f in fits} == ({"rubric", "pairwise"} if expected else {"rubric"})
    for kind, status, reason, phi, lo, hi in fits:
        assert (status == "fitted" and lo <= phi <= hi) or (status == "not_identified" and reason)
    decisions = rows(db, "select purpose, prompt_id, selected, reason from selections where run_id = ?"
                         " and purpose <> 'gateau'", [summary["run_id"]])
    assert sum(d[0] == "sft" for d in decisions) == len(samples)
    assert {d[1] for d in decisions if d[0] == "dpo"} == set(by_prompt)
    assert all(d[3] for d in decisions)
    assert summary["scoring"]["sft_selected"] == sum(d[2] for d in decisions if d[0] == "sft")

    # GATEAU ranks what the SFT policy kept, and the export takes its top half.
    kept = {r[0] for r in rows(db, f"select sample_id from selections where run_id = '{summary['run_id']}'"
                                    " and purpose = 'sft' and selected")}
    ranked = rows(db, f"select sample_id, selected from selections where run_id = '{summary['run_id']}'"
                       " and purpose = 'gateau'")
    assert {r[0] for r in ranked} == kept
    assert sum(r[1] for r in ranked) == -(-len(kept) // 2)
    metrics = rows(db, f"select metric, count(*) from scores where run_id = '{summary['run_id']}'"
                        " and metric like 'gateau%' group by all order by all")
    assert metrics == [(m, len(kept)) for m in sorted(["gateau_cam", "gateau_hmg", "gateau_hmg_raw",
                                                         "gateau_rank", "gateau_score"])]
    assert summary["scoring"]["gateau"]["ranked"] == len(kept)


@pytest.mark.slow
def test_export_train_and_eval_length(judged):
    tmp, config, summary = judged
    db = tmp / "corpus.duckdb"
    out = tmp / "exports"

    code, stdout, err = _run("export", "--db", str(db), "--name", "mine", "--out-dir", str(out), "--test-ratio", "0",
                             cwd=tmp)
    assert code == 0, err
    [(sft_selected,)] = rows(db, "select count(*) from selections where purpose = 'sft' and selected")
    [(pairs,)] = rows(db, "select count(*) from selections where purpose = 'dpo' and selected")
    assert sft_selected > 0 and pairs > 0
    sft = load_dataset("parquet", data_dir=str(out / "mine" / "sft"))["train"]
    dpo = load_dataset("parquet", data_dir=str(out / "mine" / "dpo"))["train"]
    assert len(sft) == sft_selected and len(dpo) == pairs
    assert [m["role"] for m in dpo[0]["prompt"]] == ["user"] and dpo[0]["chosen"][0]["role"] == "assistant"
    assert dpo[0]["chosen_sample_id"] != dpo[0]["rejected_sample_id"]
    card = (out / "mine" / "README.md").read_text()
    assert summary["run_id"] in card and "SmolLM2" in card and "Required filters: min_length_score" in card
    manifest = json.loads((out / "mine" / "longform-export.json").read_text())
    assert manifest["counts"]["sft_train"] == sft_selected

    code, _, err = _run("export", "--db", str(db), "--name", "mine", "--out-dir", str(out), cwd=tmp)
    assert code == 2 and "already exists; pass --force" in err
    code, _, err = _run("export", "--db", str(db), "--name", "../escape", "--out-dir", str(out), cwd=tmp)
    assert code == 2 and "no path separators" in err and not (tmp / "escape").exists()

    for kind in ("sft", "dpo"):
        code, stdout, err = _run("train", kind, "--dataset", str(out / "mine"), "--model", "embedded", "--max-steps", "2",
                                 "--config", str(config), "--output", str(tmp / f"model-{kind}"), "--db", str(db),
                                 cwd=tmp)
        assert code == 0, err[-3000:]
        assert (tmp / f"model-{kind}" / "model.safetensors").exists()
    runs = rows(db, "select kind, status, steps, final_loss, rows, params from train_runs order by kind")
    assert [(k, s, n) for k, s, n, *_ in runs] == [("dpo", "finished", 2), ("sft", "finished", 2)]
    assert all(loss is not None and loss == loss for *_, loss, _, _ in runs)   # a number, not NaN
    assert json.loads(runs[1][5])["max_length"] == 256
    # Provenance: a trained model leads back to the exported files and the run they came from.
    import hashlib
    lineage = rows(db, "select kind, dataset_hash, source_run_id, train_id, output_dir from train_runs order by kind")
    sft_hash = hashlib.sha256(b"train.parquet\0" + (out / "mine" / "sft" / "train.parquet").read_bytes()).hexdigest()
    assert lineage[1][1] == sft_hash and {r[2] for r in lineage} == {summary["run_id"]}
    [(versions,)] = rows(db, f"select versions from runs where run_id = '{summary['run_id']}'")
    versions = json.loads(versions)
    assert versions["longform"] == "0.1.0" and versions["duckdb"] and versions["transformers"]

    prompts = tmp / "eval.jsonl"
    prompts.write_text('{"id": "e30", "instruction": "Write a 30-word note about tea.", "target_words": 30}\n'
                       '{"id": "e50", "instruction": "写一篇50字的短文，介绍月亮。"}\n', encoding="utf-8")
    code, stdout, err = _run("eval", "--model", str(tmp / "model-sft"), "--prompts", str(prompts),
                             "--max-new-tokens", "24", "--db", str(db), "--out", str(tmp / "eval"), cwd=tmp)
    assert code == 0, err[-3000:]
    assert "mean S_l" in stdout
    evals = rows(db, "select prompt_id, required_words, words, length_score, tokens_out from eval_answers order by 1")
    assert [(p, r) for p, r, *_ in evals] == [("e30", 30), ("e50", 50)]
    # The trained model leads back to its training run, and so to its data and build.
    assert {t for (t,) in rows(db, "select train_id from eval_answers")} == {lineage[1][3]}
    assert rows(db, "select train_id from evals") == [(lineage[1][3],)]
    assert all(0 < tokens <= 24 and 0 <= score <= 100 for *_, score, tokens in evals)


@pytest.mark.slow
def test_export_relabels_decontaminates_and_adds_plans(judged):
    tmp, config, summary = judged
    db = tmp / "corpus.duckdb"
    evals = tmp / "eval-prompts.jsonl"   # one of the build's own instructions is an evaluation prompt
    evals.write_text('{"id": "held-out", "instruction": "Write about a rainy morning.", "target_words": 300}\n')
    out = tmp / "shaped"
    code, stdout, err = _run("export", "--db", str(db), "--name", "s", "--out-dir", str(out), "--test-ratio", "0",
                             "--relabel-length", "--decontaminate", str(evals), "--include-plan", cwd=tmp)
    assert code == 0, err
    sft = load_dataset("parquet", data_dir=str(out / "s" / "sft"))["train"]
    assert sft and {r["prompt_id"] for r in sft} == {"zh"}   # the English prompt overlapped: left out
    checks = rows(db, "select subject_id, passed, reason from filter_checks where filter = 'decontaminate'")
    left_out = [reason for _, passed, reason in checks if not passed]
    assert left_out and all("held-out" in r for r in left_out)
    for row in sft:
        # The instruction now asks for what the answer has; the original stays beside it.
        assert row["original_instruction"] == "写一篇50字的短文，介绍月亮。"
        answer = row["messages"][1]["content"]
        assert answer.startswith("Paragraph 1 - Main Point: ")
        words = row["words"]
        from longform.length_reader import read_length
        from longform.dataset.relabel import rounded
        asked = read_length(row["messages"][0]["content"]).aim
        assert asked == rounded(words) or (asked == 50 and rounded(words) == 50)
    card = (out / "s" / "README.md").read_text()
    assert "Decontaminated against" in card and "Length labels:" in card and "start with their AgentWrite plan" in card
    # Exported twice, the reasons are not counted twice.
    code, _, err = _run("export", "--db", str(db), "--name", "s", "--out-dir", str(out), "--force",
                        "--decontaminate", str(evals), cwd=tmp)
    assert code == 0, err
    assert len(rows(db, "select * from filter_checks where filter = 'decontaminate'")) == len(checks)


@pytest.mark.slow
def test_gateau_select_from_the_cli_then_a_lora_trained_on_its_export(judged):
    """`longform select --method gateau` ranks what the SFT policy kept and keeps the top one; the
    export then takes GATEAU's pick, and `train --lora` trains an adapter on it."""
    tmp, config, summary = judged
    db = tmp / "corpus.duckdb"
    [(kept,)] = rows(db, "select count(*) from selections where purpose = 'sft' and selected and run_id = ?",
                     [summary["run_id"]])
    assert kept >= 2
    code, stdout, err = _run("select", "--method", "gateau", "--top-k", "1", "--db", str(db), cwd=tmp)
    assert code == 0, err[-3000:]
    assert f"GATEAU ranked {kept} samples, kept 1" in stdout
    ranked = rows(db, "select sample_id, selected from selections where purpose = 'gateau' and run_id = ?",
                  [summary["run_id"]])
    assert len(ranked) == kept and sum(selected for _, selected in ranked) == 1
    assert {m for (m,) in rows(db, "select distinct metric from scores where metric like 'gateau%'")} >= \
        {"gateau_hmg", "gateau_cam"}

    out = tmp / "gateau-export"
    code, _, err = _run("export", "--db", str(db), "--name", "top", "--out-dir", str(out), "--test-ratio", "0", cwd=tmp)
    assert code == 0, err
    sft = load_dataset("parquet", data_dir=str(out / "top" / "sft"))["train"]
    assert [r["sample_id"] for r in sft] == [s for s, selected in ranked if selected]

    code, _, err = _run("train", "sft", "--dataset", str(out / "top"), "--model", "embedded", "--max-steps", "1",
                        "--lora", "--config", str(config), "--output", str(tmp / "adapter"), "--db", str(db), cwd=tmp)
    assert code == 0, err[-3000:]
    assert (tmp / "adapter" / "adapter_config.json").exists() and not (tmp / "adapter" / "model.safetensors").exists()
    [(lora,)] = rows(db, "select lora from train_runs where output_dir = ?", [str((tmp / "adapter").resolve())])
    assert json.loads(lora)["r"] > 0


@pytest.mark.slow
def test_training_refuses_bad_input_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train.sft]\nlearning_rat = 0.1\n")
    code, _, err = _run("train", "sft", "--dataset", str(tmp_path), "--config", str(bad),
                        "--db", str(tmp_path / "x.duckdb"), cwd=tmp_path)
    assert code == 2 and "[train.sft] learning_rat: not a SFTConfig parameter" in err
    code, _, err = _run("train", "dpo", "--dataset", str(tmp_path), "--db", str(tmp_path / "x.duckdb"), cwd=tmp_path)
    assert code == 2 and "no train.parquet; export a run" in err
    assert not (tmp_path / "x.duckdb").exists()      # nothing recorded for a run that never started


def test_answer_only_loss_and_no_example_cut(tmp_path):
    """SFT rows become prompt-completion pairs: the collated labels mask every prompt token and keep
    the answer's, its end of sequence included. No example is cut: max_length is the longest one's,
    or, when configured, longer examples are dropped and counted (or refused)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from longform.config import TrainConfig
    from longform.errors import LongformError
    from longform.models.training import make_trainer, prepare

    (tmp_path / "sft").mkdir()
    short = {"messages": [{"role": "user", "content": "Write two words."}, {"role": "assistant", "content": "Hello there."}]}
    long = {"messages": [{"role": "user", "content": "Write a lot."}, {"role": "assistant", "content": "word " * 300}]}
    pq.write_table(pa.Table.from_pylist([short, long]), tmp_path / "sft" / "train.parquet")

    whole = prepare("sft", dataset_dir=tmp_path, model="embedded", cfg=TrainConfig(), output_dir=tmp_path / "m",
                    max_steps=1)
    assert whole.dropped == 0 and whole.max_length > 300 and len(whole.data["train"]) == 2
    assert whole.args.max_length == whole.max_length

    said = []
    capped = prepare("sft", dataset_dir=tmp_path, model="embedded", cfg=TrainConfig(sft={"max_length": 100}),
                     output_dir=tmp_path / "m", max_steps=1, note=said.append)
    assert capped.dropped == 1 and len(capped.data["train"]) == 1 and capped.params["dropped_over_length"] == 1
    assert said and "left out 1 example(s) longer than that" in said[0]
    with pytest.raises(LongformError, match=r"\[train.sft\] max_length 100: 1 example\(s\) are longer"):
        prepare("sft", dataset_dir=tmp_path, model="embedded", output_dir=tmp_path / "m", max_steps=1,
                cfg=TrainConfig(sft={"max_length": 100}, over_length="refuse"))

    trainer = make_trainer(capped, TrainConfig())
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    tokenizer = capped.tokenizer
    prompt_len = len(tokenizer.apply_chat_template(short["messages"][:1], add_generation_prompt=True, return_dict=False))
    assert all(label == -100 for label in labels[:prompt_len])
    assert labels[prompt_len:] == ids[prompt_len:]
    assert tokenizer.decode(ids[prompt_len:]).startswith("Hello there.<|im_end|>")
