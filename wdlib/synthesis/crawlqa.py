"""CrawlQA: QA pairs of types COUNT, MULTI-HOP and INTERSECTION grounded in crawled pages (`wdlib.synthesis.crawl`),
from two generators:
  - `llm`: the teacher reads one page (COUNT), a linked pair (MULTI-HOP) or two pages sharing links (INTERSECTION)
    and writes a JSON record; JSON-constrained decoding is requested where the backend has it (`json_constraint`),
    and an in-process model gets the record's opening `{"question": "` written for it;
  - `template`: deterministic questions read off the crawl graph, so a tiny teacher still yields real, checkable
    data. COUNT: "how many top-level sections does page X have" (its <h2> headings); MULTI-HOP: follow the link
    labelled L on page A, ask for the first section heading of the page it leads to; INTERSECTION: the one page
    linked from both A and B (navigation links shared by most pages excluded).
Every record is validated (`validate_qa`): schema, short answer, answer not in the question, evidence URLs among the
crawled pages, answer present in the evidence text (COUNT: a number) — then deduplicated.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any, Iterable
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from wdlib.config import Config, ModelSpec
from wdlib.synthesis.crawl import CrawledPage
from wdlib.synthesis.qa import answer_in_text, as_number, dedupe, leaks, normalize
from wdlib.text import clean_text, parse_json_objects
from wdlib.trajectory import QAPair

QA_TYPES = ("COUNT", "MULTI-HOP", "INTERSECTION")


# ================================================================== validation
def validate_qa(record: Any, pages: dict[str, CrawledPage], *, types: Iterable[str] = QA_TYPES,
                max_answer_words: int = 12, default_evidence: list[str] | None = None) -> tuple[dict | None, str]:
    """Check one generated QA record. Returns (clean record, "ok") or (None, reason)."""
    if not isinstance(record, dict):
        return None, f"not a JSON object ({type(record).__name__})"
    question, answer = record.get("question"), record.get("answer")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(question, str) or not question.strip():
        return None, "missing question"
    if not isinstance(answer, str) or not answer.strip():
        return None, "missing answer"
    question, answer = clean_text(question), clean_text(answer).rstrip(".")
    qtype = str(record.get("type", "")).strip().upper().replace("_", "-").replace("MULTIHOP", "MULTI-HOP")
    if qtype not in set(types):
        return None, f"type {qtype or '<none>'} not one of {sorted(types)}"
    if "?" not in question:
        return None, "not a question (no '?')"
    if len(question.split()) < 5:
        return None, "question too short"
    if len(answer.split()) > max_answer_words:
        return None, f"answer longer than {max_answer_words} words"
    evidence = record.get("evidence_urls") or default_evidence or []
    if isinstance(evidence, str):
        evidence = [evidence]
    if not isinstance(evidence, list) or not evidence:
        return None, "no evidence_urls"
    unknown = [u for u in evidence if u not in pages]
    if unknown:
        return None, f"evidence URL not among the crawled pages: {unknown[0]}"
    if leaks(answer, question):
        return None, "answer appears in the question"
    if qtype == "COUNT":
        if as_number(answer) is None:
            return None, "COUNT answer is not a number"
    elif not any(answer_in_text(answer, pages[u].text) for u in evidence):
        return None, "answer not found in the evidence pages"
    return {"question": question, "answer": answer, "type": qtype, "evidence_urls": list(dict.fromkeys(evidence))}, "ok"



# ================================================================== template CrawlQA
_NAV_ANCHORS = {"next", "previous", "index", "modules", "home", "up", "top", "back", "contents", "search",
                "show source", "report a bug", "here", "this", "link", "source", "documentation", ""}


def _site(url: str) -> str:
    return urlsplit(url).netloc


def _navigation_links(pages: list[CrawledPage], share: float = 0.3) -> set[str]:
    """Links present on more than `share` of the pages: menus and footers, not content."""
    counts = Counter(link for p in pages for link in set(p.links))
    limit = max(2, share * len(pages))
    return {link for link, n in counts.items() if n > limit}


def _pairs_sharing_links(pages: list[CrawledPage], nav: set[str], rng: random.Random,
                         max_per_link: int = 50) -> dict[tuple[str, str], set[str]]:
    """(page a, page b) → the content links both have, through an inverted index (not all n² pairs: a crawl of
    60k pages would take hours); a link on more than `max_per_link` pages contributes a random sample of them."""
    linking: dict[str, list[str]] = {}
    for p in pages:
        for link in set(p.links) - nav - {p.url}:
            linking.setdefault(link, []).append(p.url)
    pairs: dict[tuple[str, str], set[str]] = {}
    for link in sorted(linking):
        sources = sorted(linking[link])
        if len(sources) > max_per_link:
            sources = sorted(rng.sample(sources, max_per_link))
        for i, a in enumerate(sources):
            for b in sources[i + 1:]:
                pairs.setdefault((a, b), set()).add(link)
    return pairs


def _display_names(pages: list[CrawledPage]) -> dict[str, str]:
    """url → the page's name with a site-wide title suffix (" — Python 3.11 documentation") removed."""
    names = {}
    suffix = ""
    titles = [p.title for p in pages if p.title]
    if len(titles) >= 2:
        for sep in (" — ", " | ", " - ", " – "):
            tails = Counter(t.rsplit(sep, 1)[1] for t in titles if sep in t)
            if tails:
                tail, n = tails.most_common(1)[0]
                if n >= 0.5 * len(titles):
                    suffix = sep + tail
                    break
    for p in pages:
        h1 = [t for level, t in p.headings if level == 1]
        title = p.title[:-len(suffix)] if suffix and p.title.endswith(suffix) else p.title
        names[p.url] = clean_text(h1[0] if h1 else title)
    return names


def template_qa(pages: list[CrawledPage], n: int, *, types: Iterable[str] = QA_TYPES, seed: int = 0,
                max_answer_words: int = 12) -> list[QAPair]:
    """Deterministic QA read off the crawl graph, balanced over types, each validated like LLM output."""
    by_url = {p.url: p for p in pages}
    names = _display_names(pages)
    nav = _navigation_links(pages)
    rng = random.Random(seed)
    candidates: dict[str, list[dict]] = {t: [] for t in types}

    for p in pages:
        site, name = _site(p.url), names[p.url]
        if "COUNT" in candidates and len(p.sections) >= 2 and name:
            candidates["COUNT"].append({
                "question": f"On {site}, how many top-level sections does the page “{name}” have?",
                "answer": str(len(p.sections)), "type": "COUNT", "evidence_urls": [p.url],
                "provenance": {"template": "count_sections", "sections": p.sections}})
        if "MULTI-HOP" in candidates:
            for link in p.links:
                target, anchor = by_url.get(link), p.anchors.get(link, "")
                if (target is None or link in nav or not target.sections or anchor.lower() in _NAV_ANCHORS
                        or len(anchor) < 3 or not name):
                    continue
                candidates["MULTI-HOP"].append({
                    "question": (f"On {site}, the page “{name}” links to another page through the link text "
                                 f"“{anchor}”. What is the title of the first section of the page it leads to?"),
                    "answer": target.sections[0], "type": "MULTI-HOP", "evidence_urls": [p.url, target.url],
                    "provenance": {"template": "link_then_first_section", "chain": [p.url, target.url]}})
    if "INTERSECTION" in candidates:
        for (a_url, b_url), common in _pairs_sharing_links(pages, nav, rng).items():
            a, b = by_url[a_url], by_url[b_url]
            common -= {a.url, b.url}
            if len(common) != 1 or not names[a.url] or not names[b.url] or names[a.url] == names[b.url]:
                continue
            (target,) = common
            if target in by_url:  # a crawled page: its own name, grounded in its own text
                answer, evidence = names[target], [a.url, b.url, target]
            else:  # not crawled: the link text, which both pages must show
                answer, evidence = a.anchors.get(target, ""), [a.url, b.url]
                if not answer_in_text(answer, b.text):
                    continue
            if not answer or answer.lower() in _NAV_ANCHORS:
                continue
            candidates["INTERSECTION"].append({
                "question": (f"On {_site(a.url)}, what is the title of the page linked from both the page "
                             f"“{names[a.url]}” and the page “{names[b.url]}”?"),
                "answer": answer, "type": "INTERSECTION", "evidence_urls": evidence,
                "provenance": {"template": "common_link", "target": target}})

    out: list[QAPair] = []
    used_answers: set[tuple[str, str]] = set()
    pools = {}
    for t, cands in candidates.items():
        rng.shuffle(cands)
        pools[t] = cands
    while len(out) < n and any(pools.values()):  # round-robin over types: balanced while each has candidates
        for t in list(pools):
            while pools[t]:
                cand = pools[t].pop()
                clean, _ = validate_qa(cand, by_url, types=types, max_answer_words=max_answer_words)
                if clean is None or (t != "COUNT" and (t, normalize(clean["answer"])) in used_answers):
                    continue  # one question per answer (per type) keeps the set diverse
                used_answers.add((t, normalize(clean["answer"])))
                qa = QAPair(**clean, source="crawlqa", difficulty=len(clean["evidence_urls"]),
                            provenance={"generator": "template", **cand["provenance"]})
                if all(normalize(qa.question) != normalize(o.question) for o in out):
                    out.append(qa)
                    break
            if len(out) >= n:
                break
    return out


# ================================================================== LLM CrawlQA
QA_JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "question": {"type": "string"},
        "answer": {"type": "string"},
        "type": {"type": "string", "enum": list(QA_TYPES)},
        "evidence_urls": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["question", "answer", "type", "evidence_urls"],
    "additionalProperties": False,
}

_TYPE_INSTRUCTIONS = {
    "COUNT": "a COUNT question: it asks how many items of some kind the page has (sections, functions, options, "
             "listed entries...); the answer is a number you counted in the page",
    "MULTI-HOP": "a MULTI-HOP question: it can only be answered by reading the first page, following its link to the "
                 "second page and reading a fact there; the answer is a short phrase copied from the second page",
    "INTERSECTION": "an INTERSECTION question: it asks for something the two pages have in common (a term, module, "
                    "function or topic that appears in both); the answer is a short phrase present in both pages",
}


def json_constraint(spec: ModelSpec | None, schema: dict = QA_JSON_SCHEMA) -> dict:
    """Sampling kwargs that make the backend emit JSON matching `schema`, where it can.

    openai backend (OpenAI, vLLM serve, any compatible server): `response_format` with a json_schema, which vLLM
    serve also honours with guided decoding. In-process vLLM: `structured_outputs={"json": schema}` (vLLM's
    `StructuredOutputsParams`). In-process transformers has no constrained decoding: {} and we rely on parsing.
    """
    backend = getattr(spec, "backend", None)
    if backend == "openai":
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "qa_pair", "schema": schema, "strict": True}}}
    if backend == "vllm":
        return {"structured_outputs": {"json": schema}}
    return {}


def crawlqa_prompt(qtype: str, pages: list[CrawledPage], max_page_chars: int = 3000) -> list[dict]:
    """Chat messages asking the teacher for one QA pair of `qtype` grounded in `pages`."""
    blocks = []
    for i, p in enumerate(pages, 1):
        links = ""
        if qtype == "MULTI-HOP" and i == 1 and len(pages) > 1:
            links = f"\n(This page links to {pages[1].url})"
        blocks.append(f"### CrawledPage {i}\nURL: {p.url}\nTitle: {p.title}{links}\n\n{p.text[:max_page_chars]}")
    system = ("You write question-answer pairs for training web-browsing agents. Questions must be answerable only "
              "by reading the given web pages, must not contain their answer, and have a short answer (a number, "
              "name or phrase of at most a few words). Reply with one JSON object and nothing else.")
    user = ("\n\n".join(blocks) + f"\n\nWrite {_TYPE_INSTRUCTIONS[qtype]}.\n"
            'Reply with JSON: {"question": "...", "answer": "...", "type": "' + qtype + '", '
            '"evidence_urls": [the URLs of the pages needed]}')
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]




_JSON_PREFIX = '{"question": "'


async def _json_reply(client: Any, messages: list[dict], sampling: dict) -> str:
    """The teacher's reply to a JSON request. Without constrained decoding, a token-level (in-process) client gets
    the reply's first tokens written for it (`{"question": "`) and stops at the closing brace: a cheap nudge that
    lets even a tiny model produce a parseable record."""
    if sampling.get("response_format") or sampling.get("structured_outputs") or not getattr(client, "token_level", False):
        return (await client.chat(messages, **sampling)).text
    prefix_ids = client.tokenizer(_JSON_PREFIX, add_special_tokens=False)["input_ids"]
    reply = await client.generate(client.encode_prompt(messages) + prefix_ids, stop=("}",), **sampling)
    return _JSON_PREFIX + reply.text


def crawlqa_tasks(pages: list[CrawledPage], types: Iterable[str], n: int,
                  seed: int = 0) -> list[tuple[str, list[CrawledPage]]]:
    """(type, pages) prompts for the teacher: single pages for COUNT, linked pairs for MULTI-HOP, pairs sharing
    content links for INTERSECTION; `n` tasks round-robin over the types."""
    rng = random.Random(seed)
    by_url = {p.url: p for p in pages}
    nav = _navigation_links(pages)
    rich = [p for p in pages if len(p.text) > 200]
    pools: dict[str, list[list[CrawledPage]]] = {}
    for t in types:
        if t == "COUNT":
            pools[t] = [[p] for p in rich]
        elif t == "MULTI-HOP":
            pools[t] = [[p, by_url[l]] for p in rich for l in p.links
                        if l in by_url and l not in nav and len(by_url[l].text) > 200]
        else:
            pools[t] = [[by_url[a], by_url[b]] for a, b in _pairs_sharing_links(rich, nav, rng)]
        rng.shuffle(pools[t])
    tasks = []
    while len(tasks) < n and any(pools.values()):
        for t in list(pools):
            if pools[t] and len(tasks) < n:
                tasks.append((t, pools[t].pop()))
    return tasks


async def llm_qa(pages: list[CrawledPage], client: Any, n_calls: int, *, spec: ModelSpec | None = None,
                 types: Iterable[str] = QA_TYPES,
                 max_answer_words: int = 12, max_page_chars: int = 3000, max_new_tokens: int = 256,
                 temperature: float = 0.7, concurrency: int = 8, seed: int = 0, teacher: str = "",
                 progress: bool = True) -> tuple[list[QAPair], Counter]:
    """Ask the teacher for QA pairs (`n_calls` prompts) and keep the valid ones. Returns (qa, rejection reasons)."""
    by_url = {p.url: p for p in pages}
    tasks = crawlqa_tasks(pages, types, n_calls, seed)
    sampling = {"temperature": temperature, "max_new_tokens": max_new_tokens, **json_constraint(spec)}
    semaphore = asyncio.Semaphore(concurrency)
    reasons: Counter = Counter()
    out: list[QAPair] = []
    bar = tqdm(total=len(tasks), desc="crawlqa llm", unit="prompt", disable=not progress)

    async def one(qtype: str, group: list[CrawledPage]):
        async with semaphore:
            try:
                text = await _json_reply(client, crawlqa_prompt(qtype, group, max_page_chars), sampling)
            except Exception as exc:  # one failed request costs one QA pair, not the stage
                reasons[f"request failed: {type(exc).__name__}"] += 1
                text = None
        bar.update(1)
        if text is None:
            return
        records = parse_json_objects(text)
        if not records:
            reasons["no JSON object in the reply"] += 1
        for record in records[:1]:
            if isinstance(record, dict):
                record.setdefault("type", qtype)
            clean, why = validate_qa(record, by_url, types=types, max_answer_words=max_answer_words,
                                     default_evidence=[p.url for p in group])
            reasons[why] += 1
            if clean:
                out.append(QAPair(**clean, source="crawlqa", difficulty=len(clean["evidence_urls"]),
                                  provenance={"generator": "llm", "teacher": teacher, "prompt_type": qtype,
                                              "prompt_pages": [p.url for p in group]}))

    await asyncio.gather(*(one(t, g) for t, g in tasks))
    bar.close()
    return dedupe(out), reasons


async def generate_crawlqa(pages: list[CrawledPage], cfg: Config, client: Any = None, *,
                           progress: bool = True) -> tuple[list[QAPair], dict]:
    """CrawlQA from crawled pages per `cfg.synthesis.crawlqa` (generator llm | template | both).
    `both`: the teacher's valid pairs first, templates fill up to `num_qa`. Returns (qa, report)."""
    c = cfg.synthesis.crawlqa
    report: dict[str, Any] = {"pages": len(pages)}
    qa: list[QAPair] = []
    if c.generator in ("llm", "both") and c.num_qa:
        if client is None:
            raise ValueError("synthesis.crawlqa.generator needs the teacher model: pass client=")
        n_calls = c.llm_calls or 2 * c.num_qa
        spec = cfg.models.teacher
        llm_pairs, reasons = await llm_qa(pages, client, n_calls, spec=spec, types=c.types,
                                          max_answer_words=c.max_answer_words, max_page_chars=c.max_page_chars,
                                          max_new_tokens=c.max_new_tokens, temperature=c.temperature,
                                          concurrency=spec.concurrency, seed=cfg.run.seed, teacher=spec.name,
                                          progress=progress)
        qa.extend(llm_pairs[:c.num_qa])
        report["llm"] = {"prompts": n_calls, "valid": len(llm_pairs), "reasons": dict(reasons)}
    if c.generator in ("template", "both") and len(qa) < c.num_qa:
        templates = template_qa(pages, c.num_qa - len(qa), types=c.types, seed=cfg.run.seed,
                                max_answer_words=c.max_answer_words)
        qa.extend(templates)
        report["template"] = len(templates)
    qa = dedupe(qa)
    report["by_type"] = dict(Counter(q.type for q in qa))
    return qa, report
