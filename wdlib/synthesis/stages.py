"""Notebook 01's steps, each reading and writing its files in the run folder (`cfg.paths`) and reusing what an
earlier run of the same step left there, so a re-run costs nothing it already did:

    pages = crawl_site(cfg, toolbox)                                   crawl.jsonl
    crawl_qa, report = crawlqa_pairs(cfg, pages, teacher)              qa_crawlqa.jsonl (+ report)
    e2h_qa, report = e2hqa_pairs(cfg, toolbox, teacher)                qa_e2hqa.jsonl (+ report)
    all_qa, train_qa, eval_qa = write_qa(cfg, crawl_qa + e2h_qa)       qa.jsonl, qa_eval.jsonl
    trajectories, funnel = teacher_trajectories(cfg, train_qa, ...)    trajectories.jsonl, funnel.json, sft_data.jsonl
    external, funnel = external_funnel(cfg, judge_client)              funnel_external.json

(all async but `write_qa` and `external_funnel`; the format demonstrations are `wdlib.synthesis.demos`).
"""

from __future__ import annotations

import json
from typing import Any

from wdlib.config import Config
from wdlib.synthesis.crawl import CrawledPage, crawl, load_crawl
from wdlib.synthesis.crawlqa import generate_crawlqa
from wdlib.synthesis.e2hqa import e2hqa_seeds, harden_seeds
from wdlib.synthesis.filters import funnel_counts, run_funnel
from wdlib.synthesis.qa import dedupe, split_eval
from wdlib.synthesis.trajectories import sample_trajectories
from wdlib.trajectory import QAPair, Trajectory, load_qa, load_webdancer, write_jsonl


async def crawl_site(cfg: Config, toolbox: Any, *, progress: bool = True) -> list[CrawledPage]:
    """Crawl per `cfg.synthesis.crawlqa` into `cfg.paths.crawl` (JSONL, one page per line); an existing complete
    crawl with the same settings is reused."""
    c = cfg.synthesis.crawlqa
    path = cfg.paths.crawl
    settings = {"roots": c.roots, "max_depth": c.max_depth, "max_pages": c.max_pages, "allow": c.allow,
                "deny": c.deny}
    stamp = path.with_suffix(".settings.json")
    if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return load_crawl(path)
    result = await crawl(toolbox.fetch, c.roots, max_depth=c.max_depth, max_pages=c.max_pages, allow=c.allow,
                         deny=c.deny, concurrency=c.concurrency, delay_s=c.delay_s, progress=progress)
    write_jsonl(path, result.pages)
    stamp.write_text(json.dumps(settings))
    if not result.pages:
        raise RuntimeError(f"the crawl from {c.roots} kept no page; errors: {dict(list(result.errors.items())[:5])}")
    return result.pages


def _reuse(path) -> list[QAPair] | None:
    if not path.is_file():
        return None
    qa = load_qa(path)
    print(f"reusing {len(qa)} QA pairs from {path.name}")
    return qa


def _write(path, report_path, qa: list[QAPair], report: dict) -> None:
    write_jsonl(path, qa)
    report_path.write_text(json.dumps(report, indent=1))


async def crawlqa_pairs(cfg: Config, pages: list[CrawledPage],
                        teacher: Any) -> tuple[list[QAPair], dict | None]:
    """CrawlQA from the crawl (`wdlib.synthesis.crawlqa`) into `cfg.paths.crawlqa` with its report; the pairs of an
    earlier run are reused (report None)."""
    qa = _reuse(cfg.paths.crawlqa)
    if qa is not None:
        return qa, None
    qa, report = await generate_crawlqa(pages, cfg, teacher)
    _write(cfg.paths.crawlqa, cfg.paths.crawlqa_report, qa, report)
    return qa, report


async def e2hqa_pairs(cfg: Config, toolbox: Any, teacher: Any) -> tuple[list[QAPair], dict | None]:
    """E2HQA from the configured seeds (`wdlib.synthesis.e2hqa`) into `cfg.paths.e2hqa` with its report; the pairs
    of an earlier run are reused (report None)."""
    qa = _reuse(cfg.paths.e2hqa)
    if qa is not None:
        return qa, None
    qa, report = await harden_seeds(await e2hqa_seeds(cfg, toolbox), toolbox, cfg, teacher)
    _write(cfg.paths.e2hqa, cfg.paths.e2hqa_report, qa, report)
    return qa, report


def write_qa(cfg: Config, qa: list[QAPair]) -> tuple[list[QAPair], list[QAPair], list[QAPair]]:
    """(all, train, held out): the pairs deduplicated, `synthesis.eval_fraction` held out (stratified by source),
    written to `cfg.paths.qa` (training questions) and `cfg.paths.qa_eval` (the local-web benchmark)."""
    all_qa = dedupe(qa)
    train_qa, eval_qa = split_eval(all_qa, cfg.synthesis.eval_fraction, cfg.run.seed)
    write_jsonl(cfg.paths.qa, train_qa)
    write_jsonl(cfg.paths.qa_eval, eval_qa)
    return all_qa, train_qa, eval_qa


async def teacher_trajectories(cfg: Config, train_qa: list[QAPair], teacher: Any, toolbox: Any,
                               judge_client: Any = None) -> tuple[list[Trajectory], dict[str, Any]]:
    """Teacher trajectories with rejection sampling over the first `trajectories.max_questions` training questions
    (`cfg.paths.trajectories`), the funnel's counts (`cfg.paths.funnel`) and the kept ones, the SFT set
    (`cfg.paths.sft_data`). Returns (every trajectory, funnel counts)."""
    limit = cfg.trajectories.max_questions
    questions = train_qa[:limit] if limit else train_qa
    trajectories = await sample_trajectories(questions, teacher, toolbox, cfg, cfg.paths.trajectories,
                                             judge_client=judge_client)
    funnel = funnel_counts(trajectories)
    kept = [t for t in trajectories if t.filters.get("kept")]
    funnel["questions"] = len(questions)
    funnel["questions_with_kept"] = len({t.qa_id for t in kept})
    funnel["samples_per_question"] = cfg.trajectories.samples_per_question
    cfg.paths.funnel.write_text(json.dumps(funnel, indent=1))
    write_jsonl(cfg.paths.sft_data, kept)
    return trajectories, funnel


def external_funnel(cfg: Config, judge_client: Any = None) -> tuple[list[Trajectory], dict[str, Any] | None]:
    """WebDancer's released trajectories (`trajectories.external`) through our funnel, a check of the filters on
    trajectories known to be good (counts in `cfg.paths.funnel_external`). The SFT stage reads these files itself."""
    external = []
    for path in cfg.trajectories.external:
        items = load_webdancer(cfg.resolve_path(path))
        external += items
        print(f"{len(items)} external trajectories from {path}")
    if not external:
        return external, None
    _, counts = run_funnel(external, cfg, judge_client)
    cfg.paths.funnel_external.write_text(json.dumps(counts, indent=1))
    return external, counts
