"""Data synthesis (notebook 01): crawl → CrawlQA; seeds → E2HQA; teacher trajectories with rejection sampling
through the filter funnel; the scripted format demonstrations of CPU-scale runs.

    crawl         the site crawl (`CrawledPage`, `crawl`)
    qa            checks both generators apply, dedupe, the train / held-out split
    crawlqa       CrawlQA: LLM and template generators, validation
    e2hqa         E2HQA: entity → description rewrites, seeds
    trajectories  teacher trajectories with rejection sampling
    filters       the funnel: validity → correctness → quality
    demos         scripted format demonstrations
    stages        notebook 01's steps over the run folder

This module only re-exports, so `from wdlib import synthesis; synthesis.crawl_site(...)` works.
"""

from wdlib.synthesis.crawl import CrawledPage, CrawlResult, SiteScope, crawl, load_crawl, page_from_fetch
from wdlib.synthesis.crawlqa import (QA_TYPES, crawlqa_prompt, crawlqa_tasks, generate_crawlqa, json_constraint, llm_qa,
                                     template_qa, validate_qa)
from wdlib.synthesis.demos import scripted_query, scripted_trajectories, write_format_demos
from wdlib.synthesis.e2hqa import (check_rewrite, describe, e2hqa_seeds, encyclopedia_seed, harden, harden_seeds,
                                   load_seeds, pick_entities, template_rewrite)
from wdlib.synthesis.filters import arun_funnel, funnel_counts, run_funnel
from wdlib.synthesis.qa import answer_in_text, dedupe, leaks, normalize, split_eval
from wdlib.synthesis.stages import (crawl_site, crawlqa_pairs, e2hqa_pairs, external_funnel, teacher_trajectories,
                                    write_qa)
from wdlib.synthesis.trajectories import sample_trajectories

__all__ = [
    "CrawledPage", "CrawlResult", "SiteScope", "crawl", "load_crawl", "page_from_fetch",
    "QA_TYPES", "crawlqa_prompt", "crawlqa_tasks", "generate_crawlqa", "json_constraint", "llm_qa", "template_qa",
    "validate_qa",
    "scripted_query", "scripted_trajectories", "write_format_demos",
    "check_rewrite", "describe", "e2hqa_seeds", "encyclopedia_seed", "harden", "harden_seeds", "load_seeds",
    "pick_entities", "template_rewrite",
    "arun_funnel", "funnel_counts", "run_funnel",
    "answer_in_text", "dedupe", "leaks", "normalize", "split_eval",
    "crawl_site", "crawlqa_pairs", "e2hqa_pairs", "external_funnel", "teacher_trajectories", "write_qa",
    "sample_trajectories",
]
