"""Keys never leave the process: one redaction pass for everything written to a record, a log, a tracker or a message.

`redact(text)` replaces every key value this process knows and every credential-shaped span with `<redacted>`:

- the values of environment variables whose names say they hold a secret (`*_API_KEY`, `*TOKEN*`, `*SECRET*`,
  `*PASSWORD*`, ...) and of any variable a client read its key from (`register_env`, e.g. a params file's
  `api_key_env: MY_ENDPOINT`), when at least 8 characters long (shorter values would redact ordinary words);
- `Authorization: Bearer <token>`, a password in a URL (`https://user:PASSWORD@host`) and key-like query
  parameters (`?api_key=…`, `&token=…`: SerpAPI sends its key that way, and urllib3 logs the URL at DEBUG).

Where it applies: JSONL records (`wdlib.trajectory.append_jsonl`), every log record (`install_log_redaction`, done
when wdlib is imported), the wandb config (`wdlib.tracking`), executed notebooks and stage errors
(`wdlib.pipeline`), report mode's files (`wdlib.report.run`), trajectory HTML (`wdlib.viewer`). Params files cannot
hold keys at all (`wdlib.config` rejects them at load). This module imports nothing from wdlib, so anything can use it.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

REDACTED = "<redacted>"
MIN_SECRET_CHARS = 8
SECRET_NAME = re.compile(r"api[_-]?key|apikey|token(?!izer)|secret|passw(?:or)?d|credential|authorization|"
                         r"private[_-]?key|access[_-]?key|session[_-]?key|auth$", re.I)
_VALUE = r"[^\s\"'<>&#,;\\]+"  # never crosses a JSON string's quote or an escape: redacted JSON stays JSON
_PATTERNS = [
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + REDACTED),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@\"'<>]+:)[^/\s@\"'<>]+(@)"), r"\1" + REDACTED + r"\2"),
    (re.compile(r"(?i)([?&](?:api[_-]?key|apikey|access[_-]?token|auth[_-]?token|token|key|secret|client[_-]?secret|"
                r"password|sig|signature)=)" + _VALUE), r"\1" + REDACTED),
]
_registered_envs: set[str] = set()


def register_env(name: str | None) -> None:
    """The value of environment variable `name` is a key (whatever the variable is called): redact it too."""
    if name:
        _registered_envs.add(name)


def secrets() -> list[str]:
    """The key values in the environment now, longest first (a key that contains another is redacted whole)."""
    found = {value for name, value in os.environ.items()
             if (name in _registered_envs or SECRET_NAME.search(name)) and len(value) >= MIN_SECRET_CHARS}
    return sorted(found, key=len, reverse=True)


def redact(text: str, known: list[str] | None = None) -> str:
    """`text` with key values and credential-shaped spans replaced by `<redacted>`."""
    if not isinstance(text, str) or not text:
        return text
    for value in secrets() if known is None else known:
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_obj(obj: Any, known: list[str] | None = None) -> Any:
    """A JSON-like value (dicts, lists, strings) with every string redacted; dict keys are kept."""
    known = secrets() if known is None else known
    if isinstance(obj, str):
        return redact(obj, known)
    if isinstance(obj, dict):
        return {k: redact_obj(v, known) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v, known) for v in obj]
    return obj


# ---------------------------------------------------------------- logs
def _redacting_factory(make_record):
    def factory(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it as usual
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    factory.wdlib_redacting = True
    return factory


def install_log_redaction() -> None:
    """Every log record made from now on (any logger, any handler, DEBUG included) is redacted when it is made."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "wdlib_redacting", False):
        logging.setLogRecordFactory(_redacting_factory(current))
