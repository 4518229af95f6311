"""What an export can do to its rows before training: relabel lengths, leave out what overlaps an
evaluation prompt, put the plan first."""

import json

import pytest

from longform.dataset.decontaminate import EvalIndex
from longform.dataset.export import plan_text
from longform.length_reader import read_length
from longform.prompts import Prompt
from longform.length_reader import spec_for
from longform.dataset.relabel import relabel, rounded


def _relabel(instruction: str, written: int, target_words: int | None = None) -> str | None:
    spec = spec_for(Prompt("p", instruction, target_words=target_words), 1000)
    return relabel(instruction, kind=spec.kind, low=spec.low, high=spec.high, unit=spec.unit, written=written)


@pytest.mark.parametrize("instruction, written, expected", [
    # The number in the user's own phrase changes, and the article agrees with it.
    ("Write a 1000-word story about a fox.", 812, "Write an 800-word story about a fox."),
    ("Write an 800-word story about a fox.", 1490, "Write a 1500-word story about a fox."),
    ("Write about 600 words on tea.", 433, "Write about 450 words on tea."),
    ("Write roughly 1,500 words on bridges.", 2270, "Write roughly 2300 words on bridges."),
    ("写一篇1000字的文章，介绍茶。", 612, "写一篇600字的文章，介绍茶。"),
    ("写一篇800字左右的文章。", 377, "写一篇400字左右的文章。"),
    ("写一篇约350字的短文。", 206, "写一篇约200字的短文。"),
    # A bound that was broken becomes an approximate length; number words are replaced whole.
    ("In no more than 400 words, explain gears.", 520, "In about 500 words, explain gears."),
    ("Write at least 600 words on volcanoes.", 380, "Write about 400 words on volcanoes."),
    ("Write between 400 and 600 words on ferns.", 290, "Write about 300 words on ferns."),
    ("用不超过500字介绍熊猫。", 730, "用750字左右介绍熊猫。"),
    ("写一篇字数在900到1100字之间的文章。", 455, "写一篇450字左右的文章。"),
    ("Write a two thousand word essay.", 950, "Write a 950-word essay."),
    ("Write an eight hundred word essay.", 1210, "Write a 1200-word essay."),
    # No length in the instruction: one is added, in its language.
    ("Tell me about cats.", 333, "Tell me about cats. Answer in about 350 words."),
    ("介绍一下猫。", 333, "介绍一下猫。（约350字）"),
])
def test_relabel_rewrites_the_length_phrase(instruction, written, expected):
    out = _relabel(instruction, written)
    assert out == expected
    # The rewritten instruction reads back as the length written (rounded).
    assert read_length(out).aim == rounded(written)


@pytest.mark.parametrize("instruction, written", [
    ("In no more than 400 words, explain gears.", 380),     # the bound held: the label is true
    ("Write at least 600 words on volcanoes.", 900),
    ("Write between 400 and 600 words on ferns.", 600),
    ("Write a 1000-word story about a fox.", 990),           # rounds to what was asked
])
def test_a_true_label_stays(instruction, written):
    assert _relabel(instruction, written) is None


def test_length_from_the_prompts_file_gets_a_phrase():
    assert _relabel("Write a story about a fox.", 512, target_words=1000) == \
        "Write a story about a fox. Answer in about 500 words."


def test_rounding():
    assert [rounded(n) for n in (7, 143, 212, 1234, 1990, 2049, 12345)] == [10, 140, 200, 1250, 2000, 2000, 12500]


def _index(tmp_path, prompts):
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps({"id": i, "instruction": p}, ensure_ascii=False) + "\n"
                            for i, p in prompts.items()), encoding="utf-8")
    return EvalIndex([path])


def test_decontamination_catches_copies_not_templates(tmp_path):
    index = _index(tmp_path, {
        "clock": "Write a 300-word description of an old clock tower.",
        "compass": "In no more than 300 words, explain how a compass works.",
        "wall": "写一篇1500字左右的文章，介绍长城的修建历史。",
        "short": "Describe rain.",
    })
    # The same task at another length, or inside a longer request, is a copy.
    hit = index.overlap("Please write a 900-word description of an old clock tower at dusk.")
    assert hit.prompt_id == "clock" and "clock tower" in hit.reason()
    assert index.overlap("写一篇2000字左右的文章，介绍长城的修建历史和意义。").prompt_id == "wall"
    assert index.overlap("Describe rain, in 200 words.").prompt_id == "short"
    # Sharing only the length template is not: up to 9 English words, 15 Chinese characters.
    assert index.overlap("In no more than 400 words, explain how a refrigerator keeps food cold.") is None
    assert index.overlap("写一篇1000字左右的文章，介绍丝绸之路的历史。") is None
    assert index.overlap("Write a 300-word description of a busy market.") is None


def test_plan_text_is_longwriters_format():
    assert plan_text([("The keeper", 200), ("The bottle", 300)]) == (
        "Paragraph 1 - Main Point: The keeper - Word Count: 200 words\n"
        "Paragraph 2 - Main Point: The bottle - Word Count: 300 words")


def test_an_export_is_swapped_in_whole_and_keeps_what_else_the_folder_holds(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from longform.dataset import export
    from longform.store import Store
    from viewer_corpus import RUN, write_corpus

    db = tmp_path / "corpus.duckdb"
    write_corpus(db)
    target = tmp_path / "out" / "mine"
    with Store.open(db) as store:
        first = export.export_run(store, run_id=RUN, target=target, config={})
    assert first["sft_train"] + first["sft_test"] == 2 and first["dpo_train"] + first["dpo_test"] == 1
    (target / "report").mkdir()
    (target / "report" / "report.md").write_text("kept")
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}

    # A crash while the second export writes its DPO file: the first export is still there, whole.
    real_write = pq.write_table

    def crash_on_dpo(table, path, *args, **kwargs):
        if "dpo" in str(path):
            raise OSError(28, "No space left on device")
        return real_write(table, path, *args, **kwargs)

    monkeypatch.setattr(export.pq, "write_table", crash_on_dpo)
    with Store.open(db) as store, pytest.raises(OSError):
        export.export_run(store, run_id=RUN, target=target, config={}, include_plan=True)
    assert {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    monkeypatch.undo()

    with Store.open(db) as store:
        export.export_run(store, run_id=RUN, target=target, config={}, relabel_length=True)
    manifest = json.loads((target / export.MANIFEST).read_text())
    assert manifest["shaping"]["relabel"] is True                      # the new export, not the old
    assert (target / "report" / "report.md").read_text() == "kept"   # carried over
    assert [p.name for p in tmp_path.joinpath("out").iterdir()] == ["mine"]  # no staging folder left
