"""Which of a subject's relations a question asks, when its words name none.

"The element letters for Astatine", "what's the proton count of Iron", "govt seat of Kenya?": the
question names the relation in words no relation file lists. `closest_relation` compares the question,
its subject written as X, with the sentences each relation's file uses about it (name, description,
question words, train and validation templates; never the test ones) in a sentence-embedding space
(the packaged all-MiniLM-L6-v2, in fp32 so that every CPU reads the same scores), and takes the closest
relation when it leads the next one by a margin. Without the embedder it falls back to shared words.

Why an embedding and not more word lists: on every single-hop wording of the fifteen earlier suites
(286 with a subject holding 2 or 3 relations), shared words chose right 227 times and wrong 7; the
embedding at `MARGIN`, then shared words, 263 and 2. To overrule a relation the model asked and the
subject has, the lead must be `OVERRULE_MARGIN` (198 right, none wrong): below it, questions that ask
nothing in particular ("Tell me about X.", 4 of 16 such at 0.10, none at 0.15) lean to the relation
whose templates share their frame (docs/history.md).
"""

from __future__ import annotations

import functools
import logging
import re

from common.relations import RelationFileError, relation_named

from .grounding import fold_words

log = logging.getLogger(__name__)

# the closest relation must lead the next by this much cosine similarity, else no choice is made
MARGIN = 0.05
OVERRULE_MARGIN = 0.15
SUBJECT_MARK = "X"

# Words that say nothing about which relation a question asks.
_PROFILE_STOP = frozenset("""a an the of in on at by for to from with and or but is are was were be been it its this
that these those what which who whom whose how where when why do does did i me my we our you your he she they them
their his her has have had can could would should will shall may might must not no yes so as if then than there here
just only also very please tell me know name called question answer q s t""".split())


def _stems(text: str) -> set[str]:
    words = fold_words(text.replace("{subject}", " ").replace("{object}", " ")).split()
    return {w[:-1] if len(w) > 4 and w.endswith("s") else w for w in words if w not in _PROFILE_STOP and len(w) > 1}


@functools.lru_cache(maxsize=None)
def relation_sentences(relation: str) -> tuple[str, ...]:
    """What a relation's file says about it: its name, description, answer type, question words and its
    train and validation templates (subject written as X; never its test ones)."""
    try:
        rel = relation_named(relation)
    except (KeyError, RelationFileError):
        return (relation.replace("_", " "),)
    return (rel.name.replace("_", " "), rel.description, rel.answer, *rel.words,
            *(t.text.replace("{subject}", SUBJECT_MARK) for t in rel.templates if t.split in ("train", "validation")))


@functools.lru_cache(maxsize=None)
def relation_profile(relation: str) -> frozenset[str]:
    """The words of `relation_sentences`, stop words dropped and plurals folded."""
    return frozenset(_stems(" ".join(relation_sentences(relation))))


@functools.lru_cache(maxsize=1)
def sentence_encoder():
    """The packaged MiniLM sentence encoder in fp32, or None when it cannot be loaded (then shared words choose)."""
    try:
        import torch

        from symbolic_ram.embeddings import load_embedder

        return load_embedder(threads=torch.get_num_threads()).to(torch.float32)
    except Exception as e:  # no sentence-transformers or no packaged model: a warning, not a failure
        log.warning("relation choice by shared words only: the sentence encoder did not load (%s)", e)
        return None


@functools.lru_cache(maxsize=None)
def _sentence_vectors(relation: str):
    return sentence_encoder().encode(list(relation_sentences(relation)), normalize_embeddings=True)


def _closest_by_meaning(question: str, relations: list[str], subject: str | None, margin: float) -> str | None:
    encoder = sentence_encoder()
    if encoder is None or len(relations) < 2:
        return None
    text = re.sub(re.escape(subject), SUBJECT_MARK, question, flags=re.IGNORECASE) if subject else question
    q = encoder.encode([text], normalize_embeddings=True)[0]
    scores = sorted(((float((_sentence_vectors(r) @ q).max()), r) for r in relations), reverse=True)
    return scores[0][1] if scores[0][0] - scores[1][0] >= margin else None


def _closest_by_words(question: str, relations: list[str]) -> str | None:
    words = _stems(question)
    scores = sorted(((len(words & relation_profile(r)), r) for r in relations), reverse=True)
    if not scores or scores[0][0] == 0 or (len(scores) > 1 and scores[1][0] == scores[0][0]):
        return None
    return scores[0][1]


def closest_relation(question: str, relations: list[str], subject: str | None = None, overrule: bool = False,
                     by_meaning: bool = True) -> str | None:
    """Of a subject's `relations`, the one the question most likely asks ("the element letters for
    Astatine": symbol): the closest in meaning when it leads by `MARGIN`, else the one whose file shares
    the most words with the question when one shares more than every other; None otherwise. With
    `overrule` (to replace a relation the subject has), only the closest in meaning, by `OVERRULE_MARGIN`.
    `subject`, written as X before comparing, keeps the subject's own name from pulling the choice. Without
    `by_meaning`, shared words only."""
    relations = sorted(set(relations))
    if len(relations) < 2:
        return None
    if overrule:
        return _closest_by_meaning(question, relations, subject, OVERRULE_MARGIN)
    return ((_closest_by_meaning(question, relations, subject, MARGIN) if by_meaning else None)
            or _closest_by_words(question, relations))
