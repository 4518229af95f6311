import json

from writers.agentwrite import strip_label
from writers.plan import Step, allocate, parse_plan, render_plan


def test_parses_json_plan():
    answer = json.dumps({"paragraphs": [{"main_point": "Intro", "word_count": 300},
                                        {"main_point": "Body", "word_count": 700}]})
    steps, source = parse_plan(answer)
    assert source == "json"
    assert steps == [Step("Intro", 300), Step("Body", 700)]


def test_parses_complete_items_of_a_truncated_json_plan():
    answer = '{"paragraphs": [{"main_point": "Intro \\"quoted\\"", "word_count": 300}, {"main_point": "Bo'
    steps, source = parse_plan(answer)
    assert (steps, source) == ([Step('Intro "quoted"', 300)], "json")


def test_parses_longwriter_text_plan():
    answer = ("Paragraph 1 - Main Point: Describe the harbour at dawn - Word Count: 400 words\n\n"
              "Paragraph 2 - Main Point: The keeper finds the bottle - Word Count: 1,000 words\n")
    steps, source = parse_plan(answer)
    assert source == "text"
    assert steps == [Step("Describe the harbour at dawn", 400), Step("The keeper finds the bottle", 1000)]


def test_unparsable_plan_is_none():
    assert parse_plan("Sure! Here is an essay about tea.") is None
    assert parse_plan('{"paragraphs": []}') is None


def test_allocate_sums_to_required_length_in_proportion():
    steps = allocate([Step("a", 100), Step("b", 300)], 1000, max_steps=50, max_section_words=1000)
    assert [s.words for s in steps] == [250, 750]
    uneven = allocate([Step("a", 1), Step("b", 1), Step("c", 1)], 1000, max_steps=50, max_section_words=1000)
    assert sum(s.words for s in uneven) == 1000


def test_allocate_fills_missing_counts_and_splits_oversized_steps():
    steps = allocate([Step("whole essay", 0)], 2500, max_steps=50, max_section_words=1000)
    assert [s.words for s in steps] == [834, 833, 833]
    assert steps[1].main_point == "whole essay (part 2 of 3)"


def test_allocate_respects_max_steps():
    steps = allocate([Step(str(i), 100) for i in range(80)], 8000, max_steps=50, max_section_words=100)
    assert len(steps) == 50 and sum(s.words for s in steps) == 8000
    few = allocate([Step("a", 1)], 5000, max_steps=3, max_section_words=100)
    assert len(few) == 3


def test_render_plan_is_longwriter_form_and_parses_back():
    steps = [Step("Intro", 300), Step("End", 200)]
    assert parse_plan(render_plan(steps)) == (steps, "text")


def test_strip_label():
    assert strip_label("Paragraph 2 - Main Point: x - Word Count: 300 words\n\nThe text.") == "The text."
    assert strip_label("**Paragraph 3**\nThe text.") == "The text."
    assert strip_label("Paragraph 4: The text.") == "The text."
    assert strip_label("段落 2：茶的历史") == "茶的历史"
    assert strip_label("A paragraph 2 mention stays.") == "A paragraph 2 mention stays."
