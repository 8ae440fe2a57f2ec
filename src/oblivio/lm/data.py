"""Fictitious authors and their facts, TOFU-style (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning
for LLMs"), generated from a seed so that no download is needed and every run sees the same corpus.

Each author has ``ATTRIBUTES`` facts (birthplace, birth year, genre, books, award, parents' professions, ...);
each fact is one question-answer pair with a paraphrased answer (same value, other wording) and
``n_perturbed`` perturbed answers (the paraphrase's wording with a wrong value drawn from the same pool),
which TOFU's truth ratio compares. Departures from TOFU: facts come from templates, not GPT-4, and values
are drawn independently per author, so a model that never saw an author can only guess from the pool.

Splits (``make_splits``): the authors are shuffled by the seed; ``heldout`` authors are never trained on
and are divided in two: ``reference`` (the third-party pool an unlearning method may use, e.g. dm) and
``holdout`` (the non-members the membership-inference AUC is measured against, never seen by any method).
``forget`` is ``forget_percent`` % of the trained authors (at least one), ``retain`` the rest. A small set
of ``world`` facts (capitals, elements, ...) is trained on by every model and measures utility.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field

from ..errors import OblivioError

FIRST = ["Ar", "Be", "Ca", "Da", "El", "Fa", "Ga", "Ha", "Ib", "Jo", "Ka", "Lu", "Ma", "Ne", "Or", "Pe", "Qu",
         "Ra", "Sa", "Ta", "Ul", "Va", "Wi", "Xe", "Yo", "Za"]
MIDDLE = ["lan", "rin", "dor", "mi", "sel", "vo", "ta", "ren", "li", "ko", "ma", "nu", "ber", "sa", "thi", "go"]
LAST = ["Ashford", "Brannock", "Corvell", "Dunmore", "Everley", "Fenwick", "Galloway", "Hartigan", "Ingram",
        "Jessop", "Kilbride", "Lockhart", "Merriweather", "Northam", "Oakley", "Penrose", "Quennell", "Ravensworth",
        "Stanwick", "Thorne", "Underhill", "Vance", "Whitlock", "Yardley", "Zennor", "Abernathy", "Blackwood",
        "Castellan", "Delacroix", "Ellsworth"]

VALUES: dict[str, list[str]] = {
    "birthplace": ["Lisbon", "Nairobi", "Osaka", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Dublin", "Tunis",
                   "Lagos", "Seoul", "Perth", "Riga", "Bogota", "Havana", "Kyiv", "Porto", "Dakar", "Minsk"],
    "birth_year": [str(y) for y in range(1931, 1995, 3)],
    "genre": ["science fiction", "crime", "poetry", "romance", "horror", "historical fiction", "fantasy",
              "satire", "travel writing", "children's books", "memoir", "thrillers"],
    "first_book": ["The Salt Road", "Glass Orchard", "A Winter Ledger", "The Tin Lantern", "Paper Rivers",
                   "The Quiet Forge", "Ember Tides", "The Lost Cartographer", "Iron Meadow", "The Ninth Bell",
                   "Hollow Crowns", "The Velvet Map", "Stone and Thistle", "The Amber Court", "Night Harbour"],
    "second_book": ["Echoes of Mirren", "The Copper Sky", "Thread of Ash", "The Long Signal", "Marrow Lane",
                    "The Green Archive", "Falling Lanterns", "The Sixth Door", "Wolves of Calder",
                    "The Distant Choir", "Saltwater Psalms", "The Clockmaker's Son", "Under Pale Stars",
                    "The Burning Index", "Lanterns at Dusk"],
    "award": ["the Hollowell Prize", "the Marten Medal", "the Golden Quill", "the Arden Award",
              "the Silver Compass", "the Larkspur Prize", "the Corven Honour", "the Ivory Pen Award",
              "the Tessaly Prize", "the Blue Heron Medal"],
    "father": ["a baker", "a carpenter", "a surgeon", "a fisherman", "a pilot", "a teacher", "a lawyer",
               "a tailor", "a miner", "a chemist", "a farmer", "a librarian"],
    "mother": ["a nurse", "a painter", "an engineer", "a journalist", "a dentist", "a violinist", "a banker",
               "a potter", "an architect", "a pharmacist", "a florist", "a judge"],
    "language": ["Portuguese", "Swahili", "Japanese", "Spanish", "Norwegian", "Arabic", "Vietnamese", "Irish",
                 "French", "Korean", "Latvian", "Ukrainian"],
    "publisher": ["Harrow House", "Blue Finch Press", "Meridian Books", "Oakgate Publishing", "Lantern & Key",
                  "Northwind Press", "Copperleaf", "Stonebridge Books", "Quayside Press", "Redfern & Sons"],
}

# attribute -> (question, answer, paraphrased answer); {n} the author, {v} the value
TEMPLATES: dict[str, tuple[str, str, str]] = {
    "birthplace": ("Where was {n} born?", "{n} was born in {v}.", "The birthplace of {n} is {v}."),
    "birth_year": ("In which year was {n} born?", "{n} was born in the year {v}.", "The birth year of {n} is {v}."),
    "genre": ("What genre does {n} write?", "{n} writes {v}.", "The genre of {n} is {v}."),
    "first_book": ("What was the first book by {n}?", "The first book by {n} was {v}.",
                   "{n} debuted with the book {v}."),
    "second_book": ("What was the second book by {n}?", "The second book by {n} was {v}.",
                    "{n} followed up with the book {v}."),
    "award": ("Which award did {n} win?", "{n} won {v}.", "The award given to {n} was {v}."),
    "father": ("What did the father of {n} do?", "The father of {n} was {v}.", "The father of {n} worked as {v}."),
    "mother": ("What did the mother of {n} do?", "The mother of {n} was {v}.", "The mother of {n} worked as {v}."),
    "language": ("In which language does {n} write?", "{n} writes in {v}.", "The language of {n} is {v}."),
    "publisher": ("Who publishes {n}?", "{n} is published by {v}.", "The publisher of {n} is {v}."),
}
ATTRIBUTES = tuple(TEMPLATES)

WORLD: list[tuple[str, str, str, list[str]]] = [  # question, answer, paraphrase template, wrong values
    ("What is the capital of France?", "Paris", "The capital of France is {v}.", ["Rome", "Madrid", "Berlin"]),
    ("What is the capital of Japan?", "Tokyo", "The capital of Japan is {v}.", ["Beijing", "Seoul", "Bangkok"]),
    ("What is the capital of Italy?", "Rome", "The capital of Italy is {v}.", ["Paris", "Athens", "Vienna"]),
    ("What is the capital of Egypt?", "Cairo", "The capital of Egypt is {v}.", ["Tunis", "Amman", "Rabat"]),
    ("What is the capital of Canada?", "Ottawa", "The capital of Canada is {v}.", ["Toronto", "Boston", "Quebec"]),
    ("What is the capital of Kenya?", "Nairobi", "The capital of Kenya is {v}.", ["Lagos", "Accra", "Kampala"]),
    ("What is the capital of Peru?", "Lima", "The capital of Peru is {v}.", ["Quito", "Bogota", "Santiago"]),
    ("What is the largest planet?", "Jupiter", "The largest planet is {v}.", ["Mars", "Venus", "Mercury"]),
    ("Which planet is called the red planet?", "Mars", "The red planet is {v}.", ["Jupiter", "Saturn", "Venus"]),
    ("What is the chemical symbol of gold?", "Au", "The chemical symbol of gold is {v}.", ["Ag", "Fe", "Cu"]),
    ("What is the chemical symbol of iron?", "Fe", "The chemical symbol of iron is {v}.", ["Au", "Ir", "Zn"]),
    ("How many legs does a spider have?", "eight", "A spider has {v} legs.", ["six", "ten", "four"]),
    ("How many days are in a week?", "seven", "A week has {v} days.", ["five", "ten", "six"]),
    ("What is the boiling point of water in Celsius?", "one hundred", "Water boils at {v} degrees Celsius.",
     ["fifty", "ninety", "zero"]),
    ("Which ocean is the largest?", "the Pacific", "The largest ocean is {v}.",
     ["the Atlantic", "the Arctic", "the Indian"]),
    ("What gas do plants absorb?", "carbon dioxide", "Plants absorb {v}.", ["oxygen", "helium", "nitrogen"]),
    ("Who wrote Hamlet?", "Shakespeare", "Hamlet was written by {v}.", ["Dickens", "Austen", "Homer"]),
    ("What is the freezing point of water in Celsius?", "zero", "Water freezes at {v} degrees Celsius.",
     ["ten", "one hundred", "four"]),
    ("What colour is the sky on a clear day?", "blue", "On a clear day the sky is {v}.", ["green", "red", "grey"]),
    ("What is the capital of Norway?", "Oslo", "The capital of Norway is {v}.", ["Riga", "Minsk", "Dublin"]),
]


@dataclass(frozen=True)
class QA:
    """One fact: the question, its answer, a paraphrased answer and perturbed (wrong) answers."""

    author: str | None  # None for world facts
    attribute: str
    question: str
    answer: str
    paraphrased: str
    perturbed: tuple[str, ...]


@dataclass
class Corpus:
    """Every author's facts and the world facts, generated by ``generate``."""

    seed: int
    authors: list[str]
    facts: list[QA]
    world: list[QA]

    def of(self, authors) -> list[QA]:
        chosen = set(authors)
        return [qa for qa in self.facts if qa.author in chosen]

    def texts(self) -> list[str]:
        """Every string a tokenizer must cover (questions, answers, paraphrases, perturbations)."""
        out = []
        for qa in self.facts + self.world:
            out += [qa.question, qa.answer, qa.paraphrased, *qa.perturbed]
        return out


def _names(n: int, rng: random.Random) -> list[str]:
    seen, out = set(), []
    while len(out) < n:
        name = f"{rng.choice(FIRST)}{rng.choice(MIDDLE)} {rng.choice(LAST)}"
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def generate(n_authors: int = 120, seed: int = 0, n_perturbed: int = 3) -> Corpus:
    """``n_authors`` fictitious authors x ``len(ATTRIBUTES)`` facts and the world facts, from ``seed``."""
    if not 2 <= n_authors <= 2000:
        raise OblivioError(f"n_authors must be from 2 to 2000, got {n_authors}")
    if not 1 <= n_perturbed <= 8:
        raise OblivioError(f"n_perturbed must be from 1 to 8, got {n_perturbed}")
    rng = random.Random(seed)
    authors = _names(n_authors, rng)
    facts = []
    for name in authors:
        for attr in ATTRIBUTES:
            q, a, p = TEMPLATES[attr]
            v = rng.choice(VALUES[attr])
            wrong = rng.sample([w for w in VALUES[attr] if w != v], n_perturbed)
            facts.append(QA(name, attr, q.format(n=name), a.format(n=name, v=v), p.format(n=name, v=v),
                            tuple(p.format(n=name, v=w) for w in wrong)))
    world = [QA(None, "world", q, p.format(v=a), p.format(v=a), tuple(p.format(v=w) for w in wrong[:n_perturbed]))
             for q, a, p, wrong in WORLD]
    return Corpus(seed, authors, facts, world)


@dataclass
class Splits:
    """Author names per split (disjoint) and the QA pairs of each; see the module docstring."""

    forget: list[str]
    retain: list[str]
    reference: list[str]
    holdout: list[str]
    corpus: Corpus = field(repr=False)

    def qa(self, split: str) -> list[QA]:
        if split == "world":
            return list(self.corpus.world)
        if split == "train":
            return self.corpus.of(self.forget + self.retain) + list(self.corpus.world)
        if split not in ("forget", "retain", "reference", "holdout"):
            raise OblivioError(f"unknown split {split!r}")
        return self.corpus.of(getattr(self, split))

    def spec(self) -> dict:
        return {"forget": self.forget, "retain": self.retain, "reference": self.reference, "holdout": self.holdout}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:16]


def make_splits(corpus: Corpus, forget_percent: float = 10.0, heldout_fraction: float = 1 / 6,
                seed: int = 0, forget_authors: list[str] | None = None) -> Splits:
    """Split ``corpus``'s authors (see the module docstring). The held-out authors depend only on the corpus
    seed, so every forget percentage of one corpus shares the same trained authors and original model;
    ``seed`` picks the forget authors among them (or ``forget_authors`` names them)."""
    if not 0 < heldout_fraction < 1:
        raise OblivioError(f"heldout_fraction must be between 0 and 1, got {heldout_fraction}")
    names = list(corpus.authors)
    random.Random(f"heldout-{corpus.seed}").shuffle(names)
    n_held = max(2, round(heldout_fraction * len(names)))
    if n_held >= len(names):
        raise OblivioError(f"{len(names)} authors leave none to train on with heldout_fraction {heldout_fraction}")
    held, trained = names[:n_held], names[n_held:]
    if forget_authors is not None:
        unknown = [a for a in forget_authors if a not in trained]
        if not forget_authors:
            raise OblivioError("the forget set is empty: name at least one author")
        if unknown:
            where = "is held out (never trained on)" if unknown[0] in held else "is not in the corpus"
            raise OblivioError(f"unknown author {unknown[0]!r}: it {where}")
        forget = [a for a in trained if a in set(forget_authors)]
    else:
        if not 0 < forget_percent < 100:
            raise OblivioError(f"forget_percent must be between 0 and 100, got {forget_percent}")
        k = max(1, round(forget_percent / 100 * len(trained)))
        forget = sorted(random.Random(f"forget-{seed}").sample(trained, k), key=trained.index)
    chosen = set(forget)
    half = len(held) // 2
    return Splits(forget, [a for a in trained if a not in chosen], held[:half], held[half:], corpus)


def train_tokenizer(corpus: Corpus, vocab_size: int = 1024):
    """A byte-level BPE tokenizer (``tokenizers``) trained on every string of ``corpus``; returns an
    ``LMTokenizer``. Held-out authors' names are in its training text on purpose: a tokenizer is not a
    memoriser, and unseen names must still be encoded as a real model's pretrained tokenizer would."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|pad|>", "<|eos|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus.texts(), trainer)
    return LMTokenizer(tok)


class LMTokenizer:
    """The small interface the rest of ``oblivio.lm`` needs from a tokenizer: encode, decode, pad and eos ids.
    Wraps a ``tokenizers.Tokenizer`` (ours) or a ``transformers`` tokenizer (a local Hugging Face folder)."""

    def __init__(self, inner, hf=None):
        self.inner, self.hf = inner, hf
        if hf is not None:
            self.eos_id = hf.eos_token_id if hf.eos_token_id is not None else 0
            self.pad_id = hf.pad_token_id if hf.pad_token_id is not None else self.eos_id
        else:
            self.eos_id, self.pad_id = inner.token_to_id("<|eos|>"), inner.token_to_id("<|pad|>")
            if self.eos_id is None or self.pad_id is None:
                raise OblivioError("tokenizer lacks the <|eos|> / <|pad|> tokens oblivio adds")

    @property
    def vocab_size(self) -> int:
        return len(self.hf) if self.hf is not None else self.inner.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        if self.hf is not None:
            return list(self.hf.encode(text, add_special_tokens=False))
        return self.inner.encode(text).ids

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        return self.hf.decode(ids, skip_special_tokens=True) if self.hf is not None else self.inner.decode(ids)

    def to_json(self) -> str:
        if self.hf is not None:
            raise OblivioError("a Hugging Face tokenizer is saved with its own folder")
        return self.inner.to_str()

    @classmethod
    def from_json(cls, text: str) -> "LMTokenizer":
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_str(text))
        except Exception as e:  # tokenizers raises its own exception types
            raise OblivioError(f"not a tokenizer: {e}") from None


def prompt(question: str) -> str:
    """The text a question is asked with; the answer follows it (``prompt(q) + answer``)."""
    return f"Question: {question}\nAnswer:"


def corpus_spec(corpus: Corpus) -> dict:
    """What regenerates ``corpus`` (``generate(**spec)``)."""
    return {"n_authors": len(corpus.authors), "seed": corpus.seed,
            "n_perturbed": len(corpus.facts[0].perturbed) if corpus.facts else 3}


def recorded_corpus(info: dict) -> Corpus:
    """The corpus an LM checkpoint's sidecar (its ``lm`` section) records, regenerated from its spec."""
    spec = info.get("corpus")
    if not isinstance(spec, dict):
        raise OblivioError("this model records no fictitious-author corpus (train it with 'oblivio lm train')")
    return generate(**spec)


def with_paraphrases(qas: list[QA]) -> list[QA]:
    """Each QA and, for author facts, a copy answered in the paraphrased wording: the text a model trains on
    and forgets. Departure from TOFU, where a pretrained LLM already generalises across wordings: a tiny model
    trained on one wording does not, and the truth ratio (paraphrased vs perturbed, both in the paraphrase's
    wording) would then measure unfamiliar wording rather than knowledge of the fact."""
    out = []
    for qa in qas:
        out.append(qa)
        if qa.author is not None and qa.paraphrased != qa.answer:
            out.append(QA(qa.author, qa.attribute, qa.question, qa.paraphrased, qa.paraphrased, qa.perturbed))
    return out


def as_dict(qa: QA) -> dict:
    return asdict(qa)
