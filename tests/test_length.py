import pytest

from judges.length import WORDS, length_score, measure, required_words


def test_counter_counts_cjk_characters_and_latin_words():
    assert WORDS("The quick brown fox") == 4
    assert WORDS("中国茶文化") == 5
    assert WORDS("Tea 茶, 2024 年 and more!") == 5  # Tea, 茶, 年, and, more; digits are not words
    assert WORDS.name == "lbw_words"


@pytest.mark.parametrize("instruction, expected", [
    ("Write a 1500-word essay on tea.", 1500),
    ("Write 1,200 words about rivers", 1200),
    ("a 2k word blog post", 2000),
    ("between 2000 and 3000 words", 2500),
    ("写一篇3000字的文章", 3000),
    ("写一篇两千字的散文", 2000),
    ("写一篇三千字的小说", 3000),
    ("写1.5万字的报告", 15000),
    ("写一篇千字文", 1000),
    ("写800-1200字的总结", 1000),
    ("Write an essay about tea.", None),
])
def test_required_words(instruction, expected):
    assert required_words(instruction) == expected


def test_length_score_matches_longbench_write():
    assert length_score(1000, 1000) == 100
    assert length_score(1000, 500) == pytest.approx(50)     # 1 - (2 - 1)/2
    assert length_score(1000, 2500) == pytest.approx(50)    # 1 - (2.5 - 1)/3
    assert length_score(1000, 4000) == 0
    assert length_score(1000, 300) == 0
    assert length_score(1000, 0) == 0                       # safe at y = 0
    with pytest.raises(ValueError):
        length_score(0, 10)


def test_measure_names_its_counter():
    m = measure("one two three", 3)
    assert m == {"words": 3, "length_counter": "lbw_words", "length_score": 100.0}
