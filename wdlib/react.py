"""The ReAct protocol WebDancer's agent speaks, in one file: what the model is told, what it may write, what the
environment answers. Everything else (the agent loop, the tools, rewards, filters, demonstrations, SFT, DAPO, the
viewer) reads it from here; this module imports nothing from wdlib.

- Prompts: `system_prompt(date)`, `user_prompt(question)` (the tool schemas inside `<tools>`), `prompt_messages`, in
  a prompt style (`PROMPT_STYLES`), or a `PromptTemplate` read from released trajectories (`webdancer_prompt`).
- An assistant turn is `<think>…</think>` followed by exactly one of
  `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>` or `<answer>…</answer>`; `parse_turn` reads one
  (never raises; `Turn.error` says what is wrong), generation stops at `STOP_STRINGS`.
- The environment answers as a user turn `<tool_response>\n…\n</tool_response>` (`tool_response`); a malformed turn
  is answered by `error_observation`; the last observation of a budget carries `FINAL_ANSWER_INSTRUCTION`.
- Observations follow WebDancer's released trajectories exactly: `render_search` (one query's results),
  `render_visit` (one page's evidence), joined by `RESULT_SEPARATOR` (`observation`); `parse_search_results` reads a
  rendered search back.
- The whole episode: `check_format` (what the format reward and the validity filter apply), `final_answer`,
  `messages_from_text` (a decoded multi-turn completion back to messages).
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from typing import Any

Messages = list[dict[str, str]]

# ------------------------------------------------------------------ tools
# Schemas in the shape WebDancer's prompt lists them (name, description, JSON-schema parameters).
TOOL_SCHEMAS: list[dict] = [
    {
        "name": "search",
        "description": "Performs batched web searches: supply an array 'query'; the tool retrieves the top 10 "
                       "results for each query in one call.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Array of query strings. Include multiple complementary search queries in a "
                                   "single call.",
                }
            },
            "required": ["query"],
        },
    },
    {
        "name": "visit",
        "description": "Visit webpage(s) and return the summary of the content.",
        "parameters": {
            "type": "object",
            "properties": {
                "url": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The URL(s) of the webpage(s) to visit. Can be a single URL or an array of URLs.",
                },
                "goal": {"type": "string", "description": "The specific information goal for visiting webpage(s)."},
            },
            "required": ["url", "goal"],
        },
    },
]
TOOL_NAMES = tuple(t["name"] for t in TOOL_SCHEMAS)
REQUIRED_ARGS = {t["name"]: tuple(t["parameters"]["required"]) for t in TOOL_SCHEMAS}

RESULT_SEPARATOR = "\n=======\n"  # between the queries of one search call, and the URLs of one visit call
STOP_STRINGS = ("</tool_call>", "</answer>")


# ------------------------------------------------------------------ prompts
# Prompt styles (params `agent.prompt`), the same for every stage that builds the agent's conversation (agent runs,
# SFT re-prompting, DAPO prompts, evaluation): the turn format and the tools are the same in all of them.
#   ours     our own text in the spirit of WebDancer's: principles, the tool schemas, a worked example, the date
#   compact  a short prompt for CPU-scale runs: SmolLM2-135M on 2 cores pays ~740 tokens of `ours` in every training
#            example and rollout; this one is ~190 tokens (no date line, so it never changes from day to day)
#   webdancer  the authors' exact system prompt and user template, rebuilt at run time from their released
#            trajectories (`webdancer_prompt(text)` on the file's text gives a `PromptTemplate`; the text is read by
#            whoever builds the prompt, `wdlib.agent.resolve_prompt`, and is never copied into this repository), so
#            released checkpoints and "Vanilla ReAct" baselines are evaluated with the prompt they were trained with
PROMPT_STYLES = ("ours", "compact", "webdancer")

COMPACT_SYSTEM = ("You are a web research agent. Answer the user's question by searching the web and reading pages. "
                  "In each turn, think inside <think></think>, then either call one tool inside "
                  "<tool_call></tool_call> or give the final answer inside <answer></answer>.")
COMPACT_TOOLS = ('Tools:\n- search: web search; arguments {"query": ["..."]}; returns the top results of each query.\n'
                 '- visit: read web pages; arguments {"url": ["..."], "goal": "..."}; returns what the pages say '
                 'about the goal.\nCall a tool as <tool_call>\n{"name": "search", "arguments": {"query": ["..."]}}'
                 "\n</tool_call> and wait for its result inside <tool_response></tool_response>.\n\nQuestion: ")


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt read from released trajectories: the system prompt up to its date, the user prompt up to its
    question (both render as `text + date` / `text + question`, byte for byte as in the source)."""

    system_before_date: str
    user_before_question: str
    name: str = "webdancer"


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


def _check_style(style: str | PromptTemplate) -> None:
    if isinstance(style, PromptTemplate):
        return
    if style == "webdancer":
        raise ValueError("prompt style 'webdancer' is read from the released trajectories: pass the PromptTemplate "
                         "of webdancer_prompt(text) (wdlib.agent.resolve_prompt(cfg) reads agent.webdancer_prompt_file)")
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; known: {', '.join(PROMPT_STYLES)}")


def system_prompt(date: str | None = None, style: str | PromptTemplate = "ours") -> str:
    """`ours`: principles (persistence, verification, attention to detail) and today's date. `compact`: one
    paragraph. A PromptTemplate: its text and the date."""
    _check_style(style)
    if style == "compact":
        return COMPACT_SYSTEM
    date = date or datetime.date.today().isoformat()
    if isinstance(style, PromptTemplate):
        return style.system_before_date + date
    return (
        "You are a web research agent. You answer questions by searching the web and reading pages, and you keep "
        "going until you have found the information, however hard the question is.\n\n"
        "Work by these principles:\n\n"
        "1. **Persist**: take as many steps as the question needs; when one search fails, rephrase it, split the "
        "question, or follow a link from a page you already read.\n\n"
        "2. **Verify**: before you answer, check the key facts against more than one source and make sure the "
        "answer matches every condition in the question.\n\n"
        "3. **Mind the details**: read each source carefully (dates, names, numbers, units) and prefer credible, "
        "current sources.\n"
        f"Current date: {date}"
    )


def user_prompt(question: str, style: str | PromptTemplate = "ours") -> str:
    """`ours`: tool schemas inside <tools></tools>, the turn format, an example, then the question. `compact`: the
    two tools in a line each, the call format, then the question. A PromptTemplate: its text and the question."""
    _check_style(style)
    if style == "compact":
        return COMPACT_TOOLS + question
    if isinstance(style, PromptTemplate):
        return style.user_before_question + question
    tools = ",\n".join(json.dumps(schema, indent=2, ensure_ascii=False) for schema in TOOL_SCHEMAS)
    return (
        "A conversation between User and Assistant. The user asks a question, and the assistant answers it by "
        "calling the following tools as many times as needed.\n"
        f"<tools>\n{tools}\n</tools>\n\n"
        "In each turn the assistant first thinks about what to do next, then either calls exactly one tool and waits "
        "for its response, or gives the final answer. Thinking goes inside <think></think>, a tool call inside "
        "<tool_call></tool_call> as a JSON object with \"name\" and \"arguments\", the final answer inside "
        "<answer></answer>. Tool responses come back inside <tool_response></tool_response>.\n\n"
        "Example:\n"
        "<think> thinking process here </think>\n"
        "<tool_call>\n"
        '{"name": "tool name here", "arguments": {"parameter name here": parameter value here, ...}}\n'
        "</tool_call>\n"
        "<tool_response>\ntool response here\n</tool_response>\n"
        "<think> thinking process here </think>\n"
        "<tool_call>\n"
        '{"name": "another tool name here", "arguments": {...}}\n'
        "</tool_call>\n"
        "<tool_response>\ntool response here\n</tool_response>\n"
        "(more thinking, tool calls and tool responses here)\n"
        "<think> thinking process here </think>\n"
        "<answer> answer here </answer>\n\n"
        f"User: {question}"
    )


FINAL_ANSWER_INSTRUCTION = ("You have used up your budget of tool calls. Do not call any more tools: think once more "
                            "and give your best final answer now inside <answer></answer>.")


def tool_response(content: str) -> str:
    return f"<tool_response>\n{content}\n</tool_response>"


def prompt_messages(question: str, date: str | None = None, style: str | PromptTemplate = "ours") -> Messages:
    """The conversation an episode starts from: the system prompt and the question, in prompt style `style`."""
    return [{"role": "system", "content": system_prompt(date, style)},
            {"role": "user", "content": user_prompt(question, style)}]


# ------------------------------------------------------------------ turn parser
@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def to_dict(self) -> dict:
        return {"name": self.name, "arguments": self.arguments}


@dataclass
class Turn:
    think: str | None = None
    tool_call: ToolCall | None = None
    answer: str | None = None
    error: str | None = None  # None ⇔ the turn is well formed and actionable

    @property
    def ok(self) -> bool:
        return self.error is None


# Aliases models really use for argument names; mapped to the schema's names.
_ARG_ALIASES = {"search": {"queries": "query", "q": "query"}, "visit": {"urls": "url"}}
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?\s*```$", re.S)


def parse_turn(text: str) -> Turn:
    """Parse one assistant turn; never raises. `error` says precisely what is wrong, for the model to correct."""
    if not isinstance(text, str):
        return Turn(error=f"the turn is not text (got {type(text).__name__})")
    if not text.strip():
        return Turn(error="empty turn: write <think>...</think> and then a <tool_call> or an <answer>")

    # Structure first: each tag at most once and closed.
    for tag in ("think", "tool_call", "answer"):
        opens, closes = text.count(f"<{tag}>"), text.count(f"</{tag}>")
        if opens > 1 or closes > 1:
            what = {"think": "<think> block", "tool_call": "<tool_call>", "answer": "<answer>"}[tag]
            hint = " (call one tool per turn and wait for its response)" if tag == "tool_call" else ""
            return Turn(error=f"more than one {what} in the turn{hint}")
        if opens and not closes:
            return Turn(error=f"unclosed <{tag}>: missing </{tag}> (the turn may have been cut off)")
        if closes and not opens:
            return Turn(error=f"</{tag}> without an opening <{tag}>")
        if opens and text.index(f"</{tag}>") < text.index(f"<{tag}>"):
            return Turn(error=f"</{tag}> comes before <{tag}>")
    if "<tool_response>" in text:
        return Turn(error="the turn contains <tool_response>: tool responses come from the environment, "
                          "stop after </tool_call> and wait")

    if "<think>" not in text:
        return Turn(error="no <think>...</think> block: start the turn by thinking inside <think></think>")
    think_start, think_end = text.index("<think>"), text.index("</think>")
    think = text[think_start + len("<think>"):think_end].strip()
    if text[:think_start].strip():
        return Turn(think=think, error="text before <think>: the turn must start with <think>")
    if not think:
        return Turn(think=think, error="empty <think></think> block: reason about the next step first")
    rest = text[think_end + len("</think>"):]
    for tag in ("tool_call", "answer"):
        if f"<{tag}>" in text and text.index(f"<{tag}>") < think_end:
            return Turn(think=think, error=f"<{tag}> inside or before <think>: put it after </think>")

    has_call, has_answer = "<tool_call>" in rest, "<answer>" in rest
    if has_call and has_answer:
        return Turn(think=think, error="both <tool_call> and <answer> in one turn: either call a tool or answer")
    if not has_call and not has_answer:
        return Turn(think=think, error="nothing actionable after </think>: add a <tool_call> or an <answer>")

    if has_answer:
        answer = rest[rest.index("<answer>") + len("<answer>"):rest.index("</answer>")].strip()
        if not answer:
            return Turn(think=think, error="empty <answer></answer>")
        return Turn(think=think, answer=answer)

    body = rest[rest.index("<tool_call>") + len("<tool_call>"):rest.index("</tool_call>")]
    call, error = _parse_tool_call(body)
    return Turn(think=think, tool_call=call, error=error)


def _loads(text: str) -> tuple[Any, json.JSONDecodeError | None]:
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, e


def _parse_tool_call(body: str) -> tuple[ToolCall | None, str | None]:
    body = body.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    if not body:
        return None, 'empty <tool_call>: expected {"name": ..., "arguments": {...}}'
    obj, e = _loads(body)
    if e is not None:
        return None, f"tool call is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
    if not isinstance(obj, dict):
        return None, f'tool call must be a JSON object {{"name": ..., "arguments": {{...}}}}, got {type(obj).__name__}'
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return None, 'tool call has no "name"'
    name = name.strip()
    if name not in TOOL_NAMES:
        return None, f"unknown tool {name!r}; available tools: {', '.join(TOOL_NAMES)}"
    args = obj.get("arguments", obj.get("parameters"))
    if args is None:
        return None, f'tool call to {name!r} has no "arguments" object'
    if isinstance(args, str):  # arguments given as a JSON string (OpenAI function-call habit)
        args, e = _loads(args)
        if e is not None:
            return None, f"arguments of {name!r} are a string that is not valid JSON ({e.msg})"
    if not isinstance(args, dict):
        return None, f'"arguments" of {name!r} must be a JSON object, got {type(args).__name__}'
    args = {_ARG_ALIASES[name].get(k, k): v for k, v in args.items()}
    for arg in REQUIRED_ARGS[name]:
        if arg not in args or args[arg] in (None, "", []):
            return None, f"tool {name!r} is missing required argument {arg!r}"
    # Lists of strings where the schema says array; a single string is what models often write.
    for arg in ("query", "url"):
        if arg in args:
            value = [args[arg]] if isinstance(args[arg], str) else args[arg]
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                return None, f"argument {arg!r} of {name!r} must be a string or a list of non-empty strings"
            args[arg] = [v.strip() for v in value]
    if "goal" in args and not isinstance(args["goal"], str):
        return None, f"argument 'goal' of {name!r} must be a string"
    return ToolCall(name=name, arguments=args), None


def error_observation(error: str) -> str:
    """What the model reads after a malformed turn (sent as the next user turn, inside <tool_response>)."""
    return (f"Format error: {error}.\nReply with <think>...</think> followed by exactly one "
            '<tool_call>\n{"name": "search" or "visit", "arguments": {...}}\n</tool_call> or <answer>...</answer>.')


# ------------------------------------------------------------------ observations
def render_search(query: str, results: list[dict]) -> str:
    """One query's results in WebDancer's shape (SerpAPI `organic_results` items: title, link, snippet, date?)."""
    if not results:
        return f"No results found for '{query}'. Try with a more general query."
    items = []
    for i, r in enumerate(results, 1):
        date = f"\nDate published: {r['date']}" if r.get("date") else ""
        snippet = f"\n{r['snippet']}" if r.get("snippet") else ""
        items.append(f"{i}. [{r.get('title', '')}]({r.get('link', '')}){date}\n{snippet}")
    return f"A Google search for '{query}' found {len(items)} results:\n\n## Web Results\n" + "\n\n".join(items)


def observation(parts: list[str]) -> str:
    """The results of one call (several queries, or several URLs) as one observation."""
    # The released trajectories end every observation with one newline before the agent's closing tag.
    return RESULT_SEPARATOR.join(p.strip() for p in parts) + "\n"


def render_visit(url: str, goal: str, evidence: str, summary: str) -> str:
    return (f"The useful information in {url} for user goal {goal} as follows: \n\n"
            f"Evidence in page: \n{evidence}\n\nSummary: \n{summary}")


_RESULT = re.compile(r"^\s*\d+\.\s*\[(?P<title>.*?)\]\((?P<url>[^)\s]+)\)\s*$", re.M)


def parse_search_results(rendered: str) -> list[dict]:
    """The search tool's WebDancer-shaped text → [{"title", "url", "snippet"}] (first query's results first)."""
    results = []
    matches = list(_RESULT.finditer(rendered or ""))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(rendered)
        snippet = rendered[m.end():end].split(RESULT_SEPARATOR)[0]
        results.append({"title": m.group("title").strip(), "url": m.group("url").strip(),
                        "snippet": re.sub(r"\s+", " ", snippet.replace("¶", "")).strip()})
    return results


# ------------------------------------------------------------------ the whole episode
_CHATML_MARKERS = re.compile(r"<\|im_start\|>(?:assistant|user|system)?\n?|<\|im_end\|>\n?|<\|endoftext\|>")
_TOOL_RESPONSE = re.compile(r"(<tool_response>.*?</tool_response>)", re.S)


def messages_from_text(text: str) -> Messages:
    """Split one decoded multi-turn completion into assistant turns and `<tool_response>` user turns.

    Works whether special tokens were kept (`<|im_start|>user` markers) or skipped in decoding (bare `user` /
    `assistant` role words left at the turn boundaries).
    """
    text = _CHATML_MARKERS.sub("\n", text)
    messages: Messages = []
    for i, part in enumerate(_TOOL_RESPONSE.split(text)):
        if i % 2:
            messages.append({"role": "user", "content": part})
            continue
        part = re.sub(r"^\s*assistant\s*\n", "", part)
        part = re.sub(r"\n\s*user\s*$", "", part).strip()
        if part:
            messages.append({"role": "assistant", "content": part})
    return messages


def check_format(messages: Messages) -> str | None:
    """None when the episode is in format; else the first problem, e.g. 'assistant turn 2: tool call is not JSON'.

    Messages before the first assistant turn are the prompt (system, user) and are not checked.
    """
    start = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), None)
    if start is None:
        return "no assistant turn"
    episode = messages[start:]
    assistant_turns = [m for m in episode if m.get("role") == "assistant"]
    n = len(assistant_turns)
    k = 0
    for i, message in enumerate(episode):
        role, content = message.get("role"), message.get("content") or ""
        if role == "user":
            if "<tool_response>" not in content:
                return f"user turn after assistant turn {k} is not a <tool_response>"
            if i == 0 or episode[i - 1].get("role") != "assistant":
                return f"two user turns in a row after assistant turn {k}"
            continue
        if role != "assistant":
            return f"unexpected {role!r} message inside the episode"
        k += 1
        if i > 0 and episode[i - 1].get("role") == "assistant":
            return f"assistant turn {k} follows another assistant turn with no tool response between"
        turn = parse_turn(content)
        if turn.error:
            return f"assistant turn {k}: {turn.error}"
        if k < n and turn.answer is not None:
            return f"assistant turn {k}: answer given before the last turn"
        if turn.tool_call is not None and i + 1 >= len(episode):
            return f"assistant turn {k}: tool call never answered (episode cut off, no final answer)"
    if episode[-1].get("role") != "assistant":
        return "episode ends with a tool response, not an answer"
    if parse_turn(episode[-1].get("content") or "").answer is None:
        return "last assistant turn has no <answer>"
    return None


def final_answer(messages: Messages) -> str | None:
    """The `<answer>` of the last assistant turn, or None."""
    for message in reversed(messages):
        if message.get("role") == "assistant":
            return parse_turn(message.get("content") or "").answer
    return None
