"""SFT data: agent trajectories → conversations → tokens and the loss mask, with tool responses (observations)
masked from the loss.

  trajectories (ours: `cfg.paths.sft_data`, the funnel's kept teacher trajectories of notebook 01; WebDancer's released
  samples when `sft.include_external`)
  → ChatML conversations (tool responses are *user* turns `<tool_response>…</tool_response>`)
  → `encode()`: the chat template TRL trains with (its Qwen2.5 training template, with `{% generation %}` markers)
    renders and tokenizes each conversation and returns the assistant mask (1 = trained: every assistant token
    including its `<|im_end|>`; 0 = system, question and observations); too-long conversations are fitted to
    `max_length` by shortening observations (latest first), else cut at a turn boundary, else dropped, and counted
  → a pre-tokenized dataset (`input_ids`, `assistant_masks`) that TRL's `SFTTrainer` consumes as is: it turns
    `assistant_masks` into `labels` (-100 where 0) and does no tokenization of its own. So `loss_mask()` (= `encode()`
    unpacked) is exactly what the trainer trains on; tests/test_sft.py checks the trainer's labels against it.
"""

from __future__ import annotations

import copy
import html
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from wdlib.agent import resolve_prompt
from wdlib.config import Config
from wdlib.react import PromptTemplate, prompt_messages
from wdlib.trajectory import Trajectory, load_trajectories, load_webdancer

TRUNCATION_MARK = "\n[... observation truncated to fit the training length]"
MIN_OBSERVATION_TOKENS = 64  # a shortened observation keeps at least this many tokens of its head
_RESPONSE_WRAP = re.compile(r"^(\s*<tool_response>\n?)(.*?)(\n?</tool_response>\s*)$", re.S)


class NoSFTData(RuntimeError):
    """There is nothing to train on; the message says where we looked."""


# ---------------------------------------------------------------- trajectories → conversations
def to_conversation(traj: Trajectory) -> list[dict[str, str]] | None:
    """ChatML messages to train on, or None when there is no assistant turn to learn from.

    Trailing observations (a run stopped by max_turns right after a tool call) carry no assistant tokens and are
    dropped; a `tool` role (OpenAI style) becomes the user `<tool_response>` turn the ReAct format uses.
    """
    messages = []
    for m in traj.messages:
        role, content = m["role"], m.get("content") or ""
        if role == "tool":
            role = "user"
            if not content.lstrip().startswith("<tool_response>"):
                content = f"<tool_response>\n{content}\n</tool_response>"
        if role not in ("system", "user", "assistant"):
            return None
        messages.append({"role": role, "content": content})
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()
    return messages if any(m["role"] == "assistant" for m in messages) else None


def reprompt(conv: list[dict[str, str]], question: str,
             style: str | PromptTemplate = "ours") -> list[dict[str, str]]:
    """The conversation under the prompts our agent uses at inference (`wdlib.react.prompt_messages`,
    same tool schemas as WebDancer's), so the policy learns the format under the prompt it will be run with. The
    original date line is kept, so the text does not change from day to day."""
    date = re.search(r"Current date:\s*(\S+)", conv[0]["content"]) if conv[0]["role"] == "system" else None
    rest = conv[2:] if conv[0]["role"] == "system" else conv[1:]
    return prompt_messages(question, date.group(1) if date else None, style) + rest


def load_conversations(cfg: Config) -> tuple[list[list[dict[str, str]]], dict[str, Any]]:
    """All conversations to train on and a summary of where they came from (and what was skipped, and why)."""
    stats: dict[str, Any] = {"sources": {}, "skipped": Counter(), "messages": []}
    conversations = []
    prompt = resolve_prompt(cfg)

    def add(trajs: list[Trajectory], source: str, rewrite_prompt: bool = False):
        n = 0
        for t in trajs:
            if t.filters.get("kept") is False:  # written but rejected by the filter funnel
                stats["skipped"]["filtered_out"] += 1
                continue
            conv = to_conversation(t)
            if conv is None:
                stats["skipped"]["no_assistant_turn"] += 1
                continue
            if rewrite_prompt:
                conv = reprompt(conv, t.question, prompt)
            conversations.append(conv)
            n += 1
        stats["sources"][source] = n

    ours = cfg.paths.sft_data
    if ours.is_file():
        add(load_trajectories(ours), "run")
    else:
        stats["messages"].append(f"no trajectories of this run yet ({ours} missing: run notebook 01 first)")
        stats["sources"]["run"] = 0
    if cfg.sft.policy_samples:  # the SFT policy's kept samples (the rejection round, `wdlib.synthesis.self_samples`)
        if cfg.paths.policy_data.is_file():
            add(load_trajectories(cfg.paths.policy_data), "sft_policy")
        else:
            stats["messages"].append(f"sft.policy_samples: {cfg.paths.policy_data} missing (sample the policy first)")
            stats["sources"]["sft_policy"] = 0
    if cfg.sft.include_external:
        rng = random.Random(cfg.run.seed)
        for p in cfg.trajectories.external:
            path = cfg.resolve_path(p)
            if not path.is_file():
                stats["messages"].append(f"external trajectories not found: {path}")
                continue
            trajs = load_webdancer(path)
            if cfg.sft.max_external is not None and len(trajs) > cfg.sft.max_external:
                trajs = rng.sample(trajs, cfg.sft.max_external)
            add(trajs, f"external:{path.name}", cfg.sft.reprompt_external)
    if not conversations:
        where = [str(ours)] + ([str(cfg.resolve_path(p)) for p in cfg.trajectories.external]
                               if cfg.sft.include_external else [])
        raise NoSFTData(f"no usable SFT trajectories (looked in: {', '.join(where)}; skipped: "
                        f"{dict(stats['skipped']) or 'none'}). Run notebook 01 to produce sft_data.jsonl, or set "
                        f"sft.include_external: true with trajectories.external pointing at WebDancer's samples.")
    stats["skipped"] = dict(stats["skipped"])
    return conversations, stats


# ---------------------------------------------------------------- tokenization and the loss mask
_TEMPLATES: dict[str, str] = {}


def training_chat_template(tokenizer) -> str:
    """The template SFTTrainer would train with: the tokenizer's own if it has `{% generation %}` markers, else TRL's
    training variant of it (for the Qwen2.5 template: `qwen2_5_training.jinja`). Same decision as SFTTrainer.__init__."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if template not in _TEMPLATES:
        patched = None if has_generation_markers(template) else get_training_chat_template(tokenizer)
        _TEMPLATES[template] = patched or template
    return _TEMPLATES[template]


def _tokenize(messages, tokenizer) -> tuple[list[int], list[int]]:
    # The call TRL's SFT tokenize_fn makes for a conversational example with assistant_only_loss.
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                        chat_template=training_chat_template(tokenizer),
                                        return_assistant_tokens_mask=True)
    return list(out["input_ids"]), list(out["assistant_masks"])


@dataclass
class Encoded:
    input_ids: list[int]
    mask: list[int]  # 1 = the loss is taken on this token
    status: str  # full | truncated (observations shortened) | cut (later turns removed) | dropped
    tokens_removed: int = 0  # against the untruncated conversation
    messages: list[dict[str, str]] = field(default_factory=list)  # the conversation as trained (after fitting)


def _is_observation(messages, i) -> bool:
    return i >= 2 and messages[i]["role"] == "user"  # users after the question are tool responses


def _shorten(content: str, tokenizer, keep: int) -> str:
    wrap = _RESPONSE_WRAP.match(content)
    head, body, tail = wrap.groups() if wrap else ("", content, "")
    body_ids = tokenizer.encode(body, add_special_tokens=False)
    return head + tokenizer.decode(body_ids[:keep]) + TRUNCATION_MARK + tail


def _fit_observations(messages, tokenizer, max_length: int):
    """Shorten observations from the last one backwards until the conversation fits; None if it cannot."""
    ids, mask = _tokenize(messages, tokenizer)
    fitted = copy.deepcopy(messages)
    for i in reversed([i for i in range(len(fitted)) if _is_observation(fitted, i)]):
        if len(ids) <= max_length:
            break
        original = fitted[i]["content"]
        wrap = _RESPONSE_WRAP.match(original)
        keep = len(tokenizer.encode(wrap.group(2) if wrap else original, add_special_tokens=False))
        # Token boundaries shift a little when text is cut and re-tokenized: a few passes converge.
        while len(ids) > max_length and keep > MIN_OBSERVATION_TOKENS:
            keep = max(MIN_OBSERVATION_TOKENS, keep - (len(ids) - max_length) - 16)
            fitted[i]["content"] = _shorten(original, tokenizer, keep)
            ids, mask = _tokenize(fitted, tokenizer)
    return (ids, mask, fitted) if len(ids) <= max_length else None


def encode(messages: list[dict[str, str]], tokenizer, max_length: int | None = None,
           truncation: str = "observation") -> Encoded:
    """Tokens and loss mask of one conversation, fitted to `max_length`.

    Over `max_length` with `truncation="observation"`: shorten observations from the end of the last one backwards
    (each keeps its first MIN_OBSERVATION_TOKENS tokens and a visible truncation note), so the final answer stays
    ("truncated"); if that is not enough, end the conversation after the latest assistant turn for which it is
    ("cut": the answer is lost); if not even the first assistant turn fits, drop it. `truncation="drop"` drops
    anything too long.
    """
    ids, mask = _tokenize(messages, tokenizer)
    full_len = len(ids)
    if max_length is None or full_len <= max_length:
        return Encoded(ids, mask, "full", 0, messages)
    if truncation == "drop":
        return Encoded([], [], "dropped", full_len, messages)
    if truncation != "observation":
        raise ValueError(f"sft.truncation: unknown mode {truncation!r} (observation | drop)")
    ends = [j for j in range(len(messages)) if messages[j]["role"] == "assistant"]
    for end in reversed(ends):
        fit = _fit_observations(messages[:end + 1], tokenizer, max_length)
        if fit is not None:
            ids, mask, fitted = fit
            status = "truncated" if end == len(messages) - 1 else "cut"
            return Encoded(ids, mask, status, full_len - len(ids), fitted)
    return Encoded([], [], "dropped", full_len, messages)


def loss_mask(messages: list[dict[str, str]], tokenizer, max_length: int | None = None,
              truncation: str = "observation") -> tuple[list[int], list[int]]:
    """(input_ids, mask) exactly as the trainer sees them; ([], []) for a conversation that is dropped."""
    enc = encode(messages, tokenizer, max_length, truncation)
    return enc.input_ids, enc.mask


def build_dataset(conversations: list[list[dict[str, str]]], tokenizer, max_length: int | None,
                  truncation: str = "observation"):
    """Pre-tokenized `datasets.Dataset` (input_ids, assistant_masks) for SFTTrainer, and the fitting statistics."""
    from datasets import Dataset
    from tqdm.auto import tqdm

    rows = {"input_ids": [], "assistant_masks": []}
    status = Counter()
    removed = trained = total = 0
    lengths = []
    for conv in tqdm(conversations, desc="tokenizing SFT data", leave=False):
        enc = encode(conv, tokenizer, max_length, truncation)
        status[enc.status] += 1
        removed += enc.tokens_removed
        if enc.status == "dropped":
            continue
        if 1 not in enc.mask:  # cannot happen with a template that marks assistant turns; never train on nothing
            status["no_trained_tokens"] += 1
            continue
        rows["input_ids"].append(enc.input_ids)
        rows["assistant_masks"].append(enc.mask)
        lengths.append(len(enc.input_ids))
        trained += sum(enc.mask)
        total += len(enc.mask)
    stats = {
        "conversations": len(conversations),
        "examples": len(lengths),
        "full": status["full"],
        "truncated": status["truncated"],  # observations shortened, final answer kept
        "cut": status["cut"],  # later turns removed, final answer lost
        "dropped": status["dropped"] + status["no_trained_tokens"],
        "tokens_removed": removed,
        "tokens": total,
        "trained_tokens": trained,
        "trained_fraction": round(trained / total, 4) if total else 0.0,
        "max_length": max_length,
        "mean_length": round(sum(lengths) / len(lengths), 1) if lengths else 0.0,
    }
    return Dataset.from_dict(rows), stats


def format_stats(stats: dict[str, Any]) -> str:
    return (f"{stats['conversations']} conversations → {stats['examples']} training examples "
            f"(max_length {stats['max_length']}): {stats['full']} whole, {stats['truncated']} with observations "
            f"shortened, {stats['cut']} cut before the final answer, {stats['dropped']} dropped; "
            f"{stats['tokens_removed']} tokens removed; {stats['trained_tokens']}/{stats['tokens']} tokens trained "
            f"({100 * stats['trained_fraction']:.1f}%)")


def mask_html(input_ids: list[int], mask: list[int], tokenizer, max_tokens: int | None = None) -> str:
    """The conversation as HTML: trained tokens (mask 1) highlighted, masked tokens plain grey."""
    spans, run, state = [], [], None

    def flush():
        if run:
            text = html.escape(tokenizer.decode(run))
            style = "background:#c8f7c5;color:#000" if state else "color:#777"
            spans.append(f'<span style="{style}">{text}</span>')

    for tok_id, bit in list(zip(input_ids, mask))[:max_tokens]:
        if bit != state:
            flush()
            run, state = [], bit
        run.append(tok_id)
    flush()
    more = "" if max_tokens is None or len(input_ids) <= max_tokens else f"\n… {len(input_ids) - max_tokens} more tokens"
    return ('<div style="font-family:monospace;font-size:12px;white-space:pre-wrap;border:1px solid #ddd;'
            f'padding:6px;max-height:600px;overflow:auto">{"".join(spans)}{html.escape(more)}</div>')
