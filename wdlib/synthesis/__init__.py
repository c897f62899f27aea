"""Data synthesis (notebook 01): crawl → CrawlQA; seeds → E2HQA; teacher trajectories with rejection sampling
through the filter funnel; and, at CPU scale, graded QA over the local web with grounded teacher episodes.

    crawl         the site crawl (`CrawledPage`, `crawl`)
    qa            checks both generators apply, dedupe, the train / held-out split
    crawlqa       CrawlQA: LLM and template generators, validation
    e2hqa         E2HQA: entity → description rewrites, seeds
    trajectories  teacher trajectories with rejection sampling
    self_samples  the same from the SFT policy itself: notebook 03's rejection round
    filters       the funnel: validity → correctness → quality
    facts         facts read off local-web pages; questions about them at three levels
    graded        graded QA: grounded teacher episodes verify each question; the split by answer page
    stages        notebook 01's steps over the run folder

This module only re-exports, so `from wdlib import synthesis; synthesis.crawl_site(...)` works.
"""

from wdlib.synthesis.crawl import CrawledPage, CrawlResult, SiteScope, crawl, load_crawl, page_from_fetch
from wdlib.synthesis.crawlqa import (QA_TYPES, crawlqa_prompt, crawlqa_tasks, generate_crawlqa, json_constraint, llm_qa,
                                     template_qa, validate_qa)
from wdlib.synthesis.facts import Fact, chain_question, description, docs_facts, encyclopedia_facts, question
from wdlib.synthesis.graded import Candidate, candidates, graded_qa, split_by_answer_page, teacher_episode
from wdlib.synthesis.e2hqa import (check_rewrite, describe, e2hqa_seeds, encyclopedia_seed, harden, harden_seeds,
                                   load_seeds, pick_entities, template_rewrite)
from wdlib.synthesis.filters import arun_funnel, funnel_counts, run_funnel
from wdlib.synthesis.qa import answer_in_text, dedupe, leaks, normalize, split_eval
from wdlib.synthesis.stages import (crawl_site, crawlqa_pairs, e2hqa_pairs, external_funnel, graded_pairs,
                                    teacher_trajectories, write_qa)
from wdlib.synthesis.self_samples import asample_policy, sample_policy, sampling_config
from wdlib.synthesis.trajectories import sample_trajectories

__all__ = [
    "CrawledPage", "CrawlResult", "SiteScope", "crawl", "load_crawl", "page_from_fetch",
    "QA_TYPES", "crawlqa_prompt", "crawlqa_tasks", "generate_crawlqa", "json_constraint", "llm_qa", "template_qa",
    "validate_qa",
    "Fact", "chain_question", "description", "docs_facts", "encyclopedia_facts", "question",
    "Candidate", "candidates", "graded_qa", "split_by_answer_page", "teacher_episode",
    "check_rewrite", "describe", "e2hqa_seeds", "encyclopedia_seed", "harden", "harden_seeds", "load_seeds",
    "pick_entities", "template_rewrite",
    "arun_funnel", "funnel_counts", "run_funnel",
    "answer_in_text", "dedupe", "leaks", "normalize", "split_eval",
    "crawl_site", "crawlqa_pairs", "e2hqa_pairs", "external_funnel", "graded_pairs", "teacher_trajectories",
    "write_qa",
    "sample_trajectories", "asample_policy", "sample_policy", "sampling_config",
]
