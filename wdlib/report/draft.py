"""The writer's side of a report: what it is asked (`writer_messages`) and how its Markdown is read back
(`parse_draft`) into a title and sections of sentences, each with the source numbers it cites.

The writer is told to write from the numbered sources only, to cite with `[n]` after each sentence that states a
fact, and to write no references list (the report's references are built from the evidence, so their titles and
URLs are the real ones). What it writes anyway is tolerated: a `<think>` block, an `<answer>` wrapper, a references
section of its own (dropped), `[1, 2]` / `[1][2]` / `[1-3]` / a citation after the full stop.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field

WRITER_SYSTEM = (
    "You write short research reports in Markdown from numbered sources, and from nothing else. Every sentence that "
    "states a fact ends with the number of the source that says it, in square brackets, like [1] or [2][3]. Use only "
    "facts the sources state; if they do not answer the topic, say so. Do not write a references list.")

WRITER_TASK = (
    "Topic: {topic}\n\nSources:\n\n{sources}\n\n"
    "Write the report on the topic from these sources only. Layout: a title line starting with '# ', a '## Summary' "
    "section of two or three sentences that answer the topic, then one to four sections, each under a '## ' heading. "
    "End every sentence that states a fact with the number of its source, like [1].")


def writer_messages(topic: str, sources_text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": WRITER_SYSTEM},
            {"role": "user", "content": WRITER_TASK.format(topic=topic, sources=sources_text)}]


# ------------------------------------------------------------------ reading the draft
CITATION = re.compile(r"\[(\d+(?:\s*[,;\-–]\s*\d+)*)\]")
_REFERENCES_HEADING = re.compile(r"^\s*(?:#+\s*|\*\*)?(references|sources|bibliography|works cited)\b", re.I)
_REFERENCE_LINE = re.compile(r"^\s*(?:[-*]\s*)?\[\d+\]\s*\S.*(?:https?://|www\.)", re.I)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])([\"')\]]*)\s+")
_ABBREVIATION = re.compile(r"(?:\b(?:e\.g|i\.e|etc|vs|cf|al|approx|fig|Dr|Mr|Mrs|Ms|St|Jr|Sr)|\b[A-Za-z])\.$", re.I)
_LEADING_CITES = re.compile(r"^((?:\s*\[\d+(?:\s*[,;\-–]\s*\d+)*\])+)[.,;]?\s*")


def citations(text: str) -> list[int]:
    """The source numbers cited in `text`, in order, once each; `[2-4]` is 2, 3, 4."""
    out: list[int] = []
    for group in CITATION.findall(text):
        for part in re.split(r"\s*[,;]\s*", group):
            bounds = [int(x) for x in re.split(r"\s*[\-–]\s*", part)]
            span = len(bounds) == 2 and 0 <= bounds[1] - bounds[0] < 50
            out += [n for n in (range(bounds[0], bounds[1] + 1) if span else bounds[:1]) if n not in out]
    return out


def plain(text: str) -> str:
    """A sentence without its citation markers and Markdown emphasis: what the check compares with the source."""
    text = CITATION.sub("", text)
    text = re.sub(r"[*_`]+", "", text)
    return re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"\s+", " ", text)).strip()


@dataclass
class Sentence:
    text: str  # as written, citation markers included
    cites: list[int] = field(default_factory=list)
    check: dict = field(default_factory=dict)  # filled in by wdlib.report.check

    @property
    def plain(self) -> str:
        return plain(self.text)


@dataclass
class Section:
    heading: str
    paragraphs: list[list[Sentence]] = field(default_factory=list)  # a bullet item is a paragraph of its own

    @property
    def sentences(self) -> list[Sentence]:
        return [s for p in self.paragraphs for s in p]


@dataclass
class Draft:
    title: str
    sections: list[Section] = field(default_factory=list)
    raw: str = ""  # the writer's reply, untouched

    @property
    def sentences(self) -> list[Sentence]:
        return [s for sec in self.sections for s in sec.sentences]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Draft":
        sections = [Section(s["heading"], [[Sentence(**x) for x in p] for p in s["paragraphs"]])
                    for s in d.get("sections", [])]
        return cls(title=d.get("title", ""), sections=sections, raw=d.get("raw", ""))


def split_sentences(block: str) -> list[str]:
    """Sentences of one paragraph; a citation written after the full stop (`... path. [2] Next ...`) stays with the
    sentence before it."""
    text, pieces, start = " ".join(block.split()), [], 0
    for m in _SENTENCE_END.finditer(text):  # a sentence may start in lower case (`os.path...`): split at every end
        end = m.start() + len(m.group(1))
        if not _ABBREVIATION.search(text[start:m.start()]):  # ... but after "e.g." or an initial
            pieces.append(text[start:end])
            start = m.end()
    pieces.append(text[start:])
    out: list[str] = []
    for piece in pieces:
        m = _LEADING_CITES.match(piece)
        if m and out:
            out[-1] = f"{out[-1]} {m.group(1).strip()}"
            piece = piece[m.end():]
        if piece.strip():
            out.append(piece.strip())
    return out


def _body(reply: str) -> str:
    text = re.sub(r"<think>.*?</think>", "", reply or "", flags=re.S)
    text = re.sub(r"^.*?</think>", "", text, flags=re.S)  # a template that opened <think> in the prompt
    text = re.sub(r"<tool_call>.*?(?:</tool_call>|$)", "", text, flags=re.S)  # a policy that still wants a tool
    m = re.search(r"<answer>(.*?)(?:</answer>|$)", text, re.S)
    return (m.group(1) if m else text).strip()


def parse_draft(reply: str, topic: str) -> Draft:
    """The writer's Markdown → Draft. The first `#` heading is the title (else the topic); text before the first
    `##` heading is the summary; a references section (or lines that look like reference entries) is dropped."""
    title, sections, block = None, [Section("Summary")], []

    def flush() -> None:
        if block:
            text = " ".join(line.strip() for line in block)
            sentences = [Sentence(s, citations(s)) for s in split_sentences(text) if plain(s)]
            if sentences:
                sections[-1].paragraphs.append(sentences)
            block.clear()

    for line in _body(reply).splitlines():
        heading = _HEADING.match(line)
        if _REFERENCES_HEADING.match(line) and (heading or line.strip().endswith((":", "**"))):
            flush()
            break
        if _REFERENCE_LINE.match(line):
            continue
        if heading:
            flush()
            text = heading.group(2).strip()
            if len(heading.group(1)) == 1 and title is None:
                title = text
            elif text:
                sections.append(Section(text))
        elif not line.strip():
            flush()
        elif _BULLET.match(line):
            flush()
            block.append(_BULLET.sub("", line))
            flush()
        else:
            block.append(line)
    flush()
    sections = [s for s in sections if s.paragraphs]
    return Draft(title=plain(title or "") or topic.strip() or "Report", sections=sections, raw=reply or "")


def slugify(topic: str, max_len: int = 60) -> str:
    """A folder name for a topic: lowercase words joined by '-', letters of any script kept, accents dropped."""
    text = unicodedata.normalize("NFKD", topic or "")
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    words = re.findall(r"\w+", text)
    slug = ""
    for w in words:
        if len(slug) + len(w) + 1 > max_len:
            break
        slug = f"{slug}-{w}" if slug else w
    return slug or (words[0][:max_len] if words else "empty-topic")
