"""Params schema: one YAML drives every notebook and stage. This module is the schema; `wdlib.params` reads a file
into it. Imports nothing from wdlib, so every module can stand on it.

A params file is a YAML mapping whose top-level keys are the sections below (they are also the notebooks'
papermill parameters). `extends: other.yaml` (relative to the file) merges the file over another, so shared
settings live in one place. Defaults in the dataclass-like models below are the paper's settings where it gives
them. Unknown keys, wrong types (no coercion: `true` is not 1, "8" is not 8), values out of range, settings that
contradict each other, duplicate YAML keys, key literals (params hold env-var *names*, never keys) and missing files
raise `ParamsError` (defined here, raised by `wdlib.params`) naming the file that holds the value and the key path,
e.g. `params/7b.yaml: dapo.epsilon_hihg: unknown key`; a message never shows a value that looks like a key.
`cfg.paths` (`RunPaths`) names every file and folder of the run folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_DIR = REPO_ROOT / "params"
SECTIONS = ("run", "models", "agent", "web", "synthesis", "trajectories", "filters", "judge", "rewards", "sft",
            "dapo", "eval", "report", "wandb")
SAMPLES_DIR = "../shared/data/webdancer-samples"  # WebDancer's released samples (relative to the repo root)
SAMPLE_QA = f"{SAMPLES_DIR}/sample_qa.jsonl"
SAMPLE_TRAJECTORIES = f"{SAMPLES_DIR}/sample_traj.jsonl"
SITES = ("python-docs", "sqlite-docs", "postgresql-docs", "django-docs", "wikipedia")  # = wdlib.sites.KNOWN_SITES


class ParamsError(ValueError):
    """A params file that cannot be used; the message names the file and the key path."""


def cache_dir() -> Path:
    """Shared cache (embedded model, local web builds): $WDLIB_CACHE or ~/.cache/wdlib."""
    root = Path(os.environ.get("WDLIB_CACHE", Path.home() / ".cache" / "wdlib"))
    root.mkdir(parents=True, exist_ok=True)
    return root


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


# ---------------------------------------------------------------- run
class RunParams(Section):
    name: str = "smoke"
    output_dir: str = "outputs"  # relative paths are taken from the repo root, whatever the working directory
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @property
    def dir(self) -> Path:
        base = Path(self.output_dir)
        return (base if base.is_absolute() else REPO_ROOT / base) / self.name


# ---------------------------------------------------------------- models
class ModelSpec(Section):
    """One model. `name` is an HF id or local path, or `embedded:smollm2-135m` (shipped offline)."""
    name: str = "embedded:smollm2-135m"
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    base_url: str | None = None  # OpenAI-compatible endpoint (vLLM serve, OpenAI, llama.cpp server...)
    api_key_env: str | None = None  # name of the environment variable holding the key; never the key itself
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_new_tokens: int = Field(512, gt=0)  # per assistant turn
    context_length: int = Field(32768, gt=0)
    concurrency: int = Field(8, gt=0)
    timeout_s: float = Field(120.0, gt=0)
    reasoning: bool = False  # a reasoning model whose reasoning_content becomes the <think> block (long CoT)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)  # in-process vLLM only
    # In-process transformers: key/values kept between calls (shared prompt, earlier turns), in tokens; 0 = none.
    # ~46 kB per token for SmolLM2-135M fp32, ~57 kB for Qwen2.5-7B bf16. vLLM has its own prefix cache.
    kv_cache_tokens: int = Field(32768, ge=0)
    tensor_parallel_size: int = Field(1, gt=0)
    extra: dict[str, Any] = Field(default_factory=dict)  # passed through to the backend's request/constructor


class AgentParams(Section):
    """How every stage talks to the agent: the prompt its episodes start from (`wdlib.react.PROMPT_STYLES`)."""
    prompt: Literal["ours", "compact", "webdancer"] = "ours"
    # webdancer: the authors' exact prompts, rebuilt at run time from their released trajectories (read, never copied)
    webdancer_prompt_file: str = SAMPLE_TRAJECTORIES


class ModelsParams(Section):
    policy: ModelSpec = Field(default_factory=ModelSpec)  # the model trained (SFT → DAPO) and evaluated
    teacher: ModelSpec = Field(default_factory=ModelSpec)  # writes QA pairs and teacher trajectories
    judge: ModelSpec | None = None  # LLM judge; None → rule-based judging
    summarizer: ModelSpec | None = None  # visit's evidence extractor; None → extractive BM25 fallback


# ---------------------------------------------------------------- web and tools
class WebParams(Section):
    mode: Literal["local", "live", "replay"] = "local"
    # live: record every fetch, search and summarizer call into this folder (a WARC snapshot); replay: serve them
    # from it, no network, no keys (wdlib.snapshot). Relative paths are relative to the repo root.
    snapshot: str | None = None
    search_backend: Literal["local", "serpapi"] = "local"
    sites: list[Literal[SITES]] = Field(default_factory=lambda: ["python-docs", "wikipedia"], min_length=1)
    cache_dir: str | None = None  # None → $WDLIB_CACHE or ~/.cache/wdlib
    encyclopedia_max_pages: int | None = Field(None, gt=0)  # None → all summaries
    top_k: int = Field(10, gt=0)
    max_queries_per_call: int = Field(5, gt=0)
    extractor: Literal["trafilatura", "newspaper"] = "trafilatura"
    # Pages are parsed in this many worker processes (None: one per CPU core; 0: in the calling process, one at a
    # time); a parse that crashes or runs past extract_timeout_s is stopped and the visit reports the error.
    extract_workers: int | None = Field(None, ge=0)
    extract_timeout_s: float = Field(60.0, gt=0)
    visit_max_page_chars: int = Field(60000, gt=0)  # page text handed to the summarizer
    visit_evidence_tokens: int = Field(400, gt=0)  # extractive fallback budget
    visit_max_urls: int = Field(5, gt=0)
    live_timeout_s: float = Field(20.0, gt=0)
    live_max_bytes: int = Field(5_000_000, gt=0)
    live_allow_private: bool = False  # let live mode fetch private/loopback hosts (tests against a loopback server)
    serpapi_key_env: str = "SERPAPI_API_KEY"
    tool_latency_s: float = Field(0.0, ge=0)  # added per tool call; for benchmarks


# ---------------------------------------------------------------- data synthesis
class CrawlQAParams(Section):
    roots: list[str] = Field(default_factory=lambda: ["https://docs.python.org/3/library/index.html"])
    max_depth: int = Field(2, ge=0)
    max_pages: int = Field(200, gt=0)
    allow: list[str] = Field(default_factory=list)  # regexes; empty → the root's site
    deny: list[str] = Field(default_factory=list)
    concurrency: int = Field(4, gt=0)
    num_qa: int = Field(60, ge=0)
    types: list[Literal["COUNT", "MULTI-HOP", "INTERSECTION"]] = Field(
        default_factory=lambda: ["COUNT", "MULTI-HOP", "INTERSECTION"])
    max_answer_words: int = Field(12, gt=0)
    # llm: the teacher writes QA (the paper); template: deterministic QA read off the crawl graph (works with any
    # teacher, even a 135M one); both: the teacher's valid pairs first, templates fill up to num_qa.
    generator: Literal["llm", "template", "both"] = "llm"
    llm_calls: int | None = Field(None, gt=0)  # teacher prompts; None → 2 × num_qa (invalid replies are dropped)
    max_page_chars: int = Field(3000, gt=0)  # page text shown to the teacher per page
    max_new_tokens: int = Field(256, gt=0)
    temperature: float = Field(0.7, ge=0)
    delay_s: float = Field(0.0, ge=0)  # politeness: pause after each request (per concurrent worker)


class E2HQAParams(Section):
    seed_file: str | None = SAMPLE_QA  # None → seeds from encyclopedia
    seed_roots: list[str] = Field(default_factory=list)  # encyclopedia seeds: crawl these; [] → local encyclopedia
    num_seeds: int = Field(40, ge=0)
    hops: int = Field(2, ge=0)
    min_hops: int = Field(1, ge=0)  # keep a hardened question only if this many hops succeeded (<= hops)
    rewriter: Literal["llm", "template"] = "llm"  # llm falls back to the template when its rewrite is unusable
    max_description_words: int = Field(25, gt=0)
    max_new_tokens: int = Field(160, gt=0)  # the teacher's rewritten question


class GradedParams(Section):  # graded QA over the local web (`wdlib.synthesis.graded`), CPU scale; 0 = off
    candidates_per_level: int = Field(0, ge=0)  # questions tried per level (level 3: at most this many chains)
    eval_per_level: int = Field(30, ge=0)  # held out (qa_eval.jsonl, the local benchmark), per level at least
    dev_per_level: int = Field(10, ge=0)  # development set (qa_dev.jsonl), for choosing settings
    dapo_per_level: int = Field(10, ge=0)  # DAPO's questions (qa_dapo.jsonl), never seen in SFT
    sft_questions: int | None = Field(None, gt=0)  # teacher episodes kept for SFT (None: every one left)
    concurrency: int = Field(8, gt=0)


class SynthesisParams(Section):
    crawlqa: CrawlQAParams = Field(default_factory=CrawlQAParams)
    e2hqa: E2HQAParams = Field(default_factory=E2HQAParams)
    graded: GradedParams = Field(default_factory=GradedParams)
    eval_fraction: float = Field(0.1, ge=0, lt=1)  # of CrawlQA + E2HQA, held out as the local-web evaluation set


class TrajectoriesParams(Section):
    samples_per_question: int = Field(5, gt=0)  # rejection sampling: stop at the first that passes the filters
    max_turns: int = Field(12, gt=0)
    max_total_tokens: int = Field(32768, gt=0)
    concurrency: int = Field(16, gt=0)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    cot: Literal["short", "long"] = "short"
    max_questions: int | None = Field(None, gt=0)
    external: list[str] = Field(default_factory=lambda: [SAMPLE_TRAJECTORIES])


class FiltersParams(Section):
    ngram: int = Field(10, gt=0)
    max_ngram_repeats: int = Field(4, gt=0)
    require_supported_answer: bool = True
    support_min_recall: float = Field(0.5, ge=0, le=1)  # share of the answer's content words seen in tool responses
    llm_quality_check: bool = False  # LLM review of non-redundancy, goal alignment, logic (uses models.judge)
    rejudge: bool = False  # judge again trajectories that already carry a verdict (e.g. WebDancer's released ones)


JudgeMode = Literal["rules", "llm", "equivalence"]  # see wdlib.judge; llm and equivalence need a judge model


class JudgeParams(Section):
    mode: JudgeMode = "rules"  # rules = GAIA match or F1 >= f1_threshold; llm: graded; equivalence: the paper's
    f1_threshold: float = Field(0.6, ge=0, le=1)
    rules_gold_in_answer: bool = False  # a verbose answer holding the whole gold is right (67/100 released ones)
    temperature: float = Field(0.0, ge=0)  # LLM judge sampling: greedy, so verdicts are repeatable
    max_new_tokens: int = Field(1024, gt=0)


class RewardsParams(Section):
    format_weight: float = 0.1
    answer_weight: float = 0.9


# ---------------------------------------------------------------- training
class RejectionParams(Section):
    """A rejection-sampling round from the SFT policy itself: it samples the SFT questions and keeps what passes the
    teacher's funnel (`wdlib.synthesis.self_samples`), then trains the SFT checkpoint on its own kept samples + the
    teacher's (`wdlib.sft.train_second_pass`)."""
    samples_per_question: int = Field(0, ge=0)  # 0: no round; N: up to N samples, stop at the first that passes
    max_questions: int | None = Field(None, gt=0)  # the first n SFT questions (None: all)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    num_train_epochs: float = Field(1.0, gt=0)  # of the second pass, from the first pass's checkpoint
    max_steps: int = -1  # of the second pass (> 0 overrides num_train_epochs)


class SFTParams(Section):
    backend: Literal["hf", "unsloth"] = "hf"
    init: str | None = None  # None → models.policy
    learning_rate: float = Field(1e-5, gt=0)
    num_train_epochs: float = Field(2.0, gt=0)
    max_steps: int = -1
    per_device_train_batch_size: int = Field(1, gt=0)
    gradient_accumulation_steps: int = Field(8, gt=0)
    max_length: int = Field(32768, gt=0)
    # over max_length: "observation" shortens tool responses from the last one backwards (the final answer stays),
    # then cuts at a turn boundary, else drops; "drop" drops. Every case is counted in the stage's stats.
    truncation: Literal["observation", "drop"] = "observation"
    packing: bool = False
    lora: bool = False
    lora_r: int = Field(64, gt=0)
    lora_alpha: int = Field(128, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    logging_steps: int = Field(1, gt=0)
    save_steps: int = Field(200, gt=0)
    save_total_limit: int | None = Field(2, gt=0)  # intermediate checkpoints kept for resuming
    resume: bool = True  # continue from the latest checkpoint in <run_dir>/checkpoints/sft-trainer if any
    gradient_checkpointing: bool = True
    num_processes: int = Field(1, gt=0)
    accelerate_config: str | None = "accelerate/zero3.yaml"  # relative to params/
    include_external: bool = True  # train on imported trajectories (WebDancer's samples) too
    reprompt_external: bool = True  # give them the system/user prompts the policy is run with (same tools)
    max_examples: int | None = Field(None, gt=0)  # a seeded random subset after fitting (CPU smoke runs)
    max_external: int | None = Field(None, gt=0)  # a seeded random subset of each external file (CPU smoke runs)
    trainer_kwargs: dict[str, Any] = Field(default_factory=dict)  # any other trl.SFTConfig argument, passed through
    checkpoint: str = "sft"  # the folder under checkpoints/ (and the stats file) this pass writes
    policy_samples: bool = False  # train on the SFT policy's own kept samples too (`sft.rejection`'s file)
    rejection: RejectionParams = Field(default_factory=RejectionParams)


class DAPOParams(Section):
    init: str | None = "sft"  # "sft" → the run's SFT checkpoint (policy if missing); a name/path; None → policy
    num_generations: int = Field(16, gt=1)  # rollouts per question (a group)
    per_device_train_batch_size: int = Field(16, gt=0)  # rollouts; × grad. accumulation: a multiple of num_generations
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(1e-6, gt=0)
    max_steps: int = Field(100, gt=0)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    epsilon: float = Field(0.2, ge=0)
    epsilon_high: float = Field(0.28, ge=0)  # >= epsilon (clip-higher)
    beta: float = Field(0.0, ge=0)
    loss_type: Literal["dapo", "grpo", "bnpo", "dr_grpo"] = "dapo"
    max_turns: int = Field(8, gt=0)
    max_completion_length: int = Field(8192, gt=0)  # model + observation tokens per trajectory
    max_new_tokens_per_turn: int = Field(1024, gt=0)
    dynamic_sampling: bool = True  # drop uninformative groups, roll out more questions instead
    # "accuracy" (DAPO's rule): a group whose answers are all right or all wrong is dropped, whatever its format or
    # length rewards; "reward": only a group whose total rewards are all equal is dropped (format-only differences,
    # blown up to unit advantages by the group's std, then drive the update)
    dynamic_sampling_by: Literal["accuracy", "reward"] = "accuracy"
    max_refills: int = Field(3, ge=0)  # extra rollout rounds per step at most; then train on what was kept
    # Groups rolled out with each step's own, in the same generation call (verl's DAPO: a generation batch larger than
    # the training batch): one wide batch instead of refill rounds one after the other; the first informative win.
    # For GPUs: on 2 CPU cores generation is compute-bound and 24 rollouts in one call took ~2.5x the time of 8.
    oversample_groups: int = Field(0, ge=0)
    overlong_buffer: int = Field(1024, ge=0)  # soft punishment over the last `overlong_buffer` model tokens
    overlong_max_model_tokens: int = Field(4096, gt=0)  # model tokens (observations excluded) for penalty -1
    mask_truncated_completions: bool = True  # trajectories cut by a token/turn limit without EOS: out of the loss
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    rollout_concurrency: int = Field(64, gt=0)  # trajectories in flight (also the largest generate batch)
    rollout_dtype: Literal["same", "bfloat16", "float16"] = "same"  # transformers rollouts: a synced copy in this dtype
    save_steps: int = Field(50, gt=0)
    save_total_limit: int | None = Field(2, gt=0)  # intermediate checkpoints kept for resuming (each: weights + Adam)
    logging_steps: int = Field(1, gt=0)
    gradient_checkpointing: bool = True
    num_processes: int = Field(1, gt=0)
    accelerate_config: str | None = "accelerate/zero3.yaml"
    max_questions: int | None = Field(None, gt=0)  # training questions taken from qa.jsonl (None → all)
    fallback_qa: str | None = SAMPLE_QA  # when <run_dir>/qa.jsonl is absent
    trainer_kwargs: dict[str, Any] = Field(default_factory=dict)  # any other trl.GRPOConfig argument, passed through


class AuditJudge(Section):  # eval.judges: one more judge of every answer; the summary reports the judges' agreement
    name: str = Field(pattern=r"^[A-Za-z0-9._+-]+$")  # not "scoring": the judge whose verdicts make the scores
    mode: JudgeMode = "equivalence"
    model: ModelSpec | None = None  # None → models.judge


class EvalParams(Section):
    benchmarks: list[Literal["local", "webwalkerqa", "gaia"]] = Field(default_factory=lambda: ["gaia", "webwalkerqa"])
    gaia_path: str | None = None  # local GAIA validation folder/file; None → hub (needs HF_TOKEN, online)
    gaia_text_only: bool = True  # drop questions with an attached file
    gaia_task_ids: str | None = None  # file of task_ids (e.g. WebThinker's 103-question text-only list) to keep
    webwalkerqa_path: str | None = "../shared/data/webwalkerqa/test.json"  # None → hub
    local_path: str | None = None  # None → <run_dir>/qa_eval.jsonl (the held-out synthesized QA of notebook 01)
    runs: int = Field(3, gt=0)
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)  # paper: 1.1 for reasoning models (QwQ), 1.0 for instruct models
    max_turns: int = Field(20, gt=0)
    # An episode ends after this many malformed turns in a row (finish_reason "format_errors"); None = never.
    # WebDancer's loop ends at the first; 2 lets a model recover once (on dev no episode was right after 2).
    max_format_errors: int | None = Field(2, gt=0)
    max_total_tokens: int | None = Field(None, gt=0)  # per trajectory; None → models.policy.context_length
    # The dtype the base policy and the run's checkpoints are evaluated in ("same": models.policy.dtype). On a CPU
    # with AVX512-BF16, bfloat16 evaluated 1.1-1.6x faster than float32 here, 2.8 points lower on dev (README).
    dtype: Literal["same", "float32", "bfloat16", "float16"] = "same"
    limit: int | None = Field(None, gt=0)  # questions per benchmark (taken evenly across levels)
    concurrency: int = Field(32, gt=0)
    checkpoints: list[str] = Field(default_factory=lambda: ["base", "sft", "dapo"])
    extra_models: dict[str, ModelSpec] = Field(default_factory=dict)
    judge: dict[Literal["local", "webwalkerqa", "gaia"], JudgeMode] = Field(default_factory=dict)  # else judge.mode
    judges: list[AuditJudge] = Field(default_factory=list)  # judge audit: more judges, agreement in the summary
    bootstrap_samples: int = Field(2000, gt=0)  # resamples of the questions for each 95% CI


class ReportParams(Section):  # report mode (wdlib.report, notebook 06); research samples like eval (temperature...)
    topics: list[str] = Field(default_factory=lambda: ["What does os.path.join do with an absolute path?"])
    model: str = "latest"  # base | sft | dapo | latest (dapo, else sft, else base) | eval.extra_models key | HF id/path
    max_turns: int = Field(40, gt=0)  # research turns: more than a QA run (eval.max_turns)
    writer: ModelSpec | None = None  # None → the research model (the policy, in process)
    writer_max_new_tokens: int = Field(2048, gt=0)
    max_sources: int = Field(20, gt=0)  # numbered sources shown to the writer (a page: web.visit_evidence_tokens)
    citation_check: Literal["lexical", "llm"] = "lexical"  # llm: models.judge decides
    support_threshold: float = Field(0.6, gt=0, le=1)  # lexical: share of a sentence's content words in one passage
    passage_words: int = Field(80, gt=0)  # passage length of the lexical check
    accept_snippets: bool = False  # the snippet of a search result never visited may support a sentence


class WandbParams(Section):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "webdancer"
    entity: str | None = None


class Config(Section):
    extends: str | None = None
    run: RunParams = Field(default_factory=RunParams)
    models: ModelsParams = Field(default_factory=ModelsParams)
    agent: AgentParams = Field(default_factory=AgentParams)
    web: WebParams = Field(default_factory=WebParams)
    synthesis: SynthesisParams = Field(default_factory=SynthesisParams)
    trajectories: TrajectoriesParams = Field(default_factory=TrajectoriesParams)
    filters: FiltersParams = Field(default_factory=FiltersParams)
    judge: JudgeParams = Field(default_factory=JudgeParams)
    rewards: RewardsParams = Field(default_factory=RewardsParams)
    sft: SFTParams = Field(default_factory=SFTParams)
    dapo: DAPOParams = Field(default_factory=DAPOParams)
    eval: EvalParams = Field(default_factory=EvalParams)
    report: ReportParams = Field(default_factory=ReportParams)
    wandb: WandbParams = Field(default_factory=WandbParams)
    source: str = Field("<defaults>", exclude=True)  # where this config came from, for messages

    def resolve_path(self, path: str | os.PathLike | None) -> Path | None:
        """Paths in params are relative to the repo root (so `../shared/...` means the sibling shared/)."""
        p = None if path is None else Path(os.path.expanduser(str(path)))
        return p if p is None or p.is_absolute() else (REPO_ROOT / p).resolve()

    @property
    def run_dir(self) -> Path:
        return self.run.dir

    @property
    def paths(self) -> "RunPaths":
        """Every file and folder of this run's folder."""
        return RunPaths(self.run.dir)

    def dump(self) -> dict[str, Any]:
        """Plain dict of the settings (no secrets live in params: keys are env-var *names*, checked at load)."""
        return self.model_dump(mode="json", exclude={"extends", "source"})


# ---------------------------------------------------------------- the run folder
class RunPaths:
    """The layout of a run folder `outputs/<run.name>/`: the one place its file names are written. Stages and
    notebooks read and write through it (`cfg.paths.qa`), so the stages connect through these files only.
    `wandb/` is wandb's own folder (`wdlib.tracking` gives wandb the run folder)."""

    def __init__(self, root: Path):
        self.root = root
        self.notebooks, self.figures = root / "notebooks", root / "figures"  # pipeline copies; notebook figures
        # 01 · synthesis: the crawl (with a `.settings.json` stamp), QA per generator with its report, the splits, graded
        # QA and its teacher episodes (SFT split), teacher trajectories, the funnel, the SFT set
        self.crawl = root / "crawl.jsonl"
        self.crawlqa, self.crawlqa_report = root / "qa_crawlqa.jsonl", root / "qa_crawlqa_report.json"
        self.e2hqa, self.e2hqa_report = root / "qa_e2hqa.jsonl", root / "qa_e2hqa_report.json"
        self.qa, self.qa_eval = root / "qa.jsonl", root / "qa_eval.jsonl"
        self.graded, self.graded_report = root / "qa_graded.jsonl", root / "qa_graded_report.json"
        self.graded_episodes, self.qa_dev, self.qa_dapo = (root / f for f in ("graded_episodes.jsonl", "qa_dev.jsonl",
                                                                                "qa_dapo.jsonl"))
        self.trajectories, self.trajectories_html = root / "trajectories.jsonl", root / "trajectories.html"
        self.funnel, self.funnel_external = root / "funnel.json", root / "funnel_external.json"
        self.sft_data = root / "sft_data.jsonl"
        # 03 · SFT's rejection-sampling round: the SFT policy's samples (all, with verdicts), its funnel, the kept ones
        self.policy_trajectories, self.policy_funnel, self.policy_data = (
            root / f for f in ("sft_policy_trajectories.jsonl", "sft_policy_funnel.json", "sft_policy_data.jsonl"))
        self.synthesis_summary = root / "synthesis_summary.json"
        self.dapo_rollouts = root / "dapo_rollouts.jsonl"  # 04 · DAPO: a few rollouts per step
        self.eval = root / "eval"  # 05 · evaluation
        self.eval_summary, self.eval_tables = self.eval / "summary.json", self.eval / "tables.md"
        self.eval_figures = self.eval / "figures"
        self.eval_toolbox_stats = self.eval / "toolbox_stats.json"  # tool calls, errors, snapshot misses
        self.reports = root / "reports"  # 06 · one folder per topic: report.html/.md/.json, evidence, trajectory

    # 03 · SFT and 04 · DAPO, the same layout per training stage ("sft" | "dapo"; "sft-rs" after the rejection round)
    def checkpoint_dir(self, stage: str) -> Path:
        """The final model + tokenizer of a training stage (what the next stages load)."""
        return self.root / "checkpoints" / stage

    def trainer_dir(self, stage: str) -> Path:
        """The trainer's `checkpoint-N` folders (optimizer state included): what a resumed run continues from."""
        return self.root / "checkpoints" / f"{stage}-trainer"

    def summary_path(self, stage: str) -> Path:
        """What a finished training stage saved about itself (data statistics, metrics, log history)."""
        return self.root / ("dapo_summary.json" if stage == "dapo" else f"{stage.replace('-', '_')}_stats.json")

    def launch_params(self, stage: str) -> Path:
        """The exact params a stage launched under `accelerate launch` reads back."""
        return self.root / f"{stage}_params.yaml"

    def eval_run(self, benchmark: str, model: str, run: int) -> Path:
        """One evaluation run of one model on one benchmark: a trajectory per question, with its verdict."""
        return self.eval / benchmark / model / f"run{run}.jsonl"
