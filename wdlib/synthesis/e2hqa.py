"""E2HQA: make easy questions hard. From a seed question with answer A, each hop picks an entity of the question
(entities the seed page links to, quoted titles, then capitalized spans), searches it, checks the top result is about
it, and rewrites the entity as a description built from the results (the teacher; when its rewrite is unusable, a
template from the result page's defining sentence "X is a …"). The answer never changes; a rewrite that leaks it is
rejected. Every hop is recorded and the number of hops is the difficulty. Seeds (`e2hqa_seeds`): a QA file, or
simple "who or what is …?" questions made from encyclopedia pages.
"""

from __future__ import annotations

import asyncio
import random
import re
import string
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from tqdm.auto import tqdm

from wdlib.config import Config
from wdlib.react import parse_search_results
from wdlib.synthesis.crawl import CrawledPage, crawl, page_from_fetch, unusable
from wdlib.synthesis.qa import QUOTED, content_words, dedupe, leaks, normalize
from wdlib.text import clean_text, describe
from wdlib.trajectory import QAPair, load_sample_qa

_QUESTION_WORDS = {"what", "which", "who", "whom", "whose", "when", "where", "why", "how", "in", "on", "at", "the",
                   "a", "an", "this", "that", "these", "identify", "name", "is", "was", "are", "were", "does", "did",
                   "do", "can", "for", "of", "and", "by", "to", "from", "with", "as", "it", "its"}
_CONNECTORS = {"of", "the", "de", "la", "von", "van", "for", "du", "del", "di"}  # not "and": it joins two names


def pick_entities(question: str, avoid: Iterable[str] = ()) -> list[str]:
    """Candidate entities of a question, best first: quoted titles, then capitalized spans (longest first).
    Spans overlapping anything in `avoid` (the answer, entities already rewritten) are skipped."""
    avoid_norm = [normalize(a) for a in avoid if normalize(a)]
    found: list[str] = [m.group(1).strip().strip(string.punctuation + " ") for m in QUOTED.finditer(question)]
    unquoted = QUOTED.sub(" ; ", question)  # a quoted title ends the capitalized span around it
    tokens = re.findall(r"[\w'’.-]+|[^\w\s]", unquoted)
    span: list[str] = []
    spans: list[str] = []
    for i, tok in enumerate(tokens + ["."]):
        word = tok.strip(".")
        capital = word[:1].isupper() or (word[:1].isdigit() and span)
        sentence_start = i == 0 or tokens[i - 1] in ".?!:;"
        if capital and not (sentence_start and word.lower() in _QUESTION_WORDS):
            span.append(word)
        elif span and word.lower() in _CONNECTORS and i + 1 < len(tokens) and tokens[i + 1][:1].isupper():
            span.append(word)
        else:
            while span and span[-1].lower() in _CONNECTORS:
                span.pop()
            if span:
                spans.append(" ".join(span))
            span = []
    found += sorted(spans, key=lambda s: -len(s))
    out = []
    for ent in found:
        norm = normalize(ent)
        if not norm or len(ent) < 3 or norm in _QUESTION_WORDS or ent in out:
            continue
        if any(norm in a or a in norm for a in avoid_norm):
            continue
        out.append(ent)
    return out


async def search_results(toolbox: Any, query: str) -> list[dict]:
    """[{"title", "url", "snippet"}] for one query: the toolbox's structured results where it has them, else its
    rendered search observation parsed back. A failed search is no results."""
    try:
        if hasattr(toolbox, "search_results"):
            return [{"title": r.get("title", ""), "url": r.get("link") or r.get("url", ""),
                     "snippet": r.get("snippet", "")} for r in await toolbox.search_results(query)]
        return parse_search_results(await toolbox.search([query]))
    except Exception:
        return []


def _title_name(title: str) -> str:
    """The subject of a result title: "Santa Claus (horse) - Wikipedia" → "Santa Claus"."""
    name = re.split(r" - | — | \| ", title)[0]
    return re.sub(r"\s*\([^)]*\)", "", name).strip()


def _about(result: dict, entity: str) -> bool:
    """The result is about the entity itself: the entity's words make up most of the title's subject
    ("Japanese" is not about "Japanese literature"; "Santa Claus" is about "Santa Claus (horse)")."""
    words, title = set(content_words(entity)), set(content_words(_title_name(result["title"])))
    common = words & title
    return bool(common) and len(common) >= 0.8 * len(words) and len(common) >= 0.67 * len(title)


def _resolve(entity: str, question: str, results: list[dict]) -> tuple[str, list[dict]]:
    """The results about the entity. A result whose subject is a longer phrase of the question containing the
    entity ("Carnatic" → "Carnatic music") widens the entity to that phrase."""
    about = [r for r in results if _about(r, entity)]
    if about:
        return entity, about
    for r in results:
        name = _title_name(r["title"])
        at = question.lower().find(name.lower())
        if at >= 0 and set(content_words(entity)) <= set(content_words(name)):
            wider = question[at:at + len(name)]
            return wider, [x for x in results if _about(x, wider)]
    return entity, []


def template_rewrite(question: str, entity: str, description: str) -> str:
    """Replace the entity by its description; "the Americas" + "a landmass…" → "a landmass…" (one article)."""
    article = re.search(rf"\b(the|a|an)\s+{re.escape(entity)}", question, flags=re.I)
    if article and re.match(r"(a|an|the|one)\b", description, flags=re.I):
        return question[:article.start()] + description + question[article.end():]
    return question.replace(entity, description, 1)


def rewrite_prompt(question: str, entity: str, results: list[dict]) -> list[dict]:
    evidence = "\n".join(f"- {r['title']}: {r['snippet']}" for r in results[:3])
    return [
        {"role": "system", "content": "You make questions harder by replacing a named entity with a description "
                                      "of it, so that a reader must first find out what it is."},
        {"role": "user", "content": f"Question: {question}\nEntity to replace: {entity}\nWhat the web says about "
                                    f"it:\n{evidence}\n\nRewrite the question, replacing \"{entity}\" with a short "
                                    "description built from these facts, without naming it. Keep the rest of the "
                                    "question unchanged. Reply with the rewritten question only."},
    ]


def check_rewrite(new: str, old: str, entity: str, answer: str) -> str | None:
    """Why a rewritten question is unusable, or None when it is fine."""
    new = clean_text(new or "")
    if not new.endswith("?"):
        return "not a question"
    if leaks(answer, new):
        return "leaks the answer"
    if normalize(entity) in normalize(new):
        return "still names the entity"
    kept = set(content_words(old)) - set(content_words(entity))
    if kept and len(kept & set(content_words(new))) < 0.6 * len(kept):
        return "drops the rest of the question"
    if len(new.split()) > 2 * len(old.split()) + 60:
        return "too long"
    return None


async def harden(seed: QAPair, toolbox: Any, client: Any = None, *, hops: int = 2, rewriter: str = "llm",
                 max_description_words: int = 25, max_new_tokens: int = 160, temperature: float = 0.3,
                 entities_per_hop: int = 4, teacher: str = "") -> QAPair:
    """E2HQA: up to `hops` entity→description rewrites of the seed question; the answer never changes.
    Returns a QAPair with `difficulty` = hops done and every hop in `provenance["hops"]`."""
    question, answer = seed.question, seed.answer
    done_entities: list[str] = []
    records: list[dict] = []
    for hop in range(1, hops + 1):
        record = None
        hints = [h for h in seed.provenance.get("entities", []) if h in question and h not in done_entities]
        candidates = list(dict.fromkeys(hints + pick_entities(question, avoid=[answer, *done_entities])))
        for entity in candidates[:entities_per_hop]:
            entity, results = _resolve(entity, question, await search_results(toolbox, entity))
            if not results:
                continue
            rejected = []
            new_q, method = None, None
            if rewriter == "llm" and client is not None:
                try:
                    reply = await client.chat(rewrite_prompt(question, entity, results),
                                              temperature=temperature, max_new_tokens=max_new_tokens)
                    candidate = clean_text(reply.text.strip().strip('"').splitlines()[0] if reply.text.strip() else "")
                except Exception as exc:
                    candidate = ""
                    rejected.append(f"llm request failed: {type(exc).__name__}")
                why = check_rewrite(candidate, question, entity, answer)
                if why is None:
                    new_q, method = candidate, "llm"
                elif candidate or not rejected:
                    rejected.append(f"llm: {why}")
            if new_q is None:  # template: a description from the top result's text (its page's first sentence)
                top = results[0]
                texts = [top["snippet"]]
                fetched = await toolbox.fetch(top["url"]) if hasattr(toolbox, "fetch") else None
                if fetched is not None and not getattr(fetched, "error", None) and getattr(fetched, "text", ""):
                    texts.insert(0, fetched.text)
                for text in texts:
                    desc = (describe(entity, text, max_description_words)
                            or describe(_title_name(top["title"]), text, max_description_words))
                    if desc is None:
                        continue
                    candidate = template_rewrite(question, entity, desc)
                    why = check_rewrite(candidate, question, entity, answer)
                    if why is None:
                        new_q, method = candidate, "template"
                        break
                    rejected.append(f"template: {why}")
            if new_q is None:
                continue
            record = {"hop": hop, "entity": entity, "query": entity, "method": method, "question": new_q,
                      "results": [{"title": r["title"], "url": r["url"]} for r in results[:3]],
                      "rejected": rejected}
            break
        if record is None:
            break  # no entity of the question could be found and rewritten: stop at the hops done
        records.append(record)
        done_entities.append(record["entity"])
        question = record["question"]
    evidence = list(dict.fromkeys(r["results"][0]["url"] for r in records))
    return QAPair(question=question, answer=answer, source="e2hqa", type="E2HQA", difficulty=len(records),
                  evidence_urls=evidence,
                  provenance={"seed": {"id": seed.id, "question": seed.question, "source": seed.source},
                              "hops": records, "rewriter": rewriter, "teacher": teacher})


def encyclopedia_seed(page: CrawledPage, max_words: int = 25) -> QAPair | None:
    """A simple seed question from an encyclopedia page: its lead sentence, subject masked, asking for the subject.
    "Alan Moore is an English author known for Watchmen." → "Who or what is an English author known for Watchmen?"
    """
    name = page.name.split(" - ")[0].split(" — ")[0].strip()
    if not name or not page.text:
        return None
    desc = describe(name, page.text, max_words)
    if desc is None:
        return None
    question = f"Who or what is {desc.rstrip('.')}?"
    # entities the page links to and the question names: the encyclopedia has a page for each, so E2HQA can
    # search and describe them (they are tried first)
    linked = sorted({a for a in page.anchors.values() if len(a) > 2 and a in question}, key=len, reverse=True)
    if leaks(name, question) or not linked:
        return None
    return QAPair(question=question, answer=name, source="encyclopedia", type="seed", evidence_urls=[page.url],
                  provenance={"generator": "template", "page": page.url, "entities": linked})


async def harden_seeds(seeds: list[QAPair], toolbox: Any, cfg: Config, client: Any = None, *,
                progress: bool = True) -> tuple[list[QAPair], dict]:
    """Harden every seed (concurrently); keep those with at least `min_hops` hops. Returns (qa, report)."""
    e = cfg.synthesis.e2hqa
    semaphore = asyncio.Semaphore(cfg.models.teacher.concurrency)
    bar = tqdm(total=len(seeds), desc="e2hqa", unit="seed", disable=not progress)

    async def one(seed: QAPair) -> QAPair:
        async with semaphore:
            qa = await harden(seed, toolbox, client, hops=e.hops, rewriter=e.rewriter,
                              max_description_words=e.max_description_words, max_new_tokens=e.max_new_tokens,
                              teacher=cfg.models.teacher.name)
        bar.update(1)
        return qa

    hardened = await asyncio.gather(*(one(s) for s in seeds))
    bar.close()
    kept = dedupe(q for q in hardened if q.difficulty >= e.min_hops)
    methods = Counter(h["method"] for q in hardened for h in q.provenance["hops"])
    return kept, {"seeds": len(seeds), "kept": len(kept), "hops": dict(Counter(q.difficulty for q in hardened)),
                  "rewrites": dict(methods)}


def load_seeds(path: str | Path, n: int, seed: int = 0) -> list[QAPair]:
    """`n` seed QA pairs from a JSONL file of {question, answer} records (e.g. WebDancer's sample_qa.jsonl),
    sampled reproducibly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"E2HQA seed file not found: {path}")
    seeds = [QAPair(question=r["question"], answer=r["answer"], source=f"seed:{path.stem}", type="seed",
                    provenance={"tag": r["tag"]}) for r in load_sample_qa(path)]
    random.Random(seed).shuffle(seeds)
    return seeds[:n]


async def e2hqa_seeds(cfg: Config, toolbox: Any) -> list[QAPair]:
    """Seeds per `cfg.synthesis.e2hqa`: a QA file, else encyclopedia pages (crawled from `seed_roots`, or sampled
    from the local web's encyclopedia) turned into simple "who or what is <description>?" questions."""
    e = cfg.synthesis.e2hqa
    if e.seed_file:
        return load_seeds(cfg.resolve_path(e.seed_file), e.num_seeds, cfg.run.seed)
    if e.seed_roots:
        # list pages (e.g. Wikipedia's Vital articles) → their articles; pages without a defining sentence
        # (lists, portals) yield no seed and are skipped below
        pages = (await crawl(toolbox.fetch, e.seed_roots, max_depth=2, max_pages=4 * e.num_seeds + 8,
                             concurrency=cfg.synthesis.crawlqa.concurrency, delay_s=cfg.synthesis.crawlqa.delay_s,
                             progress=True)).pages
    else:
        if cfg.web.mode != "local":
            raise ValueError("synthesis.e2hqa: with web.mode live, give seed_file or seed_roots")
        from wdlib.sites import ENCYCLOPEDIA
        from wdlib.web import LocalWeb

        local = LocalWeb.load(cfg.web)
        urls = sorted(p.url for p in local.pages if p.site == ENCYCLOPEDIA)
        if not urls:
            raise ValueError("synthesis.e2hqa: no seed_file and the local web has no encyclopedia (add 'wikipedia' "
                             "to web.sites)")
        urls = random.Random(cfg.run.seed).sample(urls, min(len(urls), 4 * e.num_seeds + 4))
        pages = [page_from_fetch(f) for f in await asyncio.gather(*(toolbox.fetch(u) for u in urls))
                 if unusable(f) is None]
    seeds = [s for s in (encyclopedia_seed(p, e.max_description_words) for p in pages) if s is not None]
    return dedupe(seeds)[:e.num_seeds]
