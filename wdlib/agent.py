"""The ReAct agent: the loop that runs one episode in WebDancer's format (`wdlib.react`) against a model client and
a toolbox, and many episodes at once.

`run_agent` keeps the conversation inside a token budget and, for an in-process (token-level) client, the exact
token transcript RL trains on (model tokens vs observation tokens). `run_many` runs episodes concurrently (while one
waits on a tool or the model, the others proceed) and resumes by trajectory id.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from tqdm.auto import tqdm

from wdlib.react import (FINAL_ANSWER_INSTRUCTION, STOP_STRINGS, PromptTemplate, ToolCall, error_observation,
                         parse_turn, prompt_messages, tool_response)
from wdlib.trajectory import QAPair, Trajectory, question_id, trajectory_id


# ------------------------------------------------------------------ the prompt
def resolve_prompt(cfg: Any) -> str | PromptTemplate:
    """The prompt every stage starts an episode from (`agent.prompt`): a style name, or for `webdancer` the authors'
    templates read from `agent.webdancer_prompt_file` (their released trajectories; read here, never copied)."""
    if cfg.agent.prompt != "webdancer":
        return cfg.agent.prompt
    path = cfg.resolve_path(cfg.agent.webdancer_prompt_file)
    if not path.is_file():
        raise FileNotFoundError(f"{cfg.source}: agent.webdancer_prompt_file: {path} not found (WebDancer's released "
                                "sample_traj.jsonl, or your own copy)")
    return _read_template(str(path), path.stat().st_mtime)


@functools.lru_cache(maxsize=4)
def _read_template(path: str, mtime: float) -> PromptTemplate:
    return webdancer_prompt(Path(path).read_text(encoding="utf-8"), source=path)


_USER_MARK = "\nUser: "  # the user template ends with this, then the question
_DATE_MARK = "Current date: "  # the system prompt ends with this, then the date (YYYY-MM-DD)


def webdancer_prompt(jsonl_text: str, source: str = "the released trajectories") -> PromptTemplate:
    """The authors' system prompt and user template, read from the text of their released trajectories (JSONL, one
    ChatML record per line: `messages[0]` system, `messages[1]` user). Every record must carry the same two templates
    (only the date and the question differ); anything else is a ValueError naming the line."""
    systems, users = {}, {}
    for n, line in enumerate(jsonl_text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            messages = json.loads(line)["messages"]
            system, user = messages[0], messages[1]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"{source}:{n}: not a trajectory with system and user messages ({exc})") from None
        if system.get("role") != "system" or user.get("role") != "user":
            raise ValueError(f"{source}:{n}: the first two messages are not system and user")
        cut = system["content"].rfind(_DATE_MARK)
        if cut < 0 or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", system["content"][cut + len(_DATE_MARK):]):
            raise ValueError(f"{source}:{n}: the system prompt does not end with '{_DATE_MARK}YYYY-MM-DD'")
        tools_end = user["content"].find("</tools>")
        at = user["content"].find(_USER_MARK, max(tools_end, 0))
        if tools_end < 0 or at < 0:
            raise ValueError(f"{source}:{n}: the user prompt has no <tools> block followed by '{_USER_MARK.strip()}'")
        systems.setdefault(system["content"][:cut + len(_DATE_MARK)], n)
        users.setdefault(user["content"][:at + len(_USER_MARK)], n)
    if not systems:
        raise ValueError(f"{source}: no trajectories")
    if len(systems) > 1 or len(users) > 1:
        raise ValueError(f"{source}: the records use {len(systems)} system prompts and {len(users)} user templates "
                         f"(first lines {sorted(systems.values())[:3]}, {sorted(users.values())[:3]}); expected one")
    return PromptTemplate(next(iter(systems)), next(iter(users)))


# ------------------------------------------------------------------ the ReAct loop
MIN_TURN_TOKENS = 16  # no point starting a turn with less room than this


class _Transcript:
    """The token-level record of one rollout for a token-level client: exactly the ids the model was fed and
    produced. env_mask is 1 for the model's tokens (including the <|im_end|> that closes each of its turns) and 0
    for observation tokens."""

    def __init__(self, client, messages: list[dict]):
        self.tokenizer = client.tokenizer
        self.prompt_ids = client.encode_prompt(messages)
        self.completion_ids: list[int] = []
        self.env_mask: list[int] = []
        self.logprobs: list[float] = []
        # What the template writes after `<|im_start|>assistant\n` when prompting a turn: "" for Qwen2.5, "<think>\n"
        # for QwQ-style templates. The model's text continues it, so it is part of the turn's message and is
        # repeated after every observation, exactly as the template would render the next turn.
        # (The generation prompt is at the end: decoding the last tokens is enough, and a whole prompt takes ~10 ms.)
        head, sep, tail = self.tokenizer.decode(self.prompt_ids[-32:]).rpartition("<|im_start|>assistant\n")
        if not sep:
            head, sep, tail = self.tokenizer.decode(self.prompt_ids).rpartition("<|im_start|>assistant\n")
        self.turn_prefix = tail if sep else ""
        self._last_observation: tuple[str | None, list[int]] = (None, [])
        self.end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if self.end_id is None or self.end_id == self.tokenizer.unk_token_id:
            self.end_id = self.tokenizer.eos_token_id

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.completion_ids

    def add_model(self, reply, close: bool) -> None:
        ids = list(reply.token_ids or [])
        self.completion_ids += ids
        self.env_mask += [1] * len(ids)
        self.logprobs += list(reply.logprobs) if reply.logprobs is not None else [0.0] * len(ids)
        if close and (not ids or ids[-1] != self.end_id):  # stopped on a stop string: close the turn ourselves
            self.completion_ids.append(self.end_id)
            self.env_mask.append(1)
            self.logprobs.append(0.0)

    def observation_ids(self, content: str) -> list[int]:
        if content != self._last_observation[0]:  # a turn measures its observation, maybe cuts it, then adds it
            text = f"\n<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n{self.turn_prefix}"
            self._last_observation = (content, self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self._last_observation[1])

    def add_observation(self, ids: list[int]) -> None:
        self.completion_ids += ids
        self.env_mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)

    def to_dict(self) -> dict:
        return {"prompt_ids": self.prompt_ids, "completion_ids": self.completion_ids, "env_mask": self.env_mask,
                "logprobs": self.logprobs}


def _estimate_tokens(text: str) -> int:
    return len(text) // 3 + 1  # conservative for English under BPE; only used without a tokenizer


def _estimate_observation(content: str) -> int:
    return _estimate_tokens(content) + 8  # + the chat template's role markers


def _fit_observation(result: str, suffix: str, count: Callable[[str], int], room: int) -> str | None:
    """`<tool_response>result</tool_response>suffix`, with `result` cut so the whole takes at most `room` tokens
    (a long page must not push the conversation past the context); None when not even a stub fits."""
    content = tool_response(result) + suffix
    n = count(content)
    if n <= room:
        return content
    note = "\n[... cut: the context is full]"
    overhead = count(tool_response(note) + suffix)
    if room - overhead < 8:
        return None
    keep = int(len(result) * (room - overhead) / max(n - overhead, 1))
    for _ in range(8):  # token counts after a cut are not exactly proportional: shrink until it fits
        content = tool_response(result[:keep] + note) + suffix
        if count(content) <= room:
            return content
        keep = int(keep * 0.8)
    return None


async def _call_tool(toolbox, call: ToolCall) -> str:
    try:
        return str(await toolbox.call(call.name, call.arguments))
    except Exception as e:  # the real Toolbox never raises; any other toolbox's failure is still an observation
        return f"Error: tool {call.name!r} failed: {type(e).__name__}: {e}"


async def run_agent(question: str, client, toolbox, *, gold: str | None = None, qa_id: str | None = None,
                    max_turns: int = 12, max_total_tokens: int = 32768, context_length: int | None = None,
                    sampling: dict | None = None, sample: int = 0, date: str | None = None,
                    prompt: str | PromptTemplate = "ours", max_format_errors: int | None = None) -> Trajectory:
    """Run one ReAct trajectory. Never raises: whatever fails (the model backend, a tokenizer, a client's reply,
    a toolbox) ends this trajectory with finish_reason "error" and the conversation so far, never its siblings.

    Limits: at most `max_turns` assistant turns and `max_total_tokens` tokens in the whole conversation (prompt,
    turns, observations; also capped by `context_length`). When a limit is about to be reached, the last observation
    carries FINAL_ANSWER_INSTRUCTION and the next turn is the last one. finish_reason: "answer" (answered in budget),
    "max_turns" / "max_tokens" (the budget ran out; `prediction` is still set if the forced turn answered),
    "error" (the model backend failed; see `error`), "format_errors" (`max_format_errors` malformed turns in a row:
    a model that does not write the format is not made to try until the budget runs out; WebDancer's own loop ends
    at the first turn without a tool call). `prompt` is the prompt style (`wdlib.react.PROMPT_STYLES`) or a
    PromptTemplate (`resolve_prompt(cfg)` gives the one the params ask for).
    """
    messages: list[dict] = []
    t_start = time.perf_counter()
    try:
        messages += prompt_messages(question, date, prompt)
        return await _episode(question, client, toolbox, messages, gold=gold, qa_id=qa_id, max_turns=max_turns,
                              max_total_tokens=max_total_tokens, context_length=context_length, sampling=sampling,
                              sample=sample, prompt=prompt, max_format_errors=max_format_errors)
    except Exception as e:
        return Trajectory(question=question, messages=messages, gold=gold, turns=sum(
            m["role"] == "assistant" for m in messages), finish_reason="error", model=_model_name(client),
            sampling={**(sampling or {}), "max_turns": max_turns, "prompt": _prompt_name(prompt)},
            timings={"total_s": round(time.perf_counter() - t_start, 4)}, qa_id=qa_id or "", sample=sample,
            error=f"{type(e).__name__}: {e}")


def _prompt_name(prompt: str | PromptTemplate) -> str:
    return prompt.name if isinstance(prompt, PromptTemplate) else prompt


def _model_name(client) -> str:
    try:
        name = getattr(client, "model_name", None)
    except Exception:  # a property that fails
        name = None
    return name if isinstance(name, str) else type(client).__name__


async def _episode(question: str, client, toolbox, messages: list[dict], *, gold: str | None, qa_id: str | None,
                   max_turns: int, max_total_tokens: int, context_length: int | None, sampling: dict | None,
                   sample: int, prompt: str | PromptTemplate, max_format_errors: int | None) -> Trajectory:
    """`run_agent`'s loop; `messages` (the prompt, then each turn as it happens) is the caller's list."""
    sampling = dict(sampling or {})
    default_turn_tokens = getattr(client, "max_new_tokens", 512)
    turn_tokens = int(sampling.pop("max_new_tokens", sampling.pop("max_tokens", default_turn_tokens)))
    budget = min(max_total_tokens, context_length or max_total_tokens)
    min_turn = min(MIN_TURN_TOKENS, turn_tokens)
    token_level = getattr(client, "token_level", False)
    transcript = _Transcript(client, messages) if token_level else None
    used = len(transcript) if transcript else _estimate_tokens(messages[0]["content"] + messages[1]["content"])

    turns, calls, prediction, forced, finish, error = 0, [], None, None, None, None
    malformed_in_a_row = 0
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    model_s = tool_s = 0.0
    t_start = time.perf_counter()
    try:
        while True:
            max_new = min(turn_tokens, budget - used)
            if max_new < min_turn:
                finish = forced or "max_tokens"
                break
            t0 = time.perf_counter()
            try:
                if transcript:
                    reply = await client.generate(transcript.ids, max_new_tokens=max_new, stop=STOP_STRINGS, **sampling)
                else:
                    reply = await client.chat(messages, max_new_tokens=max_new, stop=STOP_STRINGS, **sampling)
            except Exception as e:
                model_s += time.perf_counter() - t0
                finish, error = "error", f"{type(e).__name__}: {e}"
                break
            model_s += time.perf_counter() - t0
            turns += 1
            usage["prompt_tokens"] += reply.prompt_tokens
            usage["completion_tokens"] += reply.completion_tokens
            text = (transcript.turn_prefix if transcript else "") + reply.text
            if reply.reasoning_content and "<think>" not in text:  # long CoT: the model's reasoning is the <think>
                text = f"<think>\n{reply.reasoning_content.strip()}\n</think>\n{text.lstrip()}"
            messages.append({"role": "assistant", "content": text})
            turn = parse_turn(text)
            last_turn = turn.answer is not None or forced is not None or turns >= max_turns
            if transcript:
                # A turn that ended on eos or a stop string is closed with <|im_end|>; a turn cut off by the length
                # limit is closed only if the conversation goes on (so a truncated final turn still looks truncated).
                transcript.add_model(reply, close=reply.finish_reason == "stop" or not last_turn)
                used = len(transcript)
            elif reply.prompt_tokens:  # the server's count of the conversation so far
                used = reply.prompt_tokens + reply.completion_tokens
            else:
                used += _estimate_tokens(text)
            if turn.answer is not None:
                prediction, finish = turn.answer, forced or "answer"
                break
            if last_turn:
                finish = forced or "max_turns"
                break

            malformed_in_a_row = 0 if turn.tool_call is not None else malformed_in_a_row + 1
            if max_format_errors and malformed_in_a_row >= max_format_errors:
                finish = "format_errors"
                break
            if turn.tool_call is not None:
                calls.append(turn.tool_call.to_dict())
                t0 = time.perf_counter()
                result = await _call_tool(toolbox, turn.tool_call)
                tool_s += time.perf_counter() - t0
            else:
                result = error_observation(turn.error or "malformed turn")
            count = (lambda text: len(transcript.observation_ids(text))) if transcript else _estimate_observation
            if turns + 1 >= max_turns:
                forced = "max_turns"
            elif used + count(tool_response(result)) + turn_tokens > budget:
                forced = "max_tokens"
            suffix = "\n\n" + FINAL_ANSWER_INSTRUCTION if forced else ""
            content = _fit_observation(result, suffix, count, room=budget - used - min_turn)
            if content is None:  # not even a cut observation fits: the context is full
                finish = forced or "max_tokens"
                break
            messages.append({"role": "user", "content": content})
            if transcript:
                transcript.add_observation(transcript.observation_ids(content))
                used = len(transcript)
            else:
                used += count(content)
    finally:  # also when the episode fails: the client drops this conversation's cached key/values
        if transcript and hasattr(client, "release"):
            client.release(transcript.ids)
    sampling_record = {**sampling, "max_new_tokens": turn_tokens, "max_turns": max_turns,
                       "max_format_errors": max_format_errors, "prompt": _prompt_name(prompt),
                       "max_total_tokens": max_total_tokens}
    trajectory = Trajectory(
        question=question, messages=messages, gold=gold, prediction=prediction, turns=turns, tool_calls=calls,
        finish_reason=finish, model=_model_name(client), sampling=sampling_record,
        timings={"model_s": round(model_s, 4), "tool_s": round(tool_s, 4),
                 "total_s": round(time.perf_counter() - t_start, 4)},
        qa_id=qa_id or "", sample=sample, usage={**usage, "context_tokens": used}, error=error,
        tokens=transcript.to_dict() if transcript else None,
    )
    return trajectory


# ------------------------------------------------------------------ many trajectories at once
def _item_fields(item) -> tuple[str, str | None, str]:
    if isinstance(item, QAPair):
        return item.question, item.answer, item.id
    if isinstance(item, dict):
        if "question" not in item:
            raise ValueError(f"item has no 'question': {sorted(item)}")
        gold = item.get("gold", item.get("answer"))
        return item["question"], None if gold is None else str(gold), item.get("qa_id") or item.get("id") or ""
    if isinstance(item, str):
        return item, None, ""
    return item.question, getattr(item, "answer", getattr(item, "gold", None)), getattr(item, "id", "")


async def run_many(items: Iterable, client, toolbox, *, concurrency: int = 8, samples: int = 1,
                   on_result: Callable[[Trajectory], Any] | None = None, skip_ids: Iterable[str] = (),
                   progress: bool = True, **agent_kwargs) -> list[Trajectory]:
    """Run `samples` trajectories per item, `concurrency` at a time (while one waits on a tool or the model, the
    others proceed). `on_result(trajectory)` (sync or async) is called as each one finishes, e.g. to append it to
    a JSONL file; trajectories whose id is in `skip_ids` (e.g. `done_ids(path)`) are not run again.
    Items: QAPair, dicts with question and gold/answer (and optional id, samples), or plain question strings.
    Returns the new trajectories in input order. A trajectory that fails is an error record of its own (`run_agent`);
    when `on_result` fails for some, the rest still run and are handed over, then a RuntimeError names them."""
    skip = set(skip_ids)
    model = _model_name(client)
    jobs = []
    for item in items:
        question, gold, qa_id = _item_fields(item)
        n = item.get("samples", samples) if isinstance(item, dict) else samples
        qa_id = qa_id or question_id(question)
        jobs += [(question, gold, qa_id, k) for k in range(n) if trajectory_id(qa_id, k, model) not in skip]

    semaphore = asyncio.Semaphore(concurrency)
    results: list[Trajectory | None] = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc="trajectories", disable=not progress)
    answered = 0

    unsaved: list[str] = []

    async def one(i: int, question: str, gold: str | None, qa_id: str, k: int) -> None:
        async with semaphore:
            trajectory = await run_agent(question, client, toolbox, gold=gold, qa_id=qa_id, sample=k, **agent_kwargs)
        results[i] = trajectory
        if on_result is not None:
            try:
                maybe = on_result(trajectory)
                if inspect.isawaitable(maybe):
                    await maybe
            except Exception as e:  # the others still run and are saved; this one is reported below
                unsaved.append(f"{trajectory.id}: {type(e).__name__}: {e}")
        nonlocal answered
        answered += trajectory.prediction is not None
        bar.set_postfix(answered=answered, refresh=False)
        bar.update(1)

    try:
        async with asyncio.TaskGroup() as group:
            for i, job in enumerate(jobs):
                group.create_task(one(i, *job))
    finally:
        bar.close()
    if unsaved:
        raise RuntimeError(f"on_result failed for {len(unsaved)} of {len(jobs)} trajectories (the others were "
                           f"handled): {'; '.join(unsaved[:3])}")
    return [r for r in results if r is not None]
