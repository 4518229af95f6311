"""Every way people ask for a length, read into a kind and bounds (longform/length_reader.py), and
scored by kind (longform/lengths.py)."""

import pytest

from longform.length_reader import read_length, spec_for
from longform.lengths import LengthSpec
from longform.prompts import Prompt

# (instruction, kind, low, high); kind None: the instruction names no length.
PHRASINGS = [
    # exact: a bare number, digits with separators, k / thousand, number words
    ("Write a 1500-word essay on tea.", "exact", 1500, 1500),
    ("Write 1,200 words about rivers", "exact", 1200, 1200),
    ("Compose a 2k word blog post on caching", "exact", 2000, 2000),
    ("A 2.5k-word short story about a lighthouse", "exact", 2500, 2500),
    ("Write a two thousand word essay on the history of tea.", "exact", 2000, 2000),
    ("Write a twenty-five hundred word report on bridges", "exact", 2500, 2500),
    ("Give me one thousand five hundred words on jazz", "exact", 1500, 1500),
    ("Write a three-thousand-word guide to sourdough", "exact", 3000, 3000),
    ("Write a thousand words on rain", "exact", 1000, 1000),
    ("Write 1.5 thousand words about owls", "exact", 1500, 1500),
    ("Write exactly 800 words about glass.", "exact", 800, 800),
    ("Produce precisely 10,000 words of fiction", "exact", 10000, 10000),
    ("Write a 10000 word novella chapter", "exact", 10000, 10000),
    ("Write a ５００-word note", "exact", 500, 500),
    ("写一篇3000字的文章", "exact", 3000, 3000),
    ("写一篇两千字的散文", "exact", 2000, 2000),
    ("写一篇两千五百字的文章", "exact", 2500, 2500),
    ("写一篇一万五千字的小说", "exact", 15000, 15000),
    ("写1.5万字的报告", "exact", 15000, 15000),
    ("写一篇3千字的游记", "exact", 3000, 3000),
    ("写一部二十万字的长篇小说", "exact", 200000, 200000),
    ("写一篇千字文，谈谈读书", "exact", 1000, 1000),
    ("写一篇万字长文，分析城市化", "exact", 10000, 10000),
    ("写一篇3,000字的评论", "exact", 3000, 3000),
    ("请写一篇正好800字的短文", "exact", 800, 800),
    ("写一篇６０００字的故事", "exact", 6000, 6000),
    # about
    ("Write about 1.2 thousand words on glaciers", "about", 1200, 1200),
    ("Write roughly 2000 words on migration", "about", 2000, 2000),
    ("Write around 600 words about coffee", "about", 600, 600),
    ("An essay of approximately 3,500 words on memory", "about", 3500, 3500),
    ("Write ~800 words about maps", "about", 800, 800),
    ("Write some 5000 words on the Silk Road", "about", 5000, 5000),
    ("Write 1500 words or so on orchards", "about", 1500, 1500),
    ("Write a piece of about two thousand words", "about", 2000, 2000),
    ("Write close to 900 words on salt", "about", 900, 900),
    ("请写一篇三千五百字左右的散文", "about", 3500, 3500),
    ("写一篇2000字左右的读后感", "about", 2000, 2000),
    ("写一篇大约1500字的文章", "about", 1500, 1500),
    ("写一篇约两千字的说明文", "about", 2000, 2000),
    ("写一篇五千字上下的报告", "about", 5000, 5000),
    ("字数约3000，写一篇游记", "about", 3000, 3000),
    # at most
    ("Write no more than 400 words about tides", "at_most", None, 400),
    ("Summarise the book in under 500 words", "at_most", None, 500),
    ("Write up to 800 words on bees", "at_most", None, 800),
    ("Keep it to 300 words max", "at_most", None, 300),
    ("Write at most 1,000 words on lenses", "at_most", None, 1000),
    ("Explain it in fewer than 600 words", "at_most", None, 600),
    ("Write less than 700 words about kites", "at_most", None, 700),
    ("Write a maximum of 900 words", "at_most", None, 900),
    ("Write 1200 words or less on fungi", "at_most", None, 1200),
    ("Answer within 350 words", "at_most", None, 350),
    ("The essay should not exceed... I mean be no longer than 2000 words", "at_most", None, 2000),
    ("不超过800字，写一篇短评", "at_most", None, 800),
    ("写一篇3000字以内的文章", "at_most", None, 3000),
    ("写一篇不多于1500字的总结", "at_most", None, 1500),
    ("最多写五百字", "at_most", None, 500),
    ("写一篇一千字以下的随笔", "at_most", None, 1000),
    ("字数不超过两千", "at_most", None, 2000),
    # at least
    ("Write at least 2500 words on volcanoes", "at_least", 2500, None),
    ("Write no less than 3000 words about ships", "at_least", 3000, None),
    ("Write no fewer than 1,500 words", "at_least", 1500, None),
    ("Write more than 2000 words on trains", "at_least", 2000, None),
    ("Write over 4000 words about deserts", "at_least", 4000, None),
    ("Write a minimum of 1000 words", "at_least", 1000, None),
    ("Write 5000 words or more on law", "at_least", 5000, None),
    ("Write a 3000+ word feature", "at_least", 3000, None),
    ("不少于3000字，写一篇论文", "at_least", 3000, None),
    ("至少写2000字的故事", "at_least", 2000, None),
    ("写一篇五千字以上的报告", "at_least", 5000, None),
    ("字数不少于一万", "at_least", 10000, None),
    ("写一篇不低于4000字的综述", "at_least", 4000, None),
    # range
    ("Write 800–1000 words about clay", "range", 800, 1000),
    ("Write between 800 and 1,000 words", "range", 800, 1000),
    ("Write 1500 to 2000 words on sleep", "range", 1500, 2000),
    ("a 1-2k word overview of compilers", "range", 1000, 2000),
    ("Write 3,000-4,000 words about film", "range", 3000, 4000),
    ("字数在800到1000之间", "range", 800, 1000),
    ("写800-1200字的总结", "range", 800, 1200),
    ("写一篇两千到三千字的文章", "range", 2000, 3000),
    ("写一篇1万到1.5万字的小说", "range", 10000, 15000),
    ("写一篇3000~5000字的调研报告", "range", 3000, 5000),
    # a first mention wins; a per-part length is not the answer's length
    ("Write a 2000-word essay in 5 sections of about 400 words each", "exact", 2000, 2000),
    ("写一篇3000字的文章，每段300字左右", "exact", 3000, 3000),
    # no length in words
    ("Write an essay about tea.", None, None, None),
    ("Write a three-page report on soil", None, None, None),
    ("Write five paragraphs on the moon", None, None, None),
    ("Write a short story about a fox", None, None, None),
    ("Write a long, detailed guide to chess", None, None, None),
    ("Write one essay and two poems about autumn", None, None, None),
    ("Use 12pt font and 2 pages", None, None, None),
    ("写一篇关于春天的散文", None, None, None),
    ("背诵三字经并解释", None, None, None),
    ("写十段话介绍长城", None, None, None),
]


def test_table_has_every_form():
    kinds = {row[1] for row in PHRASINGS}
    assert kinds == {"exact", "about", "at_most", "at_least", "range", None}
    assert len(PHRASINGS) >= 80


@pytest.mark.parametrize("instruction, kind, low, high", PHRASINGS)
def test_read_length(instruction, kind, low, high):
    spec = read_length(instruction)
    if kind is None:
        assert spec is None, spec
        return
    assert spec is not None
    assert (spec.kind, spec.low, spec.high) == (kind, low, high), spec
    assert spec.source == "instruction"
    assert spec.span and spec.span in instruction.translate(str.maketrans("０１２３４５６７８９", "0123456789"))
    assert spec.unit == ("zh_chars" if any("\u4e00" <= ch <= "\u9fff" for ch in instruction) else "words")


def test_span_keeps_the_qualifier():
    assert read_length("Please write no more than 400 words about tides").span == "no more than 400 words"
    assert read_length("请写一篇三千五百字左右的散文").span == "三千五百字左右"
    assert read_length("字数在800到1000之间").span == "字数在800到1000之间"
    assert read_length("Write between 800 and 1,000 words").span == "between 800 and 1,000 words"


def test_aim_and_band_by_kind():
    assert LengthSpec("at_most", None, 400).aim == 360
    assert LengthSpec("at_least", 2500, None).aim == 2750
    assert LengthSpec("range", 800, 1000).aim == 900
    assert LengthSpec("about", 600, 600).aim == 600
    # the band never crosses a bound
    assert LengthSpec("at_most", None, 400).band == (324, 396)
    assert LengthSpec("at_least", 2500, None).band == (2500, 3025)
    assert LengthSpec("range", 800, 1000).band == (810, 990)


def test_scores_by_kind():
    at_most = LengthSpec("at_most", None, 400)
    assert at_most.bound_ok(390) and not at_most.bound_ok(450)
    assert at_most.score(360) == 100
    at_least = LengthSpec("at_least", 2500, None)
    assert not at_least.bound_ok(2400) and at_least.bound_ok(2600)
    in_range = LengthSpec("range", 800, 1000)
    assert in_range.score(810) == in_range.score(1000) == 100
    assert in_range.score(500) == pytest.approx(100 * (1 - (800 / 500 - 1) / 2))   # S_l to the nearer end
    assert in_range.score(1300) == pytest.approx(100 * (1 - (1300 / 1000 - 1) / 3))
    assert LengthSpec("exact", 600, 600).bound_ok(10) is None


def test_prompt_file_fields_win_over_the_instruction():
    p = Prompt("a", "Write no more than 400 words about tides", max_words=300)
    assert spec_for(p, 1000) == LengthSpec("at_most", None, 300, "words", None, "min_max_words")
    p = Prompt("b", "写一篇文章", min_words=800, max_words=1000)
    assert spec_for(p, 1000) == LengthSpec("range", 800, 1000, "zh_chars", None, "min_max_words")
    assert spec_for(Prompt("c", "Write about owls", target_words=700), 1000).kind == "exact"
    default = spec_for(Prompt("d", "Write an essay about owls"), 1000)
    assert (default.kind, default.aim, default.source) == ("none", 1000, "default")
