"""The result type of entity-word extraction and the codes it carries."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CATEGORIES = ("background", "subject", "object")

#: Clip-level reject reasons (the ``rejects.reason`` codes of the entities stage).
REJECT_REASONS = (
    "empty_caption",
    "caption_too_long",
    "non_english",
    "invalid_output",
    "not_substring",
    "no_subject",
    "plural_subject",
)

#: Word-level drop reasons (``EntityResult.dropped``): ``text`` = on-screen text or a title ("the logo 'Chicago
#: Bulls'"), ``named`` = a name of nothing visible (a team, an event), ``background_detail`` = a thing inside the
#: background ("people in the background"), ``same_referent`` = a second mention of an entity already listed
#: ("the man" after "a bearded man").
WORD_DROP_REASONS = (
    "quantifier",
    "pronoun",
    "duplicate",
    "abstract",
    "not_entity",
    "not_noun",
    "text",
    "named",
    "background_detail",
    "same_referent",
)


@dataclass
class EntityResult:
    """Entity words of one caption and what the rules did to it (``reject_reason`` set = clip dropped)."""

    subject: list[str] = field(default_factory=list)
    object: list[str] = field(default_factory=list)
    background: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (word, reason_code)
    reclassified: list[tuple[str, str, str]] = field(default_factory=list)  # (word, from, to)
    reject_reason: str | None = None
    reject_detail: str | None = None

    def words(self) -> list[tuple[str, str]]:
        """(word, category) pairs, subjects first (the order grounding uses)."""
        return [(w, c) for c in ("subject", "object", "background") for w in getattr(self, c)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dropped"] = [list(x) for x in self.dropped]
        d["reclassified"] = [list(x) for x in self.reclassified]
        return d


def reject(reason: str, detail: str, **partial: Any) -> EntityResult:
    assert reason in REJECT_REASONS, reason
    return EntityResult(reject_reason=reason, reject_detail=detail, **partial)
