"""A report as Markdown and as one self-contained HTML page (inline CSS, no script, no external resource).

Both are rendered from the report's JSON (`report.json`: topic, title, sections of checked sentences, sources,
the check's figures, problems). In the page every citation `[n]` is a link to reference n; hovering or focusing it
(a click focuses it) shows the cited passage and the check's verdict; unsupported sentences are underlined in red
with the reason on hover, uncited sentences with factual content in orange; a citation of a number no source has
links to a reference entry that says so.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from wdlib.report.draft import CITATION, citations

CSS = """
body { font: 16px/1.6 Georgia, "Times New Roman", serif; color: #1f2328; margin: 0; background: #fff; }
main { max-width: 820px; margin: 0 auto; padding: 24px 20px 60px; }
h1 { font-size: 28px; line-height: 1.25; margin: 8px 0 4px; } h2 { font-size: 20px; margin: 28px 0 8px; }
.meta, .url, .tags, footer { font: 13px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #57606a; }
.box { font: 14px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; border: 1px solid #d0d7de;
  border-radius: 6px; padding: 8px 12px; margin: 12px 0; background: #f6f8fa; }
.box.problems { background: #fff8c5; border-color: #d4a72c; } .box ul { margin: 4px 0; padding-left: 20px; }
.s.bad { text-decoration: underline wavy #cf222e; text-decoration-skip-ink: none; background: #ffebe9; }
.s.bad::after { content: " \\26A0"; color: #cf222e; font-size: 12px; }
.s.fact { text-decoration: underline dotted #bc4c00; }
.cw { position: relative; white-space: nowrap; }
a.cite { font: 12px -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; vertical-align: super;
  text-decoration: none; padding: 0 1px; color: #0969da; }
a.cite.bad { color: #cf222e; } a.cite.ok { color: #1a7f37; }
.pop { display: none; position: absolute; left: 0; top: 1.6em; z-index: 10; width: 420px; max-width: 80vw;
  white-space: normal; background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 10px;
  box-shadow: 0 4px 14px rgba(0,0,0,.15); font: 13px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
.cw:hover .pop, .cw:focus-within .pop { display: block; }
.pop q { display: block; margin-top: 4px; color: #424a53; font-style: italic; }
.legend span { margin-right: 14px; }
ol.refs { padding-left: 28px; } ol.refs li { margin: 8px 0; } ol.refs li:target { background: #fff8c5; }
li.missing { color: #cf222e; } blockquote { margin: 4px 0; padding-left: 10px; border-left: 3px solid #d0d7de;
  color: #424a53; font-size: 14px; white-space: pre-wrap; } details summary { cursor: pointer; font-size: 13px; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; background: #f6f8fa; padding: 0 3px; }
"""


_FILES = {"trajectory.html": "the research trajectory", "evidence.jsonl": "every tool call (evidence.jsonl)",
          "sources.jsonl": "sources with their text (sources.jsonl)"}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _inline(text: str) -> str:
    """Escaped text with the writer's `code` and **bold** kept."""
    out = escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _short(text: str, n: int = 420) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " …"


def _cite(c: dict, source: dict | None) -> str:
    n = c["n"]
    state = "ok" if c.get("supported") else "bad"
    head = f"[{n}] {source['title']}" if source else f"[{n}] no such source"
    verdict = "supports the sentence" if c.get("supported") else "does not support the sentence"
    passage = f"<q>{escape(_short(c['passage']))}</q>" if c.get("passage") else ""
    tip = f"{head}: {verdict}: {c.get('reason', '')}"
    return (f'<span class="cw"><a class="cite {state}" href="#ref-{n}" title="{escape(tip)}">[{n}]</a>'
            f'<span class="pop" role="tooltip"><b>{escape(head)}</b><br>{escape(verdict)}: '
            f"{escape(c.get('reason', ''))}{passage}</span></span>")


def _sentence(s: dict, sources: dict[int, dict]) -> str:
    check = s.get("check") or {}
    by_n = {c["n"]: c for c in check.get("citations", [])}
    parts, pos = [], 0
    for m in CITATION.finditer(s["text"]):
        parts.append(_inline(s["text"][pos:m.start()]))
        for n in citations(m.group(0)):
            parts.append(_cite(by_n.get(n, {"n": n, "supported": False, "reason": "not checked"}), sources.get(n)))
        pos = m.end()
    parts.append(_inline(s["text"][pos:]))
    if check.get("supported") is False:
        reasons = "; ".join(f"[{c['n']}] {c.get('reason', '')}" for c in check.get("citations", []))
        why = escape("Not supported by its citations: " + reasons)
        return f'<span class="s bad" title="{why}">{"".join(parts)}</span>'
    if check.get("supported") is None and check.get("factual"):
        return (f'<span class="s fact" title="States a fact but cites no source">{"".join(parts)}</span>')
    return f'<span class="s{" ok" if check.get("supported") else ""}">{"".join(parts)}</span>'


def _check_box(check: dict) -> str:
    if not check:
        return ""
    items = [f"<b>Citation check</b> ({escape(check['method'])}"
             + (f", threshold {_pct(check['threshold'])}" if check["method"] == "lexical" else "") + "): "
             f"{check['supported_sentences']} of {check['cited_sentences']} cited sentences supported, "
             f"citation precision <b>{_pct(check['citation_precision'])}</b>"]
    items.append(f"{len(check['uncited_factual'])} uncited sentence(s) with factual content")
    never = ", ".join(f"[{n}]" for n in check["uncited_references"]) or "none"
    items.append(f"references never cited: {never}")
    if check["unknown_references"]:
        items.append("cited numbers no source has: " + ", ".join(f"[{n}]" for n in check["unknown_references"]))
    legend = ('<div class="legend"><span class="s bad">unsupported</span> <span class="s fact">uncited fact</span>'
              ' <a class="cite ok">[n]</a> supports · <a class="cite bad">[n]</a> does not</div>')
    return '<div class="box check">' + " · ".join(items) + legend + "</div>"


def _reference(src: dict, cited: int) -> str:
    kind = "page read by the agent" if src["visited"] else "search result only (never visited)"
    uses = f"cited {cited}×" if cited else "never cited"
    queries = f" · found by: {escape('; '.join(src.get('queries', [])))}" if src.get("queries") else ""
    return (f'<li id="ref-{src["n"]}" value="{src["n"]}" data-n="{src["n"]}"><a href="{escape(src["url"])}">'
            f'{escape(src["title"])}</a><div class="url">{escape(src["url"])}</div>'
            f'<div class="tags">{kind} · {uses}{queries}</div>'
            f"<details><summary>what the writer read</summary><blockquote>{escape(src.get('excerpt', ''))}"
            f"</blockquote></details></li>")


def to_html(report: dict[str, Any]) -> str:
    sources = {s["n"]: s for s in report.get("sources", [])}
    sections = report.get("draft", {}).get("sections", [])
    counts: dict[int, int] = {}
    body = []
    for sec in sections:
        body.append(f"<section><h2>{_inline(sec['heading'])}</h2>")
        for paragraph in sec["paragraphs"]:
            for s in paragraph:
                for n in s.get("cites", []):
                    counts[n] = counts.get(n, 0) + 1
            body.append("<p>" + " ".join(_sentence(s, sources) for s in paragraph) + "</p>")
        body.append("</section>")
    refs = [_reference(src, counts.get(n, 0)) for n, src in sorted(sources.items())]
    refs += [f'<li id="ref-{n}" value="{n}" data-n="{n}" class="missing">No source has number {n}: the writer cited '
             f"[{n}], which is not in the evidence.</li>" for n in sorted(set(counts) - set(sources))]
    problems = report.get("problems") or []
    problem_box = ('<div class="box problems"><b>What is missing</b><ul>'
                   + "".join(f"<li>{escape(p)}</li>" for p in problems) + "</ul></div>") if problems else ""
    r = report.get("research", {})
    meta = (f"Topic: {escape(report.get('topic', ''))} · research model: {escape(str(report.get('model', '')))} · "
            f"writer: {escape(str(report.get('writer', '')))} · {escape(report.get('created', ''))}")
    failed = "".join(f"<li>{escape(f['url'])}: {escape(f['reason'])}</li>" for f in r.get("failed_visits", []))
    footer = (f"<footer><p>Research: {r.get('turns', 0)} agent turns, {r.get('searches', 0)} search call(s) "
              f"({r.get('search_results', 0)} results), {r.get('visits', 0)} visit(s) "
              f"({r.get('pages_read', 0)} pages read). The agent's own answer: {escape(str(r.get('answer')))}</p>"
              + (f"<p>Visits that read nothing:</p><ul>{failed}</ul>" if failed else "")
              + "<p>Files: " + " · ".join(f'<a href="{escape(f)}">{escape(_FILES.get(f, f))}</a>'
                                         for f in report.get("files", []) if f != "report.html") + "</p></footer>")
    title = escape(report.get("title") or report.get("topic") or "Report")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{title}</title><style>{CSS}</style></head>'
            f'<body><main><h1>{title}</h1><div class="meta">{meta}</div>{problem_box}'
            f"{_check_box(report.get('check') or {})}{''.join(body)}"
            f'<section id="references"><h2>References</h2><ol class="refs">{"".join(refs)}</ol></section>'
            f"{footer}</main></body></html>")


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# {report.get('title') or report.get('topic') or 'Report'}", "",
             f"*Topic:* {report.get('topic', '')} · *research model:* {report.get('model', '')} · "
             f"*writer:* {report.get('writer', '')} · {report.get('created', '')}", ""]
    for p in report.get("problems") or []:
        lines.append(f"> **Missing:** {p}")
    check = report.get("check") or {}
    if check:
        lines += ["", f"> **Citation check** ({check['method']}): {check['supported_sentences']} of "
                      f"{check['cited_sentences']} cited sentences supported (precision "
                      f"{_pct(check['citation_precision'])}); {len(check['uncited_factual'])} uncited factual "
                      f"sentence(s); references never cited: "
                      f"{', '.join(f'[{n}]' for n in check['uncited_references']) or 'none'}. "
                      "Sentences marked ⚠ are not supported by what they cite."]
    for sec in report.get("draft", {}).get("sections", []):
        lines += ["", f"## {sec['heading']}", ""]
        for paragraph in sec["paragraphs"]:
            lines.append(" ".join(s["text"] + (" ⚠" if (s.get("check") or {}).get("supported") is False else "")
                                  for s in paragraph))
            lines.append("")
    lines += ["", "## References", ""]
    for s in report.get("sources", []):
        kind = "page read" if s["visited"] else "search result only"
        lines.append(f"[{s['n']}] [{s['title']}]({s['url']}) — {kind}")
    return "\n".join(lines).rstrip() + "\n"
