"""The base tasks prompt synthesis draws from, and which instructions conflict (data).

A base task is a request without constraints, in our own words; spar.prompt_synthesis
adds one to three verifiable constraints to it. The conflict table says which IFEval
instructions must never be combined in one prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from spar import ifeval


@dataclass(frozen=True)
class BaseTask:
    """A task without constraints; keywords are words a good answer naturally uses."""

    text: str
    keywords: tuple[str, ...] = ()
    yes_no: bool = False
    """A yes/no question, the only kind that can take ``constrained_response``."""


def _t(text: str, *keywords: str) -> BaseTask:
    return BaseTask(text, keywords)


def _q(text: str, *keywords: str) -> BaseTask:
    return BaseTask(text, keywords, yes_no=True)


BASE_TASKS: tuple[BaseTask, ...] = (
    _t("Write an email to your landlord asking to repair a leaking kitchen faucet.",
       "faucet", "repair", "apartment"),
    _t("Write a short story about a lighthouse keeper who finds a message in a bottle.",
       "lighthouse", "bottle", "storm"),
    _t("Summarize the main causes of the French Revolution for a high school student.",
       "monarchy", "taxes", "bread"),
    _t("Explain how vaccines teach the immune system to recognise a virus.",
       "antibodies", "virus", "immunity"),
    _t("Write a list of tips for someone who wants to start running.",
       "shoes", "stretching", "pace"),
    _t("Write a product description for a backpack with a built-in solar panel.",
       "solar", "battery", "waterproof"),
    _t("Write a cover letter for a junior data analyst position at a shipping company.",
       "data", "analysis", "logistics"),
    _t("Explain to a ten-year-old why the sky is blue.", "sunlight", "scattering", "colors"),
    _t("Write a poem about the first snow of winter in a small mountain town.",
       "snow", "quiet", "chimney"),
    _t("Write a blog post about the benefits of learning a second language as an adult.",
       "vocabulary", "practice", "culture"),
    _t("Describe a typical day in the life of a beekeeper.", "hive", "honey", "queen"),
    _t("Write a speech for a retirement party of a school librarian.",
       "books", "students", "library"),
    _t("Give advice to a student who feels overwhelmed before final exams.",
       "schedule", "sleep", "breaks"),
    _t("Write a review of a fictional Italian restaurant that just opened downtown.",
       "pasta", "service", "dessert"),
    _t("Explain how a bill becomes a law in a parliamentary democracy.",
       "parliament", "vote", "committee"),
    _t("Write a dialogue between a customer and a bike mechanic about a squeaky brake.",
       "brake", "wheel", "chain"),
    _t("Write a travel guide entry for a weekend in Lisbon.", "tram", "pastries", "river"),
    _t("Summarize the plot of a heist movie in which the thieves steal a famous painting.",
       "museum", "painting", "alarm"),
    _t("Write an advertisement for a community gardening club.",
       "garden", "volunteers", "vegetables"),
    _t("Explain the difference between weather and climate.",
       "temperature", "decades", "forecast"),
    _t("Write a thank-you note to a neighbour who looked after your cat.",
       "cat", "kindness", "neighbour"),
    _t("Describe how to make a simple tomato soup at home.", "tomatoes", "onion", "simmer"),
    _t("Write a persuasive essay arguing that cities should plant more trees.",
       "shade", "trees", "pollution"),
    _t("Write a job posting for a part-time barista at a small coffee shop.",
       "coffee", "customers", "shifts"),
    _t("Explain how compound interest works with a simple example.",
       "interest", "savings", "years"),
    _t("Write a bedtime story about a dragon who is afraid of the dark.",
       "dragon", "night", "lantern"),
    _t("Write a letter to your future self to be opened in ten years.",
       "dreams", "future", "memories"),
    _t("Describe the water cycle for a science class.",
       "evaporation", "clouds", "rain"),
    _t("Write a riddle whose answer is a clock, and then explain the answer.",
       "hands", "time", "face"),
    _t("Write an announcement that the office will move to a new building next month.",
       "office", "move", "parking"),
    _t("Explain why sleep matters for memory.", "sleep", "memory", "brain"),
    _t("Write a short biography of a fictional inventor who built a flying bicycle.",
       "inventor", "bicycle", "wings"),
    _t("Write a complaint to an airline about lost luggage.",
       "luggage", "flight", "refund"),
    _t("Describe the rules of chess to someone who has never played.",
       "king", "pawn", "checkmate"),
    _t("Write a pitch for a mobile app that helps people share leftover food.",
       "food", "app", "waste"),
    _t("Explain how a refrigerator keeps food cold.", "refrigerant", "compressor", "heat"),
    _t("Write a diary entry of an astronaut on her first day on the Moon.",
       "moon", "earth", "dust"),
    _t("Write instructions for planting a tree in a backyard.", "hole", "roots", "water"),
    _t("Write a motivational message for a football team before the final match.",
       "team", "final", "together"),
    _t("Compare trains and planes for a 500 kilometre trip.", "train", "plane", "comfort"),
    _t("Write a limerick about a cat who loves to sleep in the sink.",
       "cat", "sink", "nap"),
    _t("Explain what a computer password manager does and why it helps.",
       "password", "security", "vault"),
    _t("Write a toast for your best friend's wedding.", "friendship", "love", "cheers"),
    _t("Describe the history of the bicycle in a few key steps.",
       "bicycle", "pedals", "tires"),
    _t("Write a news report about a town that won a prize for its clean streets.",
       "town", "award", "streets"),
    _t("Write a recipe for a vegetarian chili.", "beans", "chili", "spices"),
    _t("Explain how bees communicate the location of flowers.",
       "dance", "flowers", "hive"),
    _t("Write a welcome message for new members of an online chess club.",
       "members", "tournament", "chess"),
    _t("Write a short fable with a moral about patience.", "tortoise", "patience", "race"),
    _t("Describe your ideal weekend in the countryside.", "hiking", "farm", "fresh"),
    _t("Write a plan for a week of healthy family dinners.",
       "vegetables", "protein", "dinner"),
    _t("Explain the basics of how the internet sends data between computers.",
       "packets", "router", "network"),
    _t("Write a funny story about a robot that tries to bake a cake.",
       "robot", "cake", "oven"),
    _t("Write a speech for a student running for class president.",
       "school", "promise", "students"),
    _t("Write a social media post announcing a charity bake sale.",
       "charity", "cookies", "donations"),
    _t("Explain why the Moon has phases.", "moon", "sunlight", "orbit"),
    _t("Write an apology email to a client for a delayed delivery.",
       "delay", "delivery", "apology"),
    _t("Describe a busy market in a city you would like to visit.",
       "market", "spices", "crowd"),
    _t("Write a guide for caring for a houseplant that needs little light.",
       "soil", "leaves", "watering"),
    _t("Write a short mystery story set on a night train.", "train", "detective", "ticket"),
    _t("Explain how recycling paper works.", "paper", "pulp", "recycling"),
    _t("Write a eulogy for a beloved village baker.", "bakery", "bread", "village"),
    _t("Write a memo to employees about a new four-day work week trial.",
       "employees", "trial", "productivity"),
    _q("Is it a good idea to learn to code before going to university?",
       "programming", "university", "skills"),
    _q("Is it healthy to drink coffee every day?", "coffee", "caffeine", "health"),
    _q("Should every school teach students how to cook?", "cooking", "school", "nutrition"),
    _q("Can a person learn to play the piano well after the age of fifty?",
       "piano", "practice", "age"),
    _q("Is it safer to travel by train than by car?", "train", "car", "safety"),
    _q("Should cities ban cars from their historic centres?",
       "cars", "pedestrians", "traffic"),
    _q("Is reading on paper better for learning than reading on a screen?",
       "paper", "screen", "reading"),
    _q("Would a four-day school week help students learn more?",
       "students", "week", "learning"),
)  # fmt: skip

#: Conflicting instruction pairs: IFEval's ``INSTRUCTION_CONFLICTS`` (made symmetric),
#: plus pairs whose checkers contradict each other though IFEval does not list them.
_IFEVAL_CONFLICTS: dict[str, tuple[str, ...]] = {
    "keywords:existence": ("keywords:existence",),
    "keywords:frequency": ("keywords:frequency",),
    "keywords:forbidden_words": ("keywords:forbidden_words",),
    "keywords:letter_frequency": ("keywords:letter_frequency",),
    "language:response_language": (
        "language:response_language", "detectable_format:multiple_sections",
        "keywords:existence", "keywords:frequency", "keywords:forbidden_words",
        "startend:end_checker", "change_case:english_capital", "change_case:english_lowercase",
    ),
    "length_constraints:number_sentences": ("length_constraints:number_sentences",),
    "length_constraints:number_paragraphs": (
        "length_constraints:number_paragraphs", "length_constraints:nth_paragraph_first_word",
        "length_constraints:number_sentences",
    ),
    "length_constraints:number_words": ("length_constraints:number_words",),
    "length_constraints:nth_paragraph_first_word": (
        "length_constraints:nth_paragraph_first_word", "length_constraints:number_paragraphs",
    ),
    "detectable_content:number_placeholders": ("detectable_content:number_placeholders",),
    "detectable_content:postscript": ("detectable_content:postscript",),
    "detectable_format:number_bullet_lists": ("detectable_format:number_bullet_lists",),
    "detectable_format:constrained_response": ifeval.INSTRUCTION_IDS,
    "detectable_format:number_highlighted_sections": (
        "detectable_format:number_highlighted_sections",
    ),
    "detectable_format:multiple_sections": (
        "detectable_format:multiple_sections", "language:response_language",
        "detectable_format:number_highlighted_sections",
    ),
    "detectable_format:json_format": tuple(
        i for i in ifeval.INSTRUCTION_IDS
        if i not in ("keywords:forbidden_words", "keywords:existence")
    ),
    "detectable_format:title": ("detectable_format:title",),
    "combination:two_responses": tuple(
        i for i in ifeval.INSTRUCTION_IDS
        if i not in (
            "keywords:forbidden_words", "keywords:existence", "language:response_language",
            "detectable_format:title", "punctuation:no_comma",
        )
    ),
    "combination:repeat_prompt": tuple(
        i for i in ifeval.INSTRUCTION_IDS
        if i not in ("keywords:existence", "detectable_format:title", "punctuation:no_comma")
    ),
    "startend:end_checker": ("startend:end_checker",),
    "change_case:capital_word_frequency": (
        "change_case:capital_word_frequency", "change_case:english_lowercase",
        "change_case:english_capital",
    ),
    "change_case:english_capital": ("change_case:english_capital",),
    "change_case:english_lowercase": (
        "change_case:english_lowercase", "change_case:english_capital",
    ),
    "punctuation:no_comma": ("punctuation:no_comma",),
    "startend:quotation": ("startend:quotation", "detectable_format:title"),
}  # fmt: skip

#: Why each extra pair cannot both be followed.
EXTRA_CONFLICTS: dict[tuple[str, str], str] = {
    ("startend:quotation", "startend:end_checker"):
        "the answer must end with a quotation mark and with the end phrase",
    ("detectable_format:multiple_sections", "change_case:english_lowercase"):
        "the section marker is matched case-sensitively ('Section 1')",
    ("detectable_format:multiple_sections", "change_case:english_capital"):
        "the section marker is matched case-sensitively ('Section 1')",
    ("combination:repeat_prompt", "punctuation:no_comma"):
        "the repeated request itself contains commas",
    ("language:response_language", "length_constraints:nth_paragraph_first_word"):
        "the required first word is English",
    ("language:response_language", "keywords:letter_frequency"):
        "letters are counted in the Latin alphabet, which most of the languages do not use",
    ("language:response_language", "change_case:capital_word_frequency"):
        "capital letters are Latin ones, which most of the languages do not use",
}  # fmt: skip


def _conflict_table() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {i: {i} for i in ifeval.INSTRUCTION_IDS}
    pairs = [(a, b) for a, bs in _IFEVAL_CONFLICTS.items() for b in bs]
    for a, b in [*pairs, *EXTRA_CONFLICTS]:
        table[a].add(b)
        table[b].add(a)
    return {k: frozenset(v) for k, v in table.items()}


#: instruction id → the ids it must not be combined with (itself included).
CONFLICTS: Mapping[str, frozenset[str]] = _conflict_table()
