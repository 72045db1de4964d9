"""Entity words and the paper's filter rules (spec §2.2), on hand-written captions and real models.

The offline backend runs the real spaCy model and WordNet 3.0. The LLM backend runs tiny GPT-2 models saved to
a temporary folder and loaded back through the hub-id/path code: one with random weights (its text must end in
an invalid_output reject, not a crash) and one whose weights are set by hand to answer one caption, so the whole
prompt -> generate -> parse -> rules path is exercised with a known answer.
"""

from __future__ import annotations

import json
import time

import pytest

from alchemist_data.entities import (
    FEW_SHOT_EXAMPLES,
    EntityResult,
    LLMExtractor,
    SpacyWordNetExtractor,
    apply_rules,
    build_extractor,
    build_prompt,
    get_lexicon,
    parse_output,
)
from alchemist_data.profiles import curation_profile
from alchemist_data.stages.entities import EntitiesConfig

PAPER_CAPTION = "A woman in a mask and coat, with long brown hair, showing a small green-capped bottle."
HORSE_CAPTION = "A man in a blue cap leads a horse through a cloudy, forested area."
DOG_CAPTION = "A brown dog catches a frisbee in a sunny park."


@pytest.fixture(scope="module")
def spacy_extractor() -> SpacyWordNetExtractor:
    ex = build_extractor(EntitiesConfig(backend="spacy"))
    assert isinstance(ex, SpacyWordNetExtractor)
    ex.setup()
    return ex


# ---------------------------------------------------------------------------------------------------------------
# Offline backend on hand-written captions
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caption", "subject", "objects", "background"),
    [
        # The paper's answer is mask, coat, long brown hair, green-capped bottle; we keep the adjective "small".
        pytest.param(
            PAPER_CAPTION,
            ["woman"],
            ["mask", "coat", "long brown hair", "small green-capped bottle"],
            [],
            id="paper_example",
        ),
        pytest.param(
            HORSE_CAPTION,
            ["man", "horse"],
            ["blue cap"],
            ["cloudy, forested area"],
            id="man_horse_keeps_adjectives_and_strips_articles",
        ),
        pytest.param(DOG_CAPTION, ["brown dog"], ["frisbee"], ["sunny park"], id="dog"),
    ],
)
def test_hand_written_caption(spacy_extractor, caption, subject, objects, background):
    r = spacy_extractor.extract(caption)
    assert r.reject_reason is None
    assert r.subject == subject
    assert r.object == objects
    assert r.background == background


def test_no_subject_is_rejected(spacy_extractor):
    r = spacy_extractor.extract("A red car parked on an empty street.")
    assert r.reject_reason == "no_subject"
    assert r.subject == []
    assert "red car" in r.object and "empty street" in r.background


@pytest.mark.parametrize(
    ("caption", "word"),
    [
        ("A group of people dance in a hall.", "group"),
        ("Several dogs run on the beach.", "Several"),
        ("Two men shake hands in a dimly lit, gray room.", "men"),
        ("A couple walks along the shore.", "couple"),
    ],
)
def test_plural_subject_is_rejected_and_named(spacy_extractor, caption, word):
    r = spacy_extractor.extract(caption)
    assert r.reject_reason == "plural_subject"
    assert word in r.reject_detail


def test_inanimate_collective_is_a_quantifier_not_a_plural_subject(spacy_extractor):
    r = spacy_extractor.extract("A woman holds a couple of cups.")
    assert r.reject_reason is None
    assert r.subject == ["woman"] and r.object == ["cups"]
    assert ("couple", "quantifier") in r.dropped


def test_clouds_move_to_background(spacy_extractor):
    r = spacy_extractor.extract("A man watches the clouds drift over the sea.")
    assert r.reject_reason is None
    assert r.subject == ["man"]
    assert r.background == ["clouds", "sea"]
    assert ("clouds", "object", "background") in r.reclassified


def test_pronouns_and_relational_nouns_are_dropped_with_reasons(spacy_extractor):
    r = spacy_extractor.extract("A police officer talks to someone in front of a building at night.")
    assert r.subject == ["police officer"]  # WordNet compound 'police_officer' is a person
    assert ("someone", "pronoun") in r.dropped
    assert ("front", "not_entity") in r.dropped
    assert ("night", "abstract") in r.dropped


def test_compound_lookup_keeps_a_teddy_bear_an_object(spacy_extractor):
    r = spacy_extractor.extract("A little girl hugs her teddy bear.")
    assert r.subject == ["little girl"]  # 'bear' alone would be an animal, hence a second subject
    assert r.object == ["teddy bear"]


@pytest.mark.parametrize(
    ("caption", "subject", "objects"),
    [
        # The small parser hangs 'retriever' on the verb as a compound: the noun is recovered.
        ("A golden retriever runs through the snow.", ["golden retriever"], []),
        # ... and reads 'dances' as the noun of "a yellow dress dances": the phrase ends at 'dress'.
        ("A young woman in a yellow dress dances on a stage.", ["young woman"], ["yellow dress"]),
    ],
)
def test_parser_slips_are_repaired(spacy_extractor, caption, subject, objects):
    r = spacy_extractor.extract(caption)
    assert r.reject_reason is None
    assert r.subject == subject and r.object == objects


def test_empty_caption(spacy_extractor):
    for caption in ["", "   \n\t", None]:
        r = spacy_extractor.extract(caption)
        assert r.reject_reason == "empty_caption"


def test_ten_thousand_character_caption_is_rejected_fast(spacy_extractor):
    caption = ("A man walks a dog in the park. " * 400)[:10_000]
    t0 = time.perf_counter()
    r = spacy_extractor.extract(caption)
    assert time.perf_counter() - t0 < 0.5  # a length test, not a parse (generous bound for a loaded CI box)
    assert r.reject_reason == "caption_too_long"
    assert "10000" in r.reject_detail and "max_caption_chars" in r.reject_detail


@pytest.mark.parametrize(
    "caption",
    [
        "Un homme marche avec son chien dans le parc.",
        "Ein Mann geht mit seinem Hund im Park spazieren.",
        "Un hombre camina con su perro en el parque.",
        "一个男人在公园里遛狗。",
        "Мужчина гуляет с собакой в парке.",
    ],
)
def test_non_english_captions_are_rejected(spacy_extractor, caption):
    r = spacy_extractor.extract(caption)
    assert r.reject_reason == "non_english", r.to_dict()


def test_caption_without_letters_is_not_english(spacy_extractor):
    r = spacy_extractor.extract("12345 !!! 2024-01-01")
    assert r.reject_reason == "non_english" and "no words" in r.reject_detail


def test_wordnet_cache_is_normalised_once(tmp_path, monkeypatch):
    from alchemist_data.entities import wordnet_dir

    monkeypatch.setenv("ALCHEMIST_CACHE", str(tmp_path))
    d = wordnet_dir()
    assert d.is_relative_to(tmp_path) and (d / ".complete").exists()
    data = (d / "data.noun").read_bytes()
    assert b"\r\n" not in data and len(data) > 10_000_000
    mtime = (d / "data.noun").stat().st_mtime_ns
    assert wordnet_dir() == d and (d / "data.noun").stat().st_mtime_ns == mtime  # reused, not rewritten


def test_wordnet_cache_reads_the_old_variable_with_a_deprecation_warning(tmp_path, monkeypatch):
    from alchemist_data.entities import wordnet_dir

    monkeypatch.delenv("ALCHEMIST_CACHE", raising=False)
    monkeypatch.setenv("ALCHEMIST_CACHE_DIR", str(tmp_path))
    with pytest.warns(DeprecationWarning, match="ALCHEMIST_CACHE"):
        d = wordnet_dir()
    assert d.is_relative_to(tmp_path) and (d / ".complete").exists()


@pytest.mark.parametrize(
    "caption",
    [
        "Messi dribbles past a defender at Camp Nou.",  # proper names are not counted against English
        "A barista in a café in Zürich pours latte art.",
        "A man holds a sign that says 你好.",
    ],
)
def test_english_with_names_and_accents_is_not_non_english(spacy_extractor, caption):
    assert spacy_extractor.extract(caption).reject_reason != "non_english"


SUBSTRING_CAPTIONS = [
    PAPER_CAPTION,
    HORSE_CAPTION,
    DOG_CAPTION,
    "The man's dog sleeps beside an old wooden chair in a dimly lit, gray room.",
    "A young boy in a red jacket rides a bicycle down a quiet suburban street.",
    "A chef in a white apron slices tomatoes on a wooden board.",
    "A surfer rides a huge wave at sunset while a teddy bear sits on the sand.",
    "An elderly woman with white hair feeds pigeons near a fountain.",
    "A black cat sleeps on a sofa next to an open laptop.",
    "A man watches the clouds drift over the sea.",
]


def test_every_returned_word_is_an_exact_substring(spacy_extractor):
    results = spacy_extractor.extract_batch(SUBSTRING_CAPTIONS)
    assert len(results) == len(SUBSTRING_CAPTIONS)
    n_words = 0
    for caption, r in zip(SUBSTRING_CAPTIONS, results, strict=True):
        for word, _cat in r.words():
            assert word and word in caption, (word, caption)
            assert word == word.strip()
            n_words += 1
        assert not set(r.subject) & set(r.object), r
    assert n_words >= 30


def test_batch_matches_one_by_one(spacy_extractor):
    batch = spacy_extractor.extract_batch(SUBSTRING_CAPTIONS + ["", "Several dogs run on the beach."])
    single = [spacy_extractor.extract(c) for c in SUBSTRING_CAPTIONS + ["", "Several dogs run on the beach."]]
    assert [r.to_dict() for r in batch] == [r.to_dict() for r in single]


def test_max_caption_chars_comes_from_the_config():
    prof = curation_profile("tiny", {"entities.max_caption_chars": "20"})
    ex = build_extractor(prof.entities)
    r = ex.extract(DOG_CAPTION)
    assert r.reject_reason == "caption_too_long"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="entities.backend"):
        build_extractor(EntitiesConfig(backend="gpt"))


# ---------------------------------------------------------------------------------------------------------------
# apply_rules on hand-written LLM outputs
# ---------------------------------------------------------------------------------------------------------------


def test_rules_accept_the_papers_example_output_with_chatter():
    text = (
        "Sure! Here it is.\n### Output: {'background': [''], 'subject': ['woman'], "
        "'object': ['mask', 'coat', 'long brown hair', 'green-capped bottle']}\nAnything else?"
    )
    r = apply_rules(text, PAPER_CAPTION)
    assert r.reject_reason is None
    assert r.subject == ["woman"]
    assert r.object == ["mask", "coat", "long brown hair", "green-capped bottle"]
    assert r.background == []  # [''] means none


def test_rules_accept_json_and_dicts():
    text = '{"background": ["cloudy, forested area"], "subject": ["man", "horse"], "object": ["blue cap"]}'
    assert apply_rules(text, HORSE_CAPTION).subject == ["man", "horse"]
    assert apply_rules(json.loads(text), HORSE_CAPTION).background == ["cloudy, forested area"]


@pytest.mark.parametrize(
    "output",
    [
        "I cannot help with that.",
        "{'background': ['sky'], 'subject': ['woman'",  # truncated generation
        "['woman', 'mask']",
        "{'subject': ['woman'] 'object': []}",
        "{'people': ['woman']}",
        "{'subject': [1, 2]}",
        "{}",
        "x" * 50_000,
    ],
)
def test_rules_reject_invalid_output(output):
    r = apply_rules(output, PAPER_CAPTION)
    assert r.reject_reason == "invalid_output"
    assert r.reject_detail


def test_rules_reject_words_that_are_not_substrings():
    out = {"background": [""], "subject": ["Woman"], "object": ["mask"]}  # capitalised: a character change
    r = apply_rules(out, PAPER_CAPTION)
    assert r.reject_reason == "not_substring"
    assert "'Woman'" in r.reject_detail
    r = apply_rules({"subject": ["woman"], "object": ["green bottle"]}, PAPER_CAPTION)
    assert r.reject_reason == "not_substring" and "green bottle" in r.reject_detail


def test_rules_reclassify_cloud_to_background_and_record_it():
    caption = "A boy flies a kite under a big white cloud."
    r = apply_rules({"background": [""], "subject": ["boy"], "object": ["kite", "big white cloud"]}, caption)
    assert r.reject_reason is None
    assert r.object == ["kite"]
    assert r.background == ["big white cloud"]
    assert r.reclassified == [("big white cloud", "object", "background")]


def test_rules_move_things_between_subject_and_object():
    caption = "A man in a blue cap leads a horse through a cloudy, forested area."
    out = {"background": ["cloudy, forested area"], "subject": ["man", "blue cap"], "object": ["horse"]}
    r = apply_rules(out, caption)
    assert r.subject == ["man", "horse"] and r.object == ["blue cap"]
    assert ("blue cap", "subject", "object") in r.reclassified
    assert ("horse", "object", "subject") in r.reclassified
    # Body parts stay objects even when filed as a subject.
    r = apply_rules({"subject": ["woman", "long brown hair"], "object": []}, PAPER_CAPTION)
    assert r.subject == ["woman"] and r.object == ["long brown hair"]


def test_rules_strip_quantifiers_drop_pronouns_and_duplicates():
    caption = "A girl and her puppy play with a ball while she laughs."
    out = {"background": [], "subject": ["A girl", "her puppy", "she"], "object": ["a ball", "her puppy"]}
    r = apply_rules(out, caption)
    assert r.reject_reason is None
    assert r.subject == ["girl", "puppy"]
    assert r.object == ["ball"]
    assert ("A", "quantifier") in r.dropped and ("she", "pronoun") in r.dropped
    assert ("puppy", "duplicate") in r.dropped


def test_rules_no_subject_and_plural_subject():
    r = apply_rules(
        {"subject": [], "object": ["red car"], "background": ["empty street"]}, "A red car parked on an empty street."
    )
    assert r.reject_reason == "no_subject"
    caption = "A group of people dance in a hall."
    r = apply_rules({"subject": ["group of people"], "object": [], "background": ["hall"]}, caption)
    assert r.reject_reason == "plural_subject" and "group" in r.reject_detail
    r = apply_rules({"subject": ["people"], "object": [], "background": ["hall"]}, caption)
    assert r.reject_reason == "plural_subject" and "people" in r.reject_detail
    r = apply_rules("{'subject': ['dogs'], 'background': ['beach']}", "Several dogs run on the beach.")
    assert r.reject_reason == "plural_subject" and "Several" in r.reject_detail


def test_rules_check_the_caption_first():
    out = {"subject": ["man"]}
    assert apply_rules(out, "").reject_reason == "empty_caption"
    assert apply_rules(out, "man " * 3000).reject_reason == "caption_too_long"
    assert apply_rules(out, "Un homme marche avec son chien dans le parc.").reject_reason == "non_english"


def test_parse_output_tolerates_key_aliases_and_braces_in_strings():
    parsed, _ = parse_output("{'Subjects': ['man'], 'objects': ['sign {big}'], 'background': ['']}")
    assert parsed == {"background": [], "subject": ["man"], "object": ["sign {big}"]}


def test_result_to_dict_is_json():
    r = EntityResult(subject=["man"], dropped=[("a", "quantifier")], reclassified=[("sky", "object", "background")])
    d = json.loads(json.dumps(r.to_dict()))
    assert d["dropped"] == [["a", "quantifier"]] and d["reclassified"] == [["sky", "object", "background"]]
    assert d["reject_reason"] is None


# ---------------------------------------------------------------------------------------------------------------
# LLM backend with tiny GPT-2 models saved to disk
# ---------------------------------------------------------------------------------------------------------------

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _save_tiny_llm(folder, texts, seed=0, scripted=None):
    """A word-level tokenizer over ``texts`` (whitespace kept as tokens, so decoding is exact) + a tiny GPT-2.

    Random weights by default. ``scripted=(prompt_text, answer_text)`` sets the weights by hand so that greedy
    decoding continues exactly that prompt with that answer: the transformer block's output projections are
    zero (the residual stream is just token + position embedding), token embeddings are zero, and the position
    embedding of each answer position is a one-hot on the next answer token, read out by an identity LM head.
    """
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    split = pre_tokenizers.Split(Regex(r"\w+|\s+|[^\w\s]"), behavior="isolated")
    words = sorted({w for t in texts for w, _ in split.pre_tokenize_str(t)})
    specials = ["[PAD]", "[UNK]", "</s>"]
    vocab = {w: i for i, w in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = split
    tok.decoder = decoders.Fuse()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(folder)

    torch.manual_seed(seed)
    width = 32 if scripted is None else len(vocab) + len(vocab) % 2
    cfg = GPT2Config(
        vocab_size=len(vocab),
        n_positions=2048,
        n_embd=width,
        n_layer=1,
        n_head=2,
        tie_word_embeddings=scripted is None,
        eos_token_id=vocab["</s>"],
        pad_token_id=vocab["[PAD]"],
        bos_token_id=vocab["</s>"],
    )
    model = GPT2LMHeadModel(cfg)
    if scripted is not None:
        prompt_ids = hf_tok(scripted[0], add_special_tokens=False)["input_ids"]
        answer_ids = hf_tok(scripted[1], add_special_tokens=False)["input_ids"] + [vocab["</s>"]]
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
            model.transformer.ln_f.weight.fill_(1.0)
            for block in model.transformer.h:
                block.ln_1.weight.fill_(1.0)
                block.ln_2.weight.fill_(1.0)
            for j, nxt in enumerate(answer_ids):
                model.transformer.wpe.weight[len(prompt_ids) - 1 + j, nxt] = 10.0
            model.lm_head.weight[:, : len(vocab)] = torch.eye(len(vocab))
    model.save_pretrained(folder)
    return folder


def _llm_cfg(path, **kw):
    return curation_profile("paper", {"entities.llm_model": str(path), **kw}).entities


def test_prompt_has_the_papers_parts():
    p = build_prompt(DOG_CAPTION)
    assert "background" in p and "subject" in p and "visually separable objects" in p
    assert "without any quantifier" in p and "exact substring" in p
    assert "### Caption: " + PAPER_CAPTION in p
    assert "'object': ['mask', 'coat', 'long brown hair', 'green-capped bottle']" in p
    assert p.endswith(f"### Caption: {DOG_CAPTION}\n### Output:")
    assert len(FEW_SHOT_EXAMPLES) >= 4
    # Our own few-shot answers must pass the rules they teach.
    for caption, answer in FEW_SHOT_EXAMPLES:
        r = apply_rules(answer, caption)
        assert r.reject_reason is None, (caption, r)
        assert r.reclassified == [] and sorted(r.subject) == sorted(w for w in answer["subject"] if w)


def test_random_llm_output_is_an_invalid_output_reject(tmp_path):
    captions = [DOG_CAPTION, HORSE_CAPTION, PAPER_CAPTION]
    _save_tiny_llm(tmp_path, [build_prompt(c) for c in captions] + [CHAT_TEMPLATE])
    cfg = _llm_cfg(tmp_path, **{"entities.llm_max_new_tokens": "12", "entities.batch_size": "2"})
    ex = build_extractor(cfg, device="cpu")
    assert isinstance(ex, LLMExtractor)
    results = ex.extract_batch([*captions, "", "Several dogs run on the beach."])
    assert ex.tokenizer.padding_side == "left"
    assert ex.format_prompt(DOG_CAPTION).startswith("<|user|>\n")
    assert ex.format_prompt(DOG_CAPTION).endswith("### Output:\n<|assistant|>\n")
    assert [r.reject_reason for r in results] == ["invalid_output"] * 3 + ["empty_caption", "invalid_output"]
    outs = ex.generate(captions[:2])
    assert len(outs) == 2 and all(isinstance(o, str) for o in outs)


def test_llm_backend_end_to_end_with_a_scripted_tiny_model(tmp_path):
    caption = HORSE_CAPTION
    answer = " {'background': ['cloudy, forested area'], 'subject': ['man', 'horse'], 'object': ['blue cap']}"
    # The prompt the extractor will send: build_prompt(caption) through the tokenizer's chat template.
    prompt = f"<|user|>\n{build_prompt(caption)}\n<|assistant|>\n"
    _save_tiny_llm(tmp_path, [prompt, answer], scripted=(prompt, answer))
    ex = build_extractor(_llm_cfg(tmp_path, **{"entities.llm_max_new_tokens": "64"}), device="cpu")
    ex.setup()
    assert ex.format_prompt(caption) == prompt
    text = ex.generate([caption])[0]
    assert text.strip().startswith("{'background'"), text
    r = ex.extract(caption)
    assert r.reject_reason is None, (text, r)
    assert r.subject == ["man", "horse"] and r.object == ["blue cap"] and r.background == ["cloudy, forested area"]


def test_llm_missing_model_is_a_clear_error(tmp_path):
    ex = build_extractor(_llm_cfg(tmp_path / "nope"), device="cpu")
    with pytest.raises(ValueError, match="entities.llm_model"):
        ex.setup()


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


def test_cli_prints_json():
    from typer.testing import CliRunner

    from pipelines.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["entities", HORSE_CAPTION])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["subject"] == ["man", "horse"] and d["reject_reason"] is None

    res = runner.invoke(app, ["entities", "Several dogs run on the beach.", "", "--profile", "tiny"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert [x["reject_reason"] for x in d] == ["plural_subject", "empty_caption"]

    res = runner.invoke(app, ["entities", DOG_CAPTION, "--set", "entities.nope=1"])
    assert res.exit_code == 2 and "entities.nope" in res.output


def test_lexicon_is_loaded_once():
    assert get_lexicon() is get_lexicon()
