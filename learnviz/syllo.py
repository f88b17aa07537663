"""SYLLO: a synthetic syllogism task with graded difficulty (the default probe set and the demo's training data).

Every example is a few premises about plural nouns and the question "What follows about A and Z?";
the answer is the conclusion whose subject is A and predicate Z ("All cats are fish."), or
"Nothing follows." The logic is the first figure of the classical syllogism, chained:

    all  + all -> all        (Barbara)      some + all -> some      (Darii)
    all  + no  -> no         (Celarent)     some + no  -> some not  (Ferio)
    anything else (a negative or 'some' middle, a negative first premise) -> nothing follows

Difficulty comes from chain length, premise order, distractor premises and negated wording:
  easy    2 premises in chain order
  medium  3 premises in chain order, or 2 premises in reverse order
  hard    4 premises shuffled with a distractor premise
  edge    negation traps, double negation ("It is not true that ..."), quantifier traps
Everything is drawn from a seeded `random.Random`, so a seed fixes every example.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NOUNS = (
    "cats dogs birds fish mammals animals pets reptiles insects wolves foxes lions tigers bears "
    "horses cows sheep goats frogs snakes owls ducks geese bees ants spiders whales sharks "
    "rabbits mice rats bats deer eagles crows parrots seals otters squirrels monkeys"
).split()

QUANTIFIERS = ("all", "some", "no", "some_not")

MOODS = {  # (first premise, second premise) -> easy category name
    ("all", "all"): "barbara",
    ("all", "no"): "celarent",
    ("some", "all"): "darii",
    ("some", "no"): "ferio",
}

SKILLS = ("syllo_easy", "syllo_medium", "syllo_hard", "edge_cases", "training_mix")


@dataclass(frozen=True)
class Example:
    prompt: str
    expected: str
    skill: str
    category: str


def compose(first: str, second: str) -> str | None:
    """Chain 'first(A,B)' with 'second(B,C)' into the conclusion about (A,C); None: nothing follows."""
    if first == "all":
        return {"all": "all", "no": "no"}.get(second)
    if first == "some":
        return {"all": "some", "no": "some_not"}.get(second)
    return None


def conclude(quantifiers: list[str]) -> str | None:
    """The conclusion of a chain of premises T0->T1->...->Tn, or None."""
    state: str | None = quantifiers[0]
    if state not in ("all", "some"):
        # "No A are B" or "Some A are not B" as the first link: nothing about A and the end.
        return None if len(quantifiers) > 1 else state
    for q in quantifiers[1:]:
        state = compose(state, q) if state else None
    return state


def sentence(q: str, a: str, b: str, *, negated: bool = False) -> str:
    """One premise. `negated` words it as the negation of its contradictory (double negation)."""
    if negated:
        contradictory = {"all": "some_not", "some_not": "all", "no": "some", "some": "no"}[q]
        return "It is not true that " + _plain(contradictory, a, b, lower=True)
    return _plain(q, a, b)


def _plain(q: str, a: str, b: str, lower: bool = False) -> str:
    text = {
        "all": f"All {a} are {b}.",
        "no": f"No {a} are {b}.",
        "some": f"Some {a} are {b}.",
        "some_not": f"Some {a} are not {b}.",
    }[q]
    return text[0].lower() + text[1:] if lower else text


def answer(conclusion: str | None, a: str, z: str) -> str:
    if conclusion is None:
        return "Nothing follows."
    return _plain(conclusion, a, z)


def question(a: str, z: str) -> str:
    return f"What follows about {a} and {z}?"


def _terms(rng: random.Random, n: int) -> list[str]:
    return rng.sample(NOUNS, n)


def _build(rng: random.Random, quantifiers: list[str], *, order: list[int] | None = None,
           distractors: int = 0, negated: set[int] = frozenset()) -> tuple[str, str]:
    terms = _terms(rng, len(quantifiers) + 1 + 2 * distractors)
    chain, spare = terms[: len(quantifiers) + 1], terms[len(quantifiers) + 1:]
    premises = [sentence(q, chain[i], chain[i + 1], negated=i in negated)
                for i, q in enumerate(quantifiers)]
    for d in range(distractors):
        premises.append(sentence(rng.choice(("all", "some", "no")), spare[2 * d], spare[2 * d + 1]))
    if order is not None:
        premises = [premises[i] for i in order]
    prompt = " ".join(premises) + " " + question(chain[0], chain[-1])
    return prompt, answer(conclude(quantifiers), chain[0], chain[-1])


def easy(rng: random.Random) -> Example:
    mood = rng.choice(sorted(MOODS))
    prompt, expected = _build(rng, list(mood))
    return Example(prompt, expected, "syllo_easy", MOODS[mood])


def medium(rng: random.Random) -> Example:
    if rng.random() < 0.5:
        mood = rng.choice(sorted(MOODS))
        prompt, expected = _build(rng, list(mood), order=[1, 0])
        return Example(prompt, expected, "syllo_medium", "reversed")
    qs = [rng.choice(("all", "some")), "all", rng.choice(("all", "no"))]
    prompt, expected = _build(rng, qs)
    return Example(prompt, expected, "syllo_medium", "chain3")


def hard(rng: random.Random) -> Example:
    if rng.random() < 0.75:
        qs = [rng.choice(("all", "some")), "all", "all", rng.choice(("all", "no"))]
        category = "chain4"
    else:  # an invalid chain: a 'some' or 'no' in the middle breaks it
        qs = [rng.choice(("all", "some")), rng.choice(("some", "no")), "all", "all"]
        category = "broken_chain"
    order = list(range(len(qs) + 1))
    rng.shuffle(order)
    prompt, expected = _build(rng, qs, order=order, distractors=1)
    return Example(prompt, expected, "syllo_hard", category)


def edge(rng: random.Random) -> Example:
    kind = rng.choice(("negation", "double_negation", "quantifier"))
    if kind == "negation":
        # A negative first premise or two negatives: the answer is "Nothing follows", the trap is "No ...".
        qs = rng.choice([["no", "all"], ["no", "no"], ["some_not", "all"], ["all", "some_not"]])
        prompt, expected = _build(rng, qs)
    elif kind == "double_negation":
        mood = rng.choice(sorted(MOODS))
        prompt, expected = _build(rng, list(mood), negated={rng.randrange(2)})
    else:
        qs = rng.choice([["all", "some"], ["some", "some"], ["some", "some_not"]])
        prompt, expected = _build(rng, qs)
    return Example(prompt, expected, "edge_cases", kind)


GENERATORS = {"syllo_easy": easy, "syllo_medium": medium, "syllo_hard": hard, "edge_cases": edge}
# The training distribution: what the demo model sees, and what the "training_mix" probes sample.
TRAINING_MIX = {"syllo_easy": 0.3, "syllo_medium": 0.25, "syllo_hard": 0.25, "edge_cases": 0.2}


def training_example(rng: random.Random) -> Example:
    skill = rng.choices(list(TRAINING_MIX), weights=list(TRAINING_MIX.values()))[0]
    ex = GENERATORS[skill](rng)
    return ex


def training_stream(seed: int):
    """An endless, seeded stream of training examples."""
    rng = random.Random(seed)
    while True:
        yield training_example(rng)


def parse_statement(text: str) -> tuple[str, str, str] | None:
    """'All cats are fish' -> ('all', 'cats', 'fish'); double negation resolved. None if not SYLLO."""
    text = text.strip().rstrip(".")
    negated = False
    prefix = "It is not true that "
    if text.startswith(prefix):
        negated, text = True, text[len(prefix):]
        text = text[0].upper() + text[1:]
    words = text.split()
    if len(words) == 4 and words[2] == "are" and words[0] in ("All", "No", "Some"):
        q = {"All": "all", "No": "no", "Some": "some"}[words[0]]
        a, b = words[1], words[3]
    elif len(words) == 5 and words[0] == "Some" and words[2:4] == ["are", "not"]:
        q, a, b = "some_not", words[1], words[4]
    else:
        return None
    if negated:
        q = {"all": "some_not", "some_not": "all", "no": "some", "some": "no"}[q]
    return q, a, b


def solve(prompt: str) -> str | None:
    """The expected answer of a SYLLO prompt, worked out from its text (None: not SYLLO).

    Follows the premises from the question's subject to its predicate; no such chain means
    nothing follows. Used by tests to check every probe and hard example.
    """
    body, _, tail = prompt.rpartition("What follows about ")
    if not tail.endswith("?") or " and " not in tail:
        return None
    a, z = tail[:-1].split(" and ", 1)
    edges: dict[str, tuple[str, str]] = {}
    for sentence_text in body.split("."):
        if not sentence_text.strip():
            continue
        parsed = parse_statement(sentence_text)
        if parsed is None:
            return None
        q, s, p = parsed
        edges[s] = (q, p)
    quantifiers, node, seen = [], a, set()
    while node != z:
        if node not in edges or node in seen:
            return answer(None, a, z)
        seen.add(node)
        q, node = edges[node]
        quantifiers.append(q)
    return answer(conclude(quantifiers), a, z)
