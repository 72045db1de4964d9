"""Word tables of the paper's rules (spec §2.2). Words are compared by lower-cased lemma of the head noun.

The paper's exact re-classification list is not published; ours is these sets plus WordNet lexnames,
documented at each constant.
"""

from __future__ import annotations

#: Scenes and surfaces that fill most of the frame: never visually separable objects, always background
#: (spec §2.2's example: "cloud" moves to background). WordNet lexname ``noun.location`` also counts as a scene.
SCENE_WORDS = frozenset(
    """
    sky cloud sea ocean water lake river pond stream waterfall shore coast coastline beach sand seaside bay
    grass lawn field meadow pasture farmland prairie road street highway sidewalk pavement path trail alley
    room wall floor ceiling hallway corridor hall kitchen bedroom bathroom office studio classroom gym lobby
    forest woods wood jungle park garden yard backyard mountain hill valley canyon cliff desert snow
    landscape scenery countryside city town village downtown area space background backdrop interior exterior
    stage arena stadium court pitch track rink pool restaurant cafe shop store supermarket market mall station
    airport church temple library warehouse garage parking outdoors indoors sunset sunrise horizon skyline fog
    mist darkness universe galaxy underwater seabed reef plain island wave slope ground runway lane
    """.split()
)

#: Body parts stay (separable) objects even when an LLM files them under subject or background; this also
#: keeps "long brown hair" (paper's example) an object.
BODY_PART_WORDS = frozenset(
    """
    hair face head eye eyes hand hands arm arms leg legs foot feet finger fingers beard mustache moustache lip
    lips mouth nose ear ears neck shoulder shoulders skin tail paw paws wing wings mane fur teeth tooth body
    """.split()
)

#: Heads that always denote several people/animals (plural subject, spec §2.2 rule 5).
ANIMATE_COLLECTIVES = frozenset(
    """
    people crowd audience family couple herd flock crew troop swarm choir squad team army gang mob folks
    spectators pack school colony litter
    """.split()
)

#: Heads that denote several things when followed by "of <noun>": plural subject when that noun is animate,
#: a mere quantifier otherwise ("a couple of cups"). Words in both sets ("couple") follow the "of" complement
#: when there is one.
CONTAINER_COLLECTIVES = frozenset(
    """
    group pair couple bunch number lot set band line row handful dozen crowd team pack school
    """.split()
)
COLLECTIVE_WORDS = ANIMATE_COLLECTIVES | CONTAINER_COLLECTIVES

#: Quantifiers stripped from the front of entity phrases (rule "noun without any quantifier"); the plural ones
#: also mark their noun as plural.
PLURAL_QUANTIFIERS = frozenset(
    """
    several many few multiple numerous various both some these those all two three four five six seven eight
    nine ten eleven twelve dozens hundreds thousands lots plenty
    """.split()
)
SINGULAR_QUANTIFIERS = frozenset(
    "a an the one each every another any no this that his her their its my your our".split()
)
QUANTIFIER_WORDS = PLURAL_QUANTIFIERS | SINGULAR_QUANTIFIERS

#: Pronouns are never entity words.
PRONOUNS = frozenset(
    """
    i me you he him she her it we us they them myself yourself himself herself itself ourselves themselves
    someone somebody something anyone anybody anything everyone everybody everything nobody nothing one who
    whom which that this these those what
    """.split()
)

#: Relational / meta nouns that name no visible entity ("in front of", "in the background", "the camera").
NOT_ENTITY_WORDS = frozenset(
    """
    front side top bottom middle center centre edge left right back foreground distance way time moment end
    part kind type sort view shot video clip footage frame camera scene image picture close closeup close-up
    angle perspective motion movement direction
    """.split()
)

#: Meta nouns about the recording itself: a noun phrase containing one is no entity ("the camera pans", which
#: the parser reads as the noun phrase "camera pans").
META_WORDS = frozenset("camera video footage clip shot timelapse time-lapse".split())

#: Nouns that name on-screen text, not a separable thing ("the words ... appear", "a title card").
TEXT_WORDS = frozenset("text word words title caption captions subtitle subtitles headline credits lyrics".split())

#: Nouns that name a work (a show, a song): their name is a title, never a subject ("the show friends"), and the
#: work itself is no visible entity.
TITLE_NOUNS = frozenset("show movie film series episode song album cartoon program programme channel trailer".split())

#: Verbs that introduce a quoted or named text ("a book titled The Three Musketeers", "a sign that says ...").
TEXT_VERBS = frozenset("titled entitled called named labeled labelled says said reads reading saying".split())

#: Nouns whose "of" complement is part of the background ("a blurred background of people"): the complement
#: joins the background phrase. "scene" is left out on purpose: "a scene of a woman cooking" names the subject.
BACKGROUND_GOVERNORS = frozenset("background backdrop setting scenery surroundings".split())

#: "X in the background" / "X in the distance": X is a background detail, not a subject or object.
BACKGROUND_PLACES = frozenset("background distance".split())

#: spaCy NER labels of names that are never a person or an animal ("a red Jaguar" is an ORG, not a cat).
NON_PERSON_ENTITY_LABELS = frozenset("ORG GPE LOC FAC PRODUCT WORK_OF_ART EVENT LAW LANGUAGE".split())

#: Determiners of a mention that refers back to one already made ("a bearded man ... the man").
DEFINITE_DETERMINERS = frozenset("the this that".split())

#: Visible things whose first WordNet sense is an event/act ("fire" = the event of burning): never abstract.
VISIBLE_EVENT_WORDS = frozenset("fire flame firework explosion splash rainbow lightning shadow smoke spark".split())

#: First-sense lexnames that name no visible entity: the offline sorter drops such nouns ("a walk", "the day").
ABSTRACT_LEXNAMES = frozenset(
    """
    noun.act noun.attribute noun.cognition noun.event noun.feeling noun.motive noun.process noun.relation
    noun.state noun.time noun.quantity
    """.split()
)

#: Frequent function words of other Latin-script languages. Some are also (rare) WordNet entries ("le", "un",
#: "del"), so without this list a French caption would look half-English.
FOREIGN_FUNCTION_WORDS = frozenset(
    """
    le la les des du une un et est dans avec sur pour au aux der den dem das und mit ein eine ist auf im el
    los las con por para una il di che della nel och het een su en de y
    """.split()
)

#: Re-classification rules (spec §2.2 rule 3), applied in this order; the first that matches moves the word.
#: (rule name, categories it applies to, target category, description)
RECLASSIFY_RULES: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("body_part", ("subject", "background"), "object", "head noun is a body part (BODY_PART_WORDS or noun.body)"),
    ("scene", ("subject", "object"), "background", "head noun is a scene/surface (SCENE_WORDS or noun.location)"),
    ("animate_object", ("object",), "subject", "head noun is a person/animal (WordNet) or animate collective"),
    ("inanimate_subject", ("subject",), "object", "head noun is neither a person/animal nor an animate group"),
)
