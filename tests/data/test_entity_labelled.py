"""Entity words scored on labelled captions (issue 11 §3), and the scoring code itself.

tests/data/entity_captions.jsonl holds MSR-VTT- and Panda-70M-style captions with the words and reject reason
a reader would give; its error-class tags are the classes the offline backend used to get wrong (titles and
on-screen text, background phrases, named entities, repeated mentions) plus ordinary cases, true plurals and
clips without a subject. tests/data/entity_llm_outputs.jsonl holds plausible answers of the paper's LLM to its
prompt for some of those captions, mistakes included. The floors below sit a little under what the code
reaches (docs/entities.md has the numbers and the "before" of the original code), so a regression fails.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from alchemist_data.entities import WORD_DROP_REASONS, EntityResult, apply_rules, build_extractor
from alchemist_data.entities.evaluate import head_word, load_labelled, score
from alchemist_data.entities.mentions import quoted_chars, same_referent
from alchemist_data.profiles import EntitiesConfig

DATA = Path(__file__).parent
LABELLED = load_labelled(DATA / "entity_captions.jsonl")
LLM_OUTPUTS = [json.loads(line) for line in (DATA / "entity_llm_outputs.jsonl").read_text().splitlines() if line]
ERROR_CLASSES = ("background_phrase", "text_title", "named_entity", "coreference")

# Measured: see docs/entities.md. Each floor is at or a little under the measured value.
FLOORS = {
    "subject_precision": 0.96,  # before the fixes 0.785
    "subject_recall": 0.96,
    "object_precision": 0.80,
    "object_recall": 0.93,
    "background_precision": 0.95,
    "background_recall": 0.84,
    "reject_accuracy": 0.96,  # before 0.840
    "kept_recall": 0.96,  # clips a reader keeps that the backend keeps; before 0.82
    "plural_subject_precision": 0.95,  # before 0.47: most plural rejects were wrong
    "plural_subject_recall": 0.9,  # true plurals stay rejected
    "tag_ordinary_reject_accuracy": 0.98,
    "tag_plural_reject_accuracy": 0.9,
    **{f"tag_{tag}_reject_accuracy": 0.9 for tag in ERROR_CLASSES},
}


@pytest.fixture(scope="module")
def offline_results() -> list[EntityResult]:
    ex = build_extractor(EntitiesConfig(backend="spacy"))
    return ex.extract_batch([c.caption for c in LABELLED])


def test_labelled_set_covers_every_error_class_and_style():
    assert len(LABELLED) >= 100
    tags = Counter(t for c in LABELLED for t in c.tags)
    for tag in (*ERROR_CLASSES, "ordinary", "plural", "no_subject"):
        assert tags[tag] >= 7, (tag, tags)
    assert tags["ordinary"] >= 50
    assert {c.style for c in LABELLED} == {"msrvtt", "panda"}
    assert Counter(c.split for c in LABELLED).keys() == {"dev", "holdout"}
    assert sum(c.reject_reason == "plural_subject" for c in LABELLED) >= 15
    assert len({c.caption for c in LABELLED}) == len(LABELLED)


def test_offline_backend_meets_the_floors(offline_results):
    s = score(offline_results, LABELLED).summary()
    low = {k: round(s[k], 3) for k, floor in FLOORS.items() if s[k] < floor}
    assert not low, f"below the floor: {low} (floors {FLOORS})"


def test_offline_backend_on_each_error_class(offline_results):
    """Spot checks that name the fix, next to the aggregate floors."""
    by_caption = dict(zip((c.caption for c in LABELLED), offline_results, strict=True))
    r = by_caption["A woman is talking to the camera with a blurred background of people."]
    assert (r.reject_reason, r.subject, r.background) == (None, ["woman"], ["blurred background of people"])
    r = by_caption["a reporter is standing on a street while people walk in the background"]
    assert r.reject_reason is None and r.subject == ["reporter"] and ("people", "background_detail") in r.dropped
    r = by_caption["A man is wearing a t-shirt with the logo 'Chicago Bulls' printed on it."]
    assert r.reject_reason is None and r.subject == ["man"] and ("Chicago Bulls", "text") in r.dropped
    r = by_caption["A woman is reviewing the movie Little Women on her YouTube channel."]
    assert r.reject_reason is None and r.subject == ["woman"]
    r = by_caption["The Moon rises over a quiet village while a dog barks."]
    assert r.subject == ["dog"] and r.object == ["Moon"]
    r = by_caption["A rocket launches toward Mars against a dark sky."]
    assert r.reject_reason == "no_subject" and "Mars" in r.object
    r = by_caption["A man drives a red Jaguar along a coastal road."]
    assert r.subject == ["man"] and r.object == ["red Jaguar"]
    r = by_caption["A quarterback for the Miami Dolphins throws a pass during a game."]
    assert r.reject_reason is None and ("Miami Dolphins", "named") in r.dropped
    r = by_caption["A bearded man sits on a bench, and the man begins to play a guitar."]
    assert r.subject == ["bearded man"] and ("man", "same_referent") in r.dropped
    r = by_caption["A bearded man talks to another man in a bar."]
    assert r.subject == ["bearded man", "man"]  # "another man" is a second person
    r = by_caption["A crowd of fans is cheering in a stadium."]
    assert r.reject_reason == "plural_subject" and r.subject == ["crowd of fans"]


def test_recorded_llm_outputs_give_the_labelled_answers():
    labelled = {c.caption: c for c in LABELLED}
    cases = [labelled[row["caption"]] for row in LLM_OUTPUTS]
    results = [apply_rules(row["output"], row["caption"]) for row in LLM_OUTPUTS]
    assert len(results) >= 30
    for row, case, r in zip(LLM_OUTPUTS, cases, results, strict=True):
        assert r.reject_reason == case.reject_reason, (row, r)
        if case.reject_reason is None:  # a kept clip's words are what grounding gets: all of them must be right
            s = score([r], [case])
            assert all(s.words[c].fp == s.words[c].fn == 0 for c in s.words), (row, r)
        # A quirk naming a drop reason is a mistake the rules must have repaired that way.
        for reason in WORD_DROP_REASONS:
            if reason in row["quirk"]:
                assert reason in {why for _w, why in r.dropped}, (row, r)


def test_scoring_counts_by_hand():
    cases = load_labelled(DATA / "entity_captions.jsonl")[:2]  # "a man is talking about a car", "... kitchen"
    assert cases[0].caption == "a man is talking about a car" and cases[1].caption == "a woman is cooking in a kitchen"
    got = [
        EntityResult(subject=["man", "man"], object=["car"]),  # one referent listed twice: one false positive
        EntityResult(subject=["woman"], object=["pot"], reject_reason="no_subject"),
    ]
    s = score(got, cases)
    assert (s.words["subject"].tp, s.words["subject"].fp, s.words["subject"].fn) == (2, 1, 0)
    assert (s.words["object"].tp, s.words["object"].fp, s.words["object"].fn) == (1, 1, 0)
    assert (s.words["background"].tp, s.words["background"].fn) == (0, 1)
    assert s.reject_correct == 1 and s.reject_accuracy == 0.5
    assert (s.reasons["kept"].tp, s.reasons["kept"].fn) == (1, 1) and s.reasons["no_subject"].fp == 1
    assert s.by_tag["ordinary"] == [1, 2] and len(s.errors) == 2


def test_head_word_matching():
    assert head_word("group of people") == "group"
    assert head_word("cloudy, forested area") == "area"
    assert head_word("chef's hat") == "hat"
    assert head_word("Statue of Liberty") == "statue"
    case = load_labelled(DATA / "entity_captions.jsonl")[0]
    s = score([EntityResult(subject=["Man"], object=["red car"])], [case])  # head match, not an exact one
    assert s.words["subject"].tp == 1 and s.exact["subject"].tp == 1  # case-insensitive exact
    assert s.words["object"].tp == 1 and s.exact["object"].tp == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"caption": "a man", "subject": ["man"], "reject_reason": "plural"}', "unknown reject_reason"),
        ('{"caption": "a man", "subject": ["woman"]}', "not a substring"),
        ('{"subject": ["man"]}', "caption"),
        ("not json", "not a labelled caption"),
    ],
)
def test_bad_labelled_lines_are_clear_errors(tmp_path, line, message):
    path = tmp_path / "set.jsonl"
    path.write_text('{"caption": "a dog", "subject": ["dog"]}\n' + line + "\n")
    with pytest.raises(ValueError, match=message) as e:
        load_labelled(path)
    assert f"{path}:2" in str(e.value)


def test_score_needs_one_result_per_caption():
    with pytest.raises(ValueError, match="1 results for 2"):
        score([EntityResult()], LABELLED[:2])


def test_quotes_are_not_apostrophes():
    text = "A man in a chef's hat holds a sign that says 'Welcome Friends' and \"Hi\"."
    assert [text[a:b] for a, b in quoted_chars(text)] == ["Welcome Friends", "Hi"]
    assert quoted_chars("'A man walks a dog.'") == []  # a caption that is one whole quote
    assert quoted_chars("The dog's bone and the cat's toy.") == []


def test_same_referent_needs_a_definite_second_mention():
    assert same_referent("man", "bearded man", "A bearded man sits, and the man smiles.")
    assert same_referent("man", "bearded man", "A bearded man sits.")  # no second mention at all
    assert not same_referent("man", "bearded man", "A bearded man talks to another man.")
    assert not same_referent("man", "bearded man", "A bearded man talks to a man.")
    assert not same_referent("man", "man", "A man waves.")
    # same_referent only reads the strings; apply_rules also needs one head noun: a suit is no man.
    out = {"subject": ["man in a suit", "man"], "object": ["suit"]}
    r = apply_rules(out, "A man in a suit waves, the man smiles.")
    assert r.subject == ["man in a suit"] and r.object == ["suit"] and r.dropped == [("man", "same_referent")]
