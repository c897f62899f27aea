"""Facts read off the local web's pages, and questions about them at three levels of difficulty.

The CPU-scale analogue of CrawlQA/E2HQA's "controllable complexity": a fact is a short, checkable answer (a year, a
name, a symbol, a number, a version) that a page states about its subject. A question asks for it

  - level 1: naming the subject ("In what year was Otto Hahn born?");
  - level 2: describing the subject instead, E2HQA-style, with the defining sentence of its own page ("In what year
    was the German chemist who was a pioneer in the field of radiochemistry born?");
  - level 3: through a second entity: the first page names the subject, whose page holds the answer ("In what year
    was the director of the film Seven Samurai born?": Seven Samurai → Akira Kurosawa → 1910).

Facts come from regular patterns of the encyclopedia (Wikipedia lead summaries: a person's life span in the short
description, "X is the capital of Y", "it has symbol W and atomic number 74", "the 1957 Nobel Prize in Literature",
"1968 film by Stanley Kubrick") and of the Python documentation ("New in version 3.8" under a function). Whether a
question can really be answered is not decided here: `wdlib.synthesis.graded` walks it with the real tools.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

from wdlib.sites import ENCYCLOPEDIA, Page
from wdlib.text import describe

RELATIONS = ("born", "died", "nobel", "creator", "year", "symbol", "atomic_number", "capital", "added_in")

_LIFESPAN = re.compile(r"\((?:c\. ?)?(\d{3,4})\s*[–-]\s*(?:c\. ?)?(\d{3,4})\)\s*$")
_BORN = re.compile(r"\(born (\d{4})\)\s*$")
_TOPIC = re.compile(r"Topic: ([\w ]+)</div>")
# A work's short description: "1968 film by Stanley Kubrick", "Painting by Georges Seurat", "Novel in verse by …"
_WORK = re.compile(r"^(?:(?P<year>\d{4}) )?(?:[\w'’ -]+? )?(?P<kind>film|novel|painting|play|opera|book|poem|"
                   r"symphony|sculpture|epic poem|novella|treatise|fresco|statue|ballet|musical|short story)"
                   r"(?: in verse)? (?:by|directed by|written by) (?P<creator>[A-Z][^,(;]+?)$")
_VERB = {"film": "directed", "painting": "painted", "fresco": "painted", "opera": "composed", "symphony": "composed",
         "ballet": "composed", "musical": "composed", "sculpture": "sculpted", "statue": "sculpted"}
_ROLE = {"directed": "director", "painted": "painter", "composed": "composer", "sculpted": "sculptor",
         "wrote": "author"}
_MADE = {"film": "released", "painting": "painted", "fresco": "painted", "opera": "first performed",
         "symphony": "composed", "ballet": "first performed", "sculpture": "made", "statue": "made"}
_CAPITAL = re.compile(r"(?:^|\. )(?:The )?(?P<city>[A-Z][\w'’-]+(?: [A-Z][\w'’-]+)*)(?: \([^)]*\))? is the capital "
                      r"(?:and (?:the )?(?:largest|most populous) city )?of (?:the )?"
                      r"(?P<place>[A-Z][\w'’-]+(?: [A-Z][\w'’-]+)*)")
_ELEMENT = re.compile(r"chemical element; it has (?:the )?symbol (\w+) and atomic number (\d+)")
_NOBEL = re.compile(r"(\d{4}) Nobel Prize in (Physiology or Medicine|[A-Z]\w+)")
_SIGNATURE = re.compile(r"^((?:[a-z_]\w*\.)+[a-z_]\w*)\(")
_NEW_IN = re.compile(r"New in version (\d\.\d+)")


@dataclass
class Fact:
    subject: str  # what the question is about, as its page names it
    subject_url: str  # its page ("" when the local web has none)
    relation: str  # one of RELATIONS
    answer: str
    answer_url: str  # the page that states the answer (the split keeps each such page in one split)
    kind: str = ""  # person | element | place | function | film, novel, painting...
    extra: dict = field(default_factory=dict)  # verb, field, creator_url, doc...


def page_name(page: Page) -> str:
    """The page's subject: its title without the site suffix or a disambiguation ("Breathless (1960 film)")."""
    name = page.title.removesuffix(" - Wikipedia")
    return re.sub(r"\s*\([^)]*\)$", "", name)


def _is_person(page: Page) -> bool:
    topic = _TOPIC.search(page.html or "")
    return bool(topic) and topic.group(1) == "People"


def encyclopedia_facts(pages: Iterable[Page]) -> list[Fact]:
    pages = [p for p in pages if p.site == ENCYCLOPEDIA]
    url_of = {page_name(p): p.url for p in pages}
    facts: list[Fact] = []
    for p in pages:
        name, desc, lead = page_name(p), p.description.strip(), p.text[:600]
        if _is_person(p):
            if m := _LIFESPAN.search(desc):
                facts += [Fact(name, p.url, "born", m.group(1), p.url, "person"),
                          Fact(name, p.url, "died", m.group(2), p.url, "person")]
            elif m := _BORN.search(desc):
                facts.append(Fact(name, p.url, "born", m.group(1), p.url, "person"))
            facts += [Fact(name, p.url, "nobel", m.group(1), p.url, "person", {"field": m.group(2)})
                      for m in _NOBEL.finditer(lead)]
        if m := _WORK.search(desc):
            kind, verb = m.group("kind"), _VERB.get(m.group("kind"), "wrote")
            creator = m.group("creator").strip()
            facts.append(Fact(name, p.url, "creator", creator, p.url, kind,
                              {"verb": verb, "role": _ROLE[verb], "creator_url": url_of.get(creator, "")}))
            if m.group("year"):
                facts.append(Fact(name, p.url, "year", m.group("year"), p.url, kind, {"verb": _MADE.get(kind, "published")}))
        if m := _ELEMENT.search(p.text):
            facts += [Fact(name, p.url, "symbol", m.group(1), p.url, "element"),
                      Fact(name, p.url, "atomic_number", m.group(2), p.url, "element")]
        for m in _CAPITAL.finditer(p.text[:400]):
            if m.group("city") == name:  # the city's own page says whose capital it is
                place = m.group("place")
                facts.append(Fact(place, url_of.get(place, ""), "capital", name, p.url, "place"))
    return facts


def docs_facts(pages: Iterable[Page]) -> list[Fact]:
    """"In which Python version was X added?" from the functions of the Python documentation: a signature line
    `module.name(...)` followed, before the next signature, by "New in version X.Y"."""
    facts = []
    for p in pages:
        if p.site != "python-docs":
            continue
        module = p.url.rsplit("/", 1)[-1].removesuffix(".html")
        current: dict | None = None
        for line in p.text.split("\n"):
            if m := _SIGNATURE.match(line):
                name = m.group(1)
                current = {"name": name, "doc": ""} if name.split(".")[0] == module.split(".")[0] else None
            elif current is not None:
                if not current["doc"] and not line.startswith(("New in", "Changed in", "Deprecated")):
                    current["doc"] = line
                if m := _NEW_IN.search(line):
                    facts.append(Fact(current["name"], p.url, "added_in", m.group(1), p.url, "function",
                                      {"doc": current["doc"]}))
                    current = None
    return facts


# ------------------------------------------------------------------ questions
def question(fact: Fact, subject: str | None = None) -> str:
    """The question asking for `fact`, naming its subject, or with `subject` (a description) in its place."""
    named = subject is None
    s = fact.subject if named else subject
    r, x = fact.relation, fact.extra
    if r == "born":
        return f"In what year was {s} born?"
    if r == "died":
        return f"In what year did {s} die?"
    if r == "nobel":
        return f"In what year did {s} receive the Nobel Prize in {x['field']}?"
    if r == "creator":
        return f"Who {x['verb']} the {fact.kind} {s}?" if named else f"Who {x['verb']} {s}?"
    if r == "year":
        return f"In what year was the {fact.kind} {s} {x['verb']}?" if named else f"In what year was {s} {x['verb']}?"
    if r == "symbol":
        return f"What is the chemical symbol of {s}?"
    if r == "atomic_number":
        return f"What is the atomic number of {s}?"
    if r == "capital":
        return f"What is the capital of {s}?"
    if r == "added_in":
        return f"In which Python version was {s} added?"
    raise ValueError(f"unknown relation {r!r}")


def description(fact: Fact, page: Page, max_words: int = 14) -> str | None:
    """The subject described, not named, for a level-2 question: its page's defining sentence ("Otto Hahn was a
    German chemist who…" → "the German chemist who…"); for a Python function, its documentation's first sentence."""
    if fact.relation == "added_in":
        doc = re.split(r"(?<=\.)\s", fact.extra.get("doc", ""), maxsplit=1)[0].rstrip(".")
        verb = re.match(r"(Return|Create|Convert|Compute|Get|Set|Raise|Read|Write)\b", doc)
        if not verb or len(doc.split()) > max_words + 4:
            return None
        return f"the Python function that {verb.group(1).lower()}s{doc[verb.end():]}"
    desc = describe(fact.subject, page.text, max_words=max_words)
    return None if desc is None else re.sub(r"^(a|an|one)\b", "the", desc)


def chain_question(work: Fact, fact: Fact) -> str:
    """Level 3: `fact` about the creator of `work`, reached through the work ("the director of the film X")."""
    return question(fact, f"the {work.extra['role']} of the {work.kind} {work.subject}")
