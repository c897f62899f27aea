"""Notebook 01's steps, each reading and writing its files in the run folder (`cfg.paths`) and reusing what an
earlier run of the same step left there, so a re-run costs nothing it already did:

    pages = crawl_site(cfg, toolbox)                                   crawl.jsonl
    crawl_qa, report = crawlqa_pairs(cfg, pages, teacher)              qa_crawlqa.jsonl (+ report)
    e2h_qa, report = e2hqa_pairs(cfg, toolbox, teacher)                qa_e2hqa.jsonl (+ report)
    graded, episodes, report = graded_pairs(cfg, toolbox)              qa_graded.jsonl, graded_episodes.jsonl (+ report)
    splits = write_qa(cfg, crawl_qa + e2h_qa, graded)                  qa.jsonl, qa_eval.jsonl, qa_dev.jsonl, qa_dapo.jsonl
    trajectories, funnel = teacher_trajectories(cfg, splits["train"], teacher, toolbox, episodes=episodes)
                                                                       trajectories.jsonl, funnel.json, sft_data.jsonl
    external, funnel = external_funnel(cfg, judge_client)              funnel_external.json

(all async but `write_qa` and `external_funnel`).
"""

from __future__ import annotations

import json
from typing import Any

from wdlib.config import Config
from wdlib.synthesis.crawl import CrawledPage, crawl, load_crawl
from wdlib.synthesis.crawlqa import generate_crawlqa
from wdlib.synthesis.e2hqa import e2hqa_seeds, harden_seeds
from wdlib.synthesis.filters import arun_funnel, funnel_counts, run_funnel
from wdlib.synthesis.graded import SPLITS, graded_qa
from wdlib.synthesis.qa import dedupe, split_eval
from wdlib.synthesis.trajectories import sample_trajectories
from wdlib.trajectory import QAPair, Trajectory, load_qa, load_trajectories, load_webdancer, write_jsonl


async def crawl_site(cfg: Config, toolbox: Any, *, progress: bool = True) -> list[CrawledPage]:
    """Crawl per `cfg.synthesis.crawlqa` into `cfg.paths.crawl` (JSONL, one page per line); an existing complete
    crawl with the same settings is reused. No crawl when CrawlQA is off (`num_qa: 0`)."""
    c = cfg.synthesis.crawlqa
    if c.num_qa == 0:
        return []
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


async def graded_pairs(cfg: Config, toolbox: Any, *,
                       progress: bool = True) -> tuple[dict[str, list[QAPair]], list[Trajectory], dict | None]:
    """Graded QA over the local web (`wdlib.synthesis.graded`, per `synthesis.graded`): ({split: pairs}, the teacher
    episodes of the SFT split, report). Written to `cfg.paths.graded` (each pair's split in its provenance),
    `cfg.paths.graded_episodes` and the report; reused when a run with the same settings wrote them (report None).
    Off (`candidates_per_level: 0`): empty splits."""
    g = cfg.synthesis.graded
    if not g.candidates_per_level:
        return {split: [] for split in SPLITS}, [], None
    if cfg.web.mode != "local":
        raise ValueError("synthesis.graded reads the local web's pages: it needs web.mode: local (set "
                         "synthesis.graded.candidates_per_level: 0 for a live web)")
    from wdlib.web import LocalWeb

    settings = {**g.model_dump(), "seed": cfg.run.seed, "prompt": cfg.agent.prompt, "sites": cfg.web.sites,
                "encyclopedia_max_pages": cfg.web.encyclopedia_max_pages, "top_k": cfg.web.top_k,
                "visit_evidence_tokens": cfg.web.visit_evidence_tokens}
    stamp = cfg.paths.graded.with_suffix(".settings.json")
    if cfg.paths.graded.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings:
        qa = load_qa(cfg.paths.graded)
        print(f"reusing {len(qa)} graded QA pairs from {cfg.paths.graded.name}")
        return ({split: [q for q in qa if q.provenance.get("split") == split] for split in SPLITS},
                load_trajectories(cfg.paths.graded_episodes), None)
    pages = LocalWeb.load(cfg.web).pages
    splits, episodes, report = await graded_qa(cfg, toolbox, pages, progress=progress)
    for split, pairs in splits.items():
        for q in pairs:
            q.provenance["split"] = split
    write_jsonl(cfg.paths.graded, [q for split in SPLITS for q in splits[split]])
    write_jsonl(cfg.paths.graded_episodes, episodes)
    cfg.paths.graded_report.write_text(json.dumps(report, indent=1))
    stamp.write_text(json.dumps(settings))
    return splits, episodes, report


def write_qa(cfg: Config, qa: list[QAPair],
             graded: dict[str, list[QAPair]] | None = None) -> dict[str, list[QAPair]]:
    """The QA files of the run, {"all", "train", "eval", "dev", "dapo"}: CrawlQA + E2HQA pairs deduplicated with
    `synthesis.eval_fraction` held out (stratified by source), and graded QA by its own split. `cfg.paths.qa`
    (training questions: the teacher samples them, SFT learns from their kept trajectories), `qa_eval` (the
    local-web benchmark), `qa_dev` (development questions, for choosing settings), `qa_dapo` (DAPO's questions)."""
    graded = graded or {split: [] for split in SPLITS}
    all_qa = dedupe(qa)
    train_qa, eval_qa = split_eval(all_qa, cfg.synthesis.eval_fraction, cfg.run.seed)
    out = {"all": all_qa + [q for split in SPLITS for q in graded[split]], "train": train_qa + graded["sft"],
           "eval": eval_qa + graded["eval"], "dev": graded["dev"], "dapo": graded["dapo"]}
    for key, path in (("train", cfg.paths.qa), ("eval", cfg.paths.qa_eval), ("dev", cfg.paths.qa_dev),
                      ("dapo", cfg.paths.qa_dapo)):
        write_jsonl(path, out[key])
    return out


async def teacher_trajectories(cfg: Config, train_qa: list[QAPair], teacher: Any, toolbox: Any,
                               judge_client: Any = None, *,
                               episodes: list[Trajectory] = ()) -> tuple[list[Trajectory], dict[str, Any]]:
    """Teacher trajectories through the funnel: the teacher model samples (with rejection sampling) the first
    `trajectories.max_questions` training questions that have no scripted `episodes` (graded QA's grounded teacher);
    both go to `cfg.paths.trajectories`, the funnel's counts to `cfg.paths.funnel`, the kept ones to
    `cfg.paths.sft_data` (the SFT set). Returns (every trajectory, funnel counts)."""
    scripted = {t.qa_id for t in episodes}
    limit = cfg.trajectories.max_questions
    sampled = [q for q in train_qa if q.id not in scripted]
    questions = sampled[:limit] if limit else sampled
    trajectories = list(await sample_trajectories(questions, teacher, toolbox, cfg, cfg.paths.trajectories,
                                                  judge_client=judge_client)) if questions else []
    if episodes:
        episodes = [Trajectory.from_dict(t.to_dict()) for t in episodes]  # the funnel writes its verdicts on them
        await arun_funnel(episodes, cfg, judge_client, progress=False)
        trajectories += episodes
        on_disk = load_trajectories(cfg.paths.trajectories)
        done = {t.id for t in on_disk}
        write_jsonl(cfg.paths.trajectories, on_disk + [t for t in episodes if t.id not in done])
    funnel = funnel_counts(trajectories)
    kept = [t for t in trajectories if t.filters.get("kept")]
    funnel["questions"] = len(questions) + len(scripted)
    funnel["questions_with_kept"] = len({t.qa_id for t in kept})
    funnel["samples_per_question"] = cfg.trajectories.samples_per_question
    funnel["sources"] = {source: {"input": sum(t.source == source for t in trajectories),
                                  "kept": sum(t.source == source for t in kept)}
                         for source in sorted({t.source for t in trajectories})}
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
