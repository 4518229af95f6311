import pytest

from longform.lengths import WORDS, LengthSpec, length_score, measure


def test_counter_counts_cjk_characters_and_latin_words():
    assert WORDS("The quick brown fox") == 4
    assert WORDS("中国茶文化") == 5
    assert WORDS("Tea 茶, 2024 年 and more!") == 5  # Tea, 茶, 年, and, more; digits are not words
    assert WORDS.name == "lbw_words"


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
    m = measure("one two three", LengthSpec("exact", 3, 3))
    assert m == {"words": 3, "length_counter": "lbw_words", "length_score": 100.0, "bound_ok": None}
    assert measure("one two three", LengthSpec("at_most", None, 2))["bound_ok"] is False
