"""Report mode, end to end: the ReAct agent researches a topic through the toolbox (every observation kept), a writer
drafts a cited report from that evidence only, every citation is checked, and the report is saved as HTML, Markdown
and JSON beside its evidence and the research trajectory (openable with `wdlib.viewer`):

    python -m wdlib.report --params params/smoke.yaml "What does os.path.join do with an absolute path?" \\
        [--model base|sft|dapo|latest|NAME] [--out DIR]

writes `outputs/<run>/reports/<slug>/` (or DIR): report.html, report.md, report.json, sources.jsonl (every source with
its text), evidence.jsonl (every tool call with its whole observation), trajectory.jsonl and trajectory.html.

Bad input never crashes and never loses the report: an empty topic, research that finds nothing, a writer that fails,
writes nothing or cites nothing each end in a report whose "What is missing" box says so (`Report.problems`), and the
CLI exits 1 (0 for a complete report, 2 for unusable arguments or params).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from wdlib.config import Config, ModelSpec, ParamsError
from wdlib.redact import redact
from wdlib.report.check import check_draft
from wdlib.report.draft import parse_draft, slugify, writer_messages
from wdlib.report.render import to_html, to_markdown
from wdlib.report.sources import RecordingToolbox, gather_sources, writer_context
from wdlib.trajectory import write_jsonl

WRITER_TEMPERATURE = 0.3  # low: the writer should restate its sources, not invent


class ReportError(ValueError):
    """A report that cannot be started (unknown model, missing checkpoint); the message says what to do."""


@dataclass
class Report:
    data: dict[str, Any]  # what report.json holds
    dir: Path

    @property
    def problems(self) -> list[str]:
        return self.data["problems"]

    @property
    def html(self) -> Path:
        return self.dir / "report.html"

    def summary(self) -> str:
        c = self.data.get("check") or {}
        line = f"{self.data['topic'][:60]!r}: {len(self.data['sources'])} sources"
        if c:
            precision = "n/a" if c["citation_precision"] is None else f"{c['citation_precision']:.0%}"
            line += (f", {c['supported_sentences']}/{c['cited_sentences']} cited sentences supported (precision "
                     f"{precision}), {len(c['uncited_factual'])} uncited factual, "
                     f"{len(c['uncited_references'])} references never cited")
        return line + (f"; missing: {' | '.join(self.problems)}" if self.problems else "")


# ------------------------------------------------------------------ which model researches
def _is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def resolve_model(cfg: Config, name: str | None = None) -> tuple[str, ModelSpec]:
    """(label, spec) of the research model: base (models.policy), sft / dapo (the run's checkpoints, served like the
    policy), latest (dapo, else sft, else base), a key of eval.extra_models, or an HF id / path / embedded:... name."""
    name = (name or cfg.report.model).strip()
    policy = cfg.models.policy
    if name == "latest":
        name = next((s for s in ("dapo", "sft") if _is_checkpoint(cfg.paths.checkpoint_dir(s))), "base")
    if name == "base":
        return "base", policy
    if name in ("sft", "dapo"):
        path = cfg.paths.checkpoint_dir(name)
        if not _is_checkpoint(path):
            raise ReportError(f"model {name!r}: no checkpoint at {path} (run notebook {'03' if name == 'sft' else '04'}"
                              f" first, or use --model base / latest)")
        return name, policy.model_copy(update={"name": str(path)})
    if name in cfg.eval.extra_models:
        return name, cfg.eval.extra_models[name]
    return Path(name).name or name, policy.model_copy(update={"name": name})


# ------------------------------------------------------------------ one report
def _writer_budget(spec: ModelSpec, max_new_tokens: int) -> tuple[int, int]:
    """(max_new_tokens, characters of sources) that fit the writer's context (~3 characters a token, prompt ~350)."""
    new = min(max_new_tokens, spec.context_length // 2)
    return new, max(1000, (spec.context_length - new - 350) * 3)


async def make_report(topic: str, cfg: Config, out_dir: Path, *, client: Any, toolbox: Any, writer: Any = None,
                      writer_spec: ModelSpec | None = None, judge: Any = None, model_label: str = "",
                      context_length: int | None = None) -> Report:
    """Research `topic`, write, check and save one report into `out_dir`. Never raises for bad input or a failing
    model or tool: what went wrong is in `Report.problems` (and in the page)."""
    from wdlib.agent import resolve_prompt, run_agent

    rp, t0 = cfg.report, time.time()
    topic = " ".join((topic or "").split())
    writer, writer_spec = writer or client, writer_spec or cfg.models.policy
    data: dict[str, Any] = {
        "topic": topic, "slug": slugify(topic), "title": topic or "No topic", "model": model_label,
        "writer": getattr(writer, "model_name", type(writer).__name__) if writer is not None else "",
        "created": datetime.datetime.now().isoformat(timespec="seconds"), "research": {}, "sources": [],
        "draft": {"title": topic, "sections": [], "raw": ""}, "check": {}, "problems": [], "timings": {}, "files": [],
    }
    problems, timings = data["problems"], data["timings"]
    out_dir.mkdir(parents=True, exist_ok=True)
    if not topic:
        problems.append("No topic was given: nothing was researched or written. Give a question or a topic.")
        return _save(data, out_dir, [], [], [], t0)

    recorder = RecordingToolbox(toolbox)
    context_length = context_length or cfg.models.policy.context_length
    sampling = {"temperature": cfg.eval.temperature, "top_p": cfg.eval.top_p}
    if cfg.eval.repetition_penalty != 1.0:  # as evaluation: sent only when set, not every endpoint accepts it
        sampling["repetition_penalty"] = cfg.eval.repetition_penalty
    # agent.prompt: webdancer is a template read from the authors' trajectories, not a style name run_agent knows
    trajectory = await run_agent(topic, client, recorder, max_turns=rp.max_turns, max_total_tokens=context_length,
                                 context_length=context_length, sampling=sampling, prompt=resolve_prompt(cfg))
    timings["research_s"] = round(time.time() - t0, 2)
    sources, stats = await gather_sources(recorder.calls, toolbox, topic, max_sources=rp.max_sources,
                                          excerpt_tokens=cfg.web.visit_evidence_tokens)
    data["research"] = {"turns": trajectory.turns, "finish_reason": trajectory.finish_reason,
                        "answer": trajectory.prediction, **stats}
    data["sources"] = [{k: v for k, v in s.to_dict().items() if k != "text"} for s in sources]
    if trajectory.finish_reason == "error":
        problems.append(f"The research model failed: {trajectory.error}")
    if not sources:
        problems.append(f"Nothing was found on this topic: {stats['searches']} search call(s) returned "
                        f"{stats['search_results']} results and {stats['visits']} visit(s) read {stats['pages_read']}"
                        " pages, so the writer was not asked (it may only write from evidence). The research "
                        "trajectory shows what the agent tried.")
        return _save(data, out_dir, [trajectory], sources, recorder.calls, t0)

    t1 = time.time()
    max_new, chars = _writer_budget(writer_spec, rp.writer_max_new_tokens)
    reply = ""
    try:
        answer = await writer.chat(writer_messages(topic, writer_context(sources, chars)), max_new_tokens=max_new,
                                   temperature=WRITER_TEMPERATURE)
        reply = answer.text or ""
    except Exception as exc:  # an endpoint down or a model failure: the report keeps its sources and says so
        problems.append(f"The writer failed: {type(exc).__name__}: {exc}")
    timings["writer_s"] = round(time.time() - t1, 2)
    draft = parse_draft(reply, topic)
    data["title"] = draft.title
    if not draft.sentences and reply.strip() == "" and not problems:
        problems.append("The writer returned no text: the report has its sources only.")
    elif not draft.sentences and not problems:
        problems.append("The writer's reply had no sentences to report (its raw reply is in report.json).")
    elif draft.sentences and not any(s.cites for s in draft.sentences):
        problems.append(f"The writer cited no source: none of its {len(draft.sentences)} sentences can be checked "
                        "against the evidence; treat the text as unsourced.")
    t2 = time.time()
    data["check"] = await check_draft(draft, sources, threshold=rp.support_threshold, passage_words=rp.passage_words,
                                      accept_snippets=rp.accept_snippets, judge=judge)
    if rp.citation_check == "llm" and judge is None:
        data["check"]["method"] = "lexical (citation_check: llm, but models.judge is not set)"
    if data["check"]["unknown_references"]:
        problems.append("The writer cited numbers no source has: "
                        + ", ".join(f"[{n}]" for n in data["check"]["unknown_references"]))
    timings["check_s"] = round(time.time() - t2, 2)
    data["draft"] = draft.to_dict()
    return _save(data, out_dir, [trajectory], sources, recorder.calls, t0)


def _save(data: dict, out_dir: Path, trajectories: list, sources: list, calls: list, t0: float) -> Report:
    """Write the report's files; the research trajectory goes through the trajectory viewer."""
    from wdlib.viewer import write_html

    data["timings"]["total_s"] = round(time.time() - t0, 2)
    files = ["report.html", "report.md", "report.json"]
    if trajectories:
        write_jsonl(out_dir / "trajectory.jsonl", [t.to_dict() for t in trajectories])
        write_html(trajectories, out_dir / "trajectory.html", title=f"Research: {data['topic'][:80]}")
        write_jsonl(out_dir / "sources.jsonl", [s.to_dict() for s in sources])
        write_jsonl(out_dir / "evidence.jsonl", calls)
        files += ["trajectory.html", "trajectory.jsonl", "sources.jsonl", "evidence.jsonl"]
    data["files"] = files
    # key values redacted like every JSONL record (`wdlib.redact`): a page or a writer may echo one
    (out_dir / "report.json").write_text(redact(json.dumps(data, indent=1, ensure_ascii=False)), encoding="utf-8")
    (out_dir / "report.md").write_text(redact(to_markdown(data)), encoding="utf-8")
    (out_dir / "report.html").write_text(redact(to_html(data)), encoding="utf-8")
    return Report(data, out_dir)


# ------------------------------------------------------------------ one model, several topics
async def _write_all(cfg: Config, topics: list[str], dirs: list[Path], model: str | None, clients: dict,
                     progress: bool) -> list[Report]:
    from tqdm.auto import tqdm

    from wdlib.llm import make_client
    from wdlib.models import pick_device
    from wdlib.tools import Toolbox

    from wdlib.agent import resolve_prompt

    label, spec = resolve_model(cfg, model)
    research = any(t.strip() for t in topics)
    if research:
        try:  # a missing webdancer prompt file is a params problem: say so before any model loads
            resolve_prompt(cfg)
        except FileNotFoundError as exc:
            raise ReportError(str(exc)) from None
    device = pick_device(cfg.run.device)
    client = clients.get("client") or (make_client(spec, device=device) if research else None)
    writer_spec = cfg.report.writer or spec
    writer = clients.get("writer") or (make_client(cfg.report.writer, device=device) if cfg.report.writer and research
                                       else client)
    judge = clients.get("judge")
    if judge is None and research and cfg.report.citation_check == "llm" and cfg.models.judge is not None:
        judge = make_client(cfg.models.judge, device=device)
    toolbox = clients.get("toolbox") or Toolbox.from_config(cfg)
    own_toolbox = "toolbox" not in clients
    reports = []
    try:
        if research and own_toolbox:
            toolbox.open()
        for topic, out in tqdm(list(zip(topics, dirs)), desc="reports", disable=not progress or len(topics) < 2):
            reports.append(await make_report(topic, cfg, out, client=client, toolbox=toolbox, writer=writer,
                                             writer_spec=writer_spec, judge=judge,
                                             model_label=f"{label} ({getattr(client, 'model_name', spec.name)})",
                                             context_length=spec.context_length))
    finally:
        if own_toolbox:
            toolbox.close()
    return reports


def write_reports(cfg: Config, topics: Iterable[str], *, model: str | None = None, out: str | Path | None = None,
                  progress: bool = True, **clients: Any) -> list[Report]:
    """One report per topic, with one research model loaded once; sync (Jupyter-safe). Each report goes to
    `cfg.paths.reports/<slug>/`, or, for a single topic, to `out` when given. `clients` may pass ready objects
    (client, writer, judge, toolbox: tests and notebooks that already hold them)."""
    from wdlib.aio import run_sync

    topics = list(topics)
    if out is not None and len(topics) != 1:
        raise ReportError("out= names one report's folder: give exactly one topic")
    dirs = [Path(out)] if out is not None else [cfg.paths.reports / slugify(t) for t in topics]
    return run_sync(_write_all(cfg, topics, dirs, model, clients, progress))


def main(argv: list[str] | None = None) -> int:
    from wdlib import params

    ap = argparse.ArgumentParser(prog="python -m wdlib.report",
                                 description="Research a topic with the agent and write a cited, checked report.")
    ap.add_argument("topic", nargs="*", help="the question or topic (quote it, or give it as several words)")
    ap.add_argument("--params", default="smoke.yaml", help="params YAML (default params/smoke.yaml)")
    ap.add_argument("--model", default=None, help="base | sft | dapo | latest | eval.extra_models key | HF id/path "
                                                  "(default: params report.model)")
    ap.add_argument("--out", default=None, help="folder for this report (default outputs/<run>/reports/<slug>/)")
    args = ap.parse_args(argv)
    try:
        cfg = params.load(args.params)
        report = write_reports(cfg, [" ".join(args.topic)], model=args.model, out=args.out)[0]
    except (ParamsError, ReportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {report.html}\n{report.summary()}")
    for problem in report.problems:
        print(f"missing: {problem}", file=sys.stderr)
    return 1 if report.problems else 0
