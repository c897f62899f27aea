"""Trajectory viewer: one trajectory as readable HTML — question, each turn's think, tool call and answer, tool
responses collapsed, the gold answer, the judge's and the filters' verdicts.

In a notebook: `viewer.show(traj)` (renders inline). For a whole file (ours or WebDancer's released format):

    python -m wdlib.viewer outputs/smoke/trajectories.jsonl outputs/smoke/trajectories.html [--limit 200]

writes one self-contained page (no JavaScript, no network) with an index and every trajectory collapsible.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from html import escape
from pathlib import Path
from typing import Iterable

from wdlib.react import parse_turn
from wdlib.redact import redact
from wdlib.trajectory import Trajectory, read_jsonl

CSS = """
.wdv { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328; max-width: 1100px; }
.wdv .head { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 12px; background: #f6f8fa; }
.wdv .q { font-weight: 600; font-size: 15px; }
.wdv .meta { color: #57606a; font-size: 12px; margin-top: 4px; }
.wdv .badge { display: inline-block; padding: 0 7px; border-radius: 10px; font-size: 12px; margin: 2px 4px 2px 0;
  border: 1px solid #d0d7de; background: #fff; }
.wdv .ok { background: #dafbe1; border-color: #4ac26b; } .wdv .bad { background: #ffebe9; border-color: #ff8182; }
.wdv .na { background: #f6f8fa; color: #57606a; }
.wdv .turn { border-left: 3px solid #0969da; margin: 10px 0 10px 4px; padding: 2px 0 2px 10px; }
.wdv .turn.err { border-left-color: #cf222e; }
.wdv .label { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: #57606a; }
.wdv .think { white-space: pre-wrap; color: #424a53; background: #fbfbfc; border-radius: 4px; padding: 4px 8px;
  max-height: 22em; overflow: auto; }
.wdv pre { white-space: pre-wrap; word-break: break-word; background: #f6f8fa; border-radius: 4px; padding: 6px 8px;
  margin: 4px 0; font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; max-height: 30em; overflow: auto; }
.wdv .call pre { background: #ddf4ff; } .wdv .answer { background: #dafbe1; border-radius: 4px; padding: 4px 8px;
  font-weight: 600; } .wdv .error { color: #cf222e; font-size: 12px; }
.wdv details > summary { cursor: pointer; color: #0969da; font-size: 12px; }
.wdv .extra { white-space: pre-wrap; color: #57606a; }
"""

_TAGS = re.compile(r"<(think|tool_call|answer)>(.*?)</\1>", re.S)


def _badge(label: str, passed: bool | None, title: str = "") -> str:
    cls = "na" if passed is None else "ok" if passed else "bad"
    mark = "·" if passed is None else "✓" if passed else "✗"
    return f'<span class="badge {cls}" title="{escape(title)}">{escape(label)} {mark}</span>'


def as_trajectory(traj: Trajectory | dict) -> Trajectory:
    """A Trajectory from a Trajectory, one of our JSONL records, or a record of WebDancer's released format."""
    if isinstance(traj, Trajectory):
        return traj
    if isinstance(traj, dict) and traj.get("task") == "agent/multiturn_search":
        return Trajectory.from_webdancer(traj)
    if isinstance(traj, dict):
        return Trajectory.from_dict(traj)
    raise TypeError(f"cannot render {type(traj).__name__} as a trajectory")


def _pretty_call(body: str) -> str:
    try:
        return json.dumps(json.loads(body), ensure_ascii=False, indent=1)
    except (ValueError, RecursionError, TypeError):
        return body.strip()


def _assistant(text: str, index: int, thinking: str | None = None) -> str:
    error = parse_turn(text).error
    parts = [f'<div class="turn{" err" if error else ""}"><div class="label">turn {index}</div>']
    if thinking:  # a reasoning model's separate reasoning_content (if the record kept it)
        parts.append(f'<div class="think">{escape(thinking.strip())}</div>')
    pos = 0
    for m in _TAGS.finditer(text):
        between = text[pos:m.start()].strip()
        if between:
            parts.append(f'<div class="extra">{escape(between)}</div>')
        tag, body = m.group(1), m.group(2)
        if tag == "think":
            parts.append(f'<div class="think">{escape(body.strip())}</div>')
        elif tag == "tool_call":
            parts.append(f'<div class="call"><div class="label">tool call</div><pre>{escape(_pretty_call(body))}</pre></div>')
        else:
            parts.append(f'<div class="label">answer</div><div class="answer">{escape(body.strip())}</div>')
        pos = m.end()
    rest = text[pos:].strip()
    if rest:
        parts.append(f'<div class="extra">{escape(rest)}</div>')
    if error:
        parts.append(f'<div class="error">format: {escape(error)}</div>')
    parts.append("</div>")
    return "".join(parts)


def _observation(text: str, call_name: str | None) -> str:
    body = re.sub(r"^\s*<tool_response>\s*|\s*</tool_response>\s*$", "", text)
    what = f"{call_name} response" if call_name else "tool response"
    return (f'<details><summary>{escape(what)} ({len(body):,} chars)</summary>'
            f"<pre>{escape(body)}</pre></details>")


def _verdicts(t: Trajectory) -> str:
    badges = []
    if t.judge:
        badges.append(_badge(f"judge ({t.judge.get('method', '?')})", t.judge.get("correct"),
                             str(t.judge.get("raw", ""))[:500]))
    for stage in ("validity", "correctness", "quality"):
        v = t.filters.get(stage) if t.filters else None
        if v:
            badges.append(_badge(stage, v.get("passed"), v.get("reason", "")))
    if t.filters and "kept" in t.filters:
        badges.append(_badge("kept" if t.filters["kept"] else f"dropped by {t.filters.get('dropped_by')}",
                             t.filters["kept"]))
    return "".join(badges)


def render(traj: Trajectory | dict, *, with_css: bool = True, anchor: str | None = None) -> str:
    """One trajectory as an HTML fragment (with its CSS unless `with_css=False`)."""
    t = as_trajectory(traj)
    stats = (f"{t.turns} turns · {len(t.tool_calls)} tool calls · finish: {t.finish_reason} · "
             f"model: {t.model or '?'} · source: {t.source}")
    if t.timings.get("total_s"):
        stats += f" · {t.timings['total_s']:.1f} s"
    gold = f'<div class="meta">gold: <b>{escape(str(t.gold))}</b></div>' if t.gold is not None else ""
    pred = f'<div class="meta">prediction: <b>{escape(str(t.prediction))}</b></div>' if t.prediction is not None else ""
    id_attr = f' id="{escape(anchor)}"' if anchor else ""
    out = [f'<div class="wdv"{id_attr}>']
    if with_css:
        out.insert(0, f"<style>{CSS}</style>")
    out.append(f'<div class="head"><div class="q">{escape(t.question)}</div>{gold}{pred}'
               f'<div class="meta">{escape(stats)} · id {escape(t.id)}</div><div>{_verdicts(t)}</div></div>')
    messages = t.messages
    if messages and messages[0]["role"] == "system":
        out.append(f'<details><summary>system prompt</summary><pre>{escape(messages[0]["content"])}</pre></details>')
        messages = messages[1:]
    if messages and messages[0]["role"] == "user":
        out.append(f'<details><summary>user prompt</summary><pre>{escape(messages[0]["content"])}</pre></details>')
        messages = messages[1:]
    turn, last_call = 0, None
    for m in messages:
        if m["role"] == "assistant":
            turn += 1
            out.append(_assistant(m["content"], turn, m.get("reasoning_content")))
            calls = _TAGS.findall(m["content"])
            last_call = next((_call_name(body) for tag, body in calls if tag == "tool_call"), None)
        else:
            out.append(_observation(m["content"], last_call))
    out.append("</div>")
    return "".join(out)


def _call_name(body: str) -> str | None:
    try:
        name = json.loads(body).get("name")
        return name if isinstance(name, str) else None
    except (ValueError, RecursionError, AttributeError):  # not JSON, or JSON that json cannot read back
        return None


class _HTML:
    """What notebooks display inline (Jupyter calls `_repr_html_`), without importing IPython here."""

    def __init__(self, html: str):
        self.html = html

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.html


def show(traj: Trajectory | dict) -> _HTML:
    """Inline rendering in a notebook: put `viewer.show(t)` last in a cell (or `display(viewer.show(t))`)."""
    return _HTML(render(traj))


def render_page(trajectories: Iterable[Trajectory | dict], title: str = "Trajectories") -> str:
    """A standalone HTML page: an index table, then every trajectory in a collapsible section."""
    items = [as_trajectory(t) for t in trajectories]
    rows, bodies = [], []
    for i, t in enumerate(items):
        anchor = f"t{i}"
        kept = t.filters.get("kept") if t.filters else None
        correct = t.judge.get("correct") if t.judge else None
        rows.append(f'<tr><td><a href="#{anchor}">{i + 1}</a></td><td>{escape(t.question[:140])}</td>'
                    f"<td>{t.turns}</td><td>{len(t.tool_calls)}</td><td>{escape(t.finish_reason)}</td>"
                    f"<td>{_badge('', correct)}</td><td>{_badge('', kept)}</td></tr>")
        bodies.append(f'<details id="{anchor}"><summary>{i + 1}. {escape(t.question[:160])}</summary>'
                      f"{render(t, with_css=False)}</details>")
    table = ('<table class="idx"><tr><th>#</th><th>question</th><th>turns</th><th>calls</th><th>finish</th>'
             "<th>correct</th><th>kept</th></tr>" + "".join(rows) + "</table>")
    css = CSS + (".idx { border-collapse: collapse; font-size: 13px; margin-bottom: 16px; }"
                 ".idx td, .idx th { border-bottom: 1px solid #d0d7de; padding: 3px 8px; text-align: left; }"
                 "body > details { margin: 6px 0; } body > details > summary { font-size: 14px; }")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{escape(title)}</title><style>{css}</style>'
            f'</head><body class="wdv"><h2>{escape(title)}</h2><p>{len(items)} trajectories</p>{table}'
            + "".join(bodies) + "</body></html>")


def load_any(path: str | Path, limit: int | None = None) -> list[Trajectory]:
    """Trajectories from a JSONL file in our format or WebDancer's released chatml format (detected per line)."""
    out = []
    for record in read_jsonl(path):
        out.append(as_trajectory(record))
        if limit is not None and len(out) >= limit:
            break
    return out


def write_html(trajectories: Iterable[Trajectory | dict], path: str | Path, title: str = "Trajectories") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(redact(render_page(trajectories, title)), encoding="utf-8")  # key values: as in the JSONL records
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wdlib.viewer", description=__doc__.split("\n\n")[0])
    parser.add_argument("trajectories", help="JSONL file (ours or WebDancer's sample_traj.jsonl format)")
    parser.add_argument("out", help="HTML file to write")
    parser.add_argument("--limit", type=int, default=None, help="render at most this many trajectories")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    src = Path(args.trajectories)
    if not src.is_file():
        print(f"error: {src} not found", file=sys.stderr)
        return 2
    items = load_any(src, args.limit)
    out = write_html(items, args.out, args.title or src.name)
    print(f"wrote {out} ({len(items)} trajectories)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
