"""Entity words of a caption: background / subject / object, with the paper's filter rules (spec §2.2).

Two backends produce a raw ``{'background': [...], 'subject': [...], 'object': [...]}`` dictionary and then
share one post-processing function, :func:`apply_rules`:

* :class:`LLMExtractor` (profile ``paper``): a transformers chat model (the paper cites Mistral 7B) prompted
  with the paper's instruction, definitions, two hard rules and few-shot examples (Fig. 7); greedy decoding.
* :class:`SpacyWordNetExtractor` (profiles ``offline``/``tiny``): spaCy noun chunks, leading determiners and
  quantifiers stripped (adjectives kept), sorted by the WordNet lexname of the chunk's head noun.

:func:`apply_rules` applies, in order:

0. clip-level caption checks: ``empty_caption``, ``caption_too_long`` (length test only, so a 10,000-character
   caption is rejected in microseconds), ``non_english`` (see :func:`english_score`);
1. ``invalid_output``: the output is not a dictionary with list-of-string values under the keys
   background / subject / object (the paper's ``['']`` empty pattern is accepted and means "none");
2. ``not_substring``: an entity word is not an exact substring of the caption;
   then word-level clean-up (recorded in ``dropped``): leading quantifiers/determiners removed
   (``quantifier``), pronouns (``pronoun``), repeated words (``duplicate``), on-screen text and titles
   (``text``), names of nothing visible such as a team (``named``), things inside the background
   (``background_detail``) and second mentions of one referent, the more specific word kept
   (``same_referent``); see :mod:`alchemist_data.entities.mentions`;
3. re-classification by the rule table :data:`RECLASSIFY_RULES` (recorded in ``reclassified``); a name is a
   person or animal only when spaCy's NER and WordNet agree it can be ("a red Jaguar" is a car);
4. ``no_subject``: no subject word left;
5. ``plural_subject``: a subject word is plural (spaCy tag NNS/NNPS of its head, a collective head such as
   "group"/"crowd"/"people", or a plural quantifier/number attached to it such as "several"/"two").

The paper's exact re-classification list is not published (spec §2.2); ours is :data:`SCENE_WORDS`,
:data:`BODY_PART_WORDS`, :data:`COLLECTIVE_WORDS` plus WordNet lexnames, documented at each constant.

Modules, by role: ``result`` (the result type and its codes), ``tables`` (word tables), ``lexicon`` (spaCy +
the WordNet cache), ``captions`` (clip-level checks), ``output`` (rule 1), ``heads`` (an entity word's head
noun and what WordNet/NER say of it), ``mentions`` (text, names, background details, repeated mentions),
``rules`` (rules 2-5), ``extractor`` (base class), ``spacy_backend`` and ``llm`` (the two backends, the
paper's prompt in ``llm``), ``evaluate`` (scores against labelled captions, docs/entities.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alchemist_data.entities.captions import check_caption, english_score
from alchemist_data.entities.extractor import EntityExtractor
from alchemist_data.entities.lexicon import Lexicon, get_lexicon, wordnet_dir
from alchemist_data.entities.llm import FEW_SHOT_EXAMPLES, PROMPT_INSTRUCTION, LLMExtractor, build_prompt
from alchemist_data.entities.output import parse_output
from alchemist_data.entities.result import CATEGORIES, REJECT_REASONS, WORD_DROP_REASONS, EntityResult
from alchemist_data.entities.rules import apply_rules
from alchemist_data.entities.spacy_backend import SpacyWordNetExtractor
from alchemist_data.entities.tables import RECLASSIFY_RULES

if TYPE_CHECKING:
    from alchemist_data.stages.entities import EntitiesConfig

__all__ = [
    "CATEGORIES",
    "FEW_SHOT_EXAMPLES",
    "PROMPT_INSTRUCTION",
    "RECLASSIFY_RULES",
    "REJECT_REASONS",
    "WORD_DROP_REASONS",
    "EntityExtractor",
    "EntityResult",
    "LLMExtractor",
    "Lexicon",
    "SpacyWordNetExtractor",
    "apply_rules",
    "build_extractor",
    "build_prompt",
    "check_caption",
    "english_score",
    "get_lexicon",
    "parse_output",
    "wordnet_dir",
]


def build_extractor(cfg: EntitiesConfig, device: str = "cpu") -> EntityExtractor:
    """The extractor named by ``cfg.backend`` (``spacy`` | ``llm``); call ``setup()`` once, then reuse it."""
    if cfg.backend == "spacy":
        return SpacyWordNetExtractor(cfg)
    if cfg.backend == "llm":
        return LLMExtractor(cfg, device)
    raise ValueError(f"unknown entities.backend {cfg.backend!r}; choose 'spacy' (offline) or 'llm' (paper)")
