"""Relations as data: one YAML file per relation declares its templates, splits, context sentence,
question forms and answer aliases.

    from common.relations import load_relation, relation_registry
    country = load_relation("country")            # a shipped file, common/relations/country.yaml
    custom = load_relation("kb/relations/iata.yaml")
    country.prompts("Lagos", split="test")         # every test-split prompt of the fact

A relation file:

    name: country                       # what facts' "relation" field says
    description: The country a city lies in.
    subject: city                       # what the subject is (for messages and docs)
    answer: country                     # what the object is
    context: "{subject} is a city in {object}."        # the fact as one sentence in a prompt
    aliases: {United States: [USA, United States of America]}   # accepted answer forms
    words: [nation]                     # optional: other words a question uses for the relation
    families:                           # templates grouped by *structure*
      subject_first:
        split: train                    # train | validation | test: whole families go to one split
        layout: completion              # completion (text continued) | chat (a user message)
        templates: ["{subject} is located in the country of", ...]

Whole families go to one split (leave-families-out), so a test phrasing differs from every training
one in structure, not in one word. Training reads `train`, every choice (early stopping, a setting)
reads `validation`, reports read `test`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SPLITS = ("train", "validation", "test")
LAYOUTS = ("completion", "chat")
SHIPPED = Path(__file__).with_name("relations")


class RelationFileError(ValueError):
    """A relation file is malformed; the message names file, line and field."""


@dataclass(frozen=True)
class Template:
    """One phrasing of a relation: `text` has a `{subject}` slot; a chat template's text is the user turn."""

    text: str
    family: str
    split: str
    layout: str

    def render(self, subject: str) -> str:
        return self.text.replace("{subject}", subject)


@dataclass(frozen=True)
class Relation:
    """A relation's declared phrasings and answer forms (see the module docstring for the file format)."""

    name: str
    description: str
    subject: str
    answer: str
    context: str
    templates: tuple[Template, ...]
    aliases: dict = field(default_factory=dict, hash=False, compare=False)
    words: tuple[str, ...] = ()
    path: str = ""

    def select(self, split: str | None = None, layout: str | None = None) -> list[Template]:
        """The templates of `split` and `layout` (None: any)."""
        if split is not None and split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {SPLITS}")
        if layout is not None and layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
        return [t for t in self.templates if (split is None or t.split == split) and (layout is None or t.layout == layout)]

    def prompts(self, subject: str, split: str, layout: str | None = None) -> list[str]:
        """`subject` rendered into every template of `split` (and `layout`)."""
        return [t.render(subject) for t in self.select(split, layout)]

    def families(self, split: str | None = None) -> list[str]:
        """Family names (of `split`), in file order."""
        return list(dict.fromkeys(t.family for t in self.select(split)))

    def render_context(self, subject: str, obj: str) -> str:
        """The fact as the sentence a prompt carries when the fact is given in context."""
        return self.context.replace("{subject}", subject).replace("{object}", obj)

    def question_words(self) -> tuple[str, ...]:
        """The words a question names this relation by: its name ("atomic_number" as "atomic number"),
        then the file's `words` ("money" for currency)."""
        return (self.name.replace("_", " "), *self.words)

    def aliases_of(self, obj: str) -> tuple[str, ...]:
        """Accepted alternative forms of the answer `obj`."""
        return tuple(self.aliases.get(obj, ()))


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings remember the line of each key (for file:line errors)."""


class _Mapping(dict):
    lines: dict


def _construct_mapping(loader, node, deep=False):
    mapping = _Mapping(loader.construct_mapping(node, deep=True))
    mapping.lines = {loader.construct_object(k, deep=True): k.start_mark.line + 1 for k, _ in node.value}
    mapping.lines["__self__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_relation(text: str, path: str = "<string>") -> Relation:
    """Parse and validate a relation file's text; raise RelationFileError naming path:line and field."""
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise RelationFileError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise RelationFileError(f"{path}:1: a relation file is a mapping with name, context and families")

    def fail(node: dict, key: str, why: str):
        line = getattr(node, "lines", {}).get(key, getattr(node, "lines", {}).get("__self__", 1))
        raise RelationFileError(f"{path}:{line}: field {key!r}: {why}")

    def text_field(node, key, required=True) -> str:
        value = node.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value.strip():
            fail(node, key, "missing or not a non-empty string")
        return value.strip()

    name = text_field(data, "name")
    context = text_field(data, "context")
    if "{subject}" not in context or "{object}" not in context:
        fail(data, "context", "must contain {subject} and {object}")
    families = data.get("families")
    if not isinstance(families, dict) or not families:
        fail(data, "families", "missing or not a mapping of family name -> {split, layout, templates}")
    templates = []
    for fam, spec in families.items():
        if not isinstance(spec, dict):
            fail(families, fam, "a family is a mapping with split, layout and templates")
        split = spec.get("split")
        if split not in SPLITS:
            fail(spec, "split", f"{split!r} is not one of {SPLITS}")
        layout = spec.get("layout", "completion")
        if layout not in LAYOUTS:
            fail(spec, "layout", f"{layout!r} is not one of {LAYOUTS}")
        texts = spec.get("templates")
        if not isinstance(texts, list) or not texts:
            fail(spec, "templates", "missing or not a non-empty list")
        for t in texts:
            if not isinstance(t, str) or t.count("{subject}") != 1:
                fail(spec, "templates", f"{t!r} must be a string with exactly one {{subject}}")
            templates.append(Template(t, str(fam), split, layout))
    seen: dict[str, str] = {}
    for t in templates:
        if t.text in seen and seen[t.text] != t.split:
            fail(families, t.family, f"template {t.text!r} is in two splits")
        seen[t.text] = t.split
    if not any(t.split == "train" for t in templates):
        fail(data, "families", "no family has split: train")
    aliases = data.get("aliases") or {}
    if not isinstance(aliases, dict) or not all(
            isinstance(v, list) and all(isinstance(a, str) for a in v) for v in aliases.values()):
        fail(data, "aliases", "must map an answer to a list of strings")
    words = data.get("words") or []
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
        fail(data, "words", "must be a list of non-empty strings")
    return Relation(name=name, description=text_field(data, "description", required=False),
                    subject=text_field(data, "subject", required=False) or "subject",
                    answer=text_field(data, "answer", required=False) or "object",
                    context=context, templates=tuple(templates),
                    aliases={str(k): [str(a) for a in v] for k, v in aliases.items()},
                    words=tuple(w.strip() for w in words), path=path)


@functools.lru_cache(maxsize=None)
def load_relation(name_or_path: str) -> Relation:
    """A relation by shipped name ("country") or from a YAML file path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = SHIPPED / f"{name_or_path}.yaml"
        if not path.is_file():
            raise KeyError(f"no relation file for {name_or_path!r}: shipped ones are {shipped_relations()}; "
                           f"pass a path to a relation YAML for others")
    if not path.is_file():
        raise RelationFileError(f"{path}: no such relation file")
    return parse_relation(path.read_text(encoding="utf-8"), str(path))


def shipped_relations() -> list[str]:
    """Names of the relation files that ship with the project."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


_REGISTERED: dict[str, Relation] = {}


def register_relation(relation: Relation) -> None:
    """Make a relation loaded from a user's file known by name (e.g. the one a JSONL of triples names)."""
    _REGISTERED[relation.name] = relation


def registered_relations() -> list[str]:
    """Names of the relations registered at run time (`register_relation`)."""
    return list(_REGISTERED)


def relation_named(name: str) -> Relation:
    """The relation called `name`: a registered one, else the shipped file of that name."""
    return _REGISTERED[name] if name in _REGISTERED else load_relation(name)
