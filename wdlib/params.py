"""Reading a params file into the schema (`wdlib.config`): everything between the YAML on disk (or a notebook's
papermill parameters) and a validated `Config`, read without trusting the file.

- `load` (a path), `from_dict` (a mapping), `from_notebook` / `from_namespace` (a notebook's parameters): the ways in;
  each raises `config.ParamsError` naming the file that holds the value and the key path, e.g.
  `params/7b.yaml: dapo.epsilon_hihg: unknown key`.
- `read_yaml`: safe YAML; a key written twice in one mapping is an error (PyYAML keeps the last silently); more
  than MAX_VALUES values once aliases are expanded is an error (a 1 KB file of nested aliases expands to millions,
  and an error message that printed them grew to 34.7 MB).
- `extends:` chains merged (`merge`), remembering which file set each key (`origins`, `where`), so an error names
  the file that holds the value.
- `key_literals`: keys never live in params. An `*_env` setting that is not a variable name, a key-named setting
  (api_key, token, Authorization...) with a key-like value, or a key-shaped value anywhere (sk-…, hf_…, a password
  in a URL, ?api_key=…) is refused; its value is never shown.
- settings each valid alone that contradict each other (`_combinations`).
- `format_errors`: pydantic's errors as `file: key.path: message (got value)`, the value cut short.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from wdlib.config import PARAMS_DIR, REPO_ROOT, SECTIONS, Config, ModelsParams, ParamsError

MAX_VALUES = 100_000  # values in a params file once YAML aliases are expanded (a 1 KB file can expand to millions)
Origins = dict[tuple, str]  # key path → the file that set it


# ---------------------------------------------------------------- the ways in
def load(path: str | os.PathLike) -> Config:
    """Load a params YAML (path relative to cwd, else to params/)."""
    p = Path(path)
    if not p.is_file() and (PARAMS_DIR / p).is_file():
        p = PARAMS_DIR / p
    label = _label(p) if p.is_file() else str(path)
    return from_dict(read_yaml(p, label), label, p.resolve().parent)


def from_dict(data: dict, label: str = "<params>", base_dir: Path = PARAMS_DIR) -> Config:
    """Validate a params mapping (already read from YAML or given by papermill)."""
    check_size(data, label)
    data, set_by = _resolve_extends(dict(data), base_dir, label)
    data.pop("extends", None)
    problems = key_literals(data)
    if not problems:
        try:
            cfg = Config.model_validate(data)
        except ValidationError as exc:
            raise ParamsError(format_errors(label, exc, set_by)) from None
        problems = _combinations(cfg)
    if problems:
        raise ParamsError("\n".join(f"{where(set_by, path, label)}: {'.'.join(map(str, path))}: {why}"
                                     for path, why in problems))
    cfg.source = label
    return cfg


def from_notebook(params_file: str | None = None, **sections: Any) -> Config:
    """Build the config inside a notebook from its papermill parameters.

    `papermill nb.ipynb out.ipynb -f params/7b.yaml` injects each top-level key as a variable; pass them here.
    Sections left empty ({} / None) fall back to `params_file` (the pipeline passes it) or the notebook default."""
    given = {k: v for k, v in sections.items() if v not in (None, {}, "")}
    unknown = set(given) - set(SECTIONS) - {"extends"}
    label = params_file or "<papermill parameters>"
    if unknown:
        raise ParamsError(f"{label}: {sorted(unknown)[0]}: unknown key")
    if not params_file and not given:
        params_file = "smoke.yaml"  # a notebook opened in JupyterLab with no parameters runs the CPU smoke settings
    if params_file:
        base = load(params_file)
        return from_dict(merge(base.dump(), given), base.source) if given else base
    return from_dict(given, label)


def from_namespace(ns: dict[str, Any]) -> Config:
    """`cfg = params.from_namespace(globals())` in a notebook: reads `params_file` and the section variables."""
    return from_notebook(ns.get("params_file"), **{k: ns.get(k) for k in ("extends",) + SECTIONS})


# ---------------------------------------------------------------- the YAML
class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses a key written twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key, _ in node.value:
            if key.tag != "tag:yaml.org,2002:merge" and str(key.value) in seen:
                raise ParamsError(f"{key.value} (line {key.start_mark.line + 1}): duplicate key; YAML keeps only the "
                                  f"last, so write it once")
            seen.add(str(key.value))
        return super().construct_mapping(node, deep)


def check_size(data: Any, label: str) -> None:
    """Count values with every alias expanded, stopping past MAX_VALUES (nothing is expanded in memory)."""
    n, stack = 0, [data]
    while stack and n <= MAX_VALUES:
        value, n = stack.pop(), n + 1
        stack.extend(value.values() if isinstance(value, dict) else value if isinstance(value, list) else ())
    if n > MAX_VALUES:
        raise ParamsError(f"{label}: more than {MAX_VALUES:,} values once YAML aliases are expanded")


def read_yaml(path: Path, label: str) -> dict:
    """A params file's mapping; ParamsError (prefixed with `label`) for anything else."""
    if not path.is_file():
        raise ParamsError(f"{label}: params file not found")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader) or {}
    except ParamsError as exc:
        raise ParamsError(f"{label}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{label}: not valid YAML: {exc}") from None
    except (RecursionError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{label}: not a params file ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{label}: top level must be a mapping of sections, got {type(data).__name__}")
    check_size(data, label)
    return data


# ---------------------------------------------------------------- extends: and where each key came from
def _label(path: Path) -> str:
    return str(path.resolve().relative_to(REPO_ROOT)) if path.resolve().is_relative_to(REPO_ROOT) else str(path)


def _resolve_extends(data: dict, base_dir: Path, label: str, seen: tuple[Path, ...] = ()) -> tuple[dict, Origins]:
    """The file merged over its `extends:` chain, and which file set each key."""
    own = origins(data, label)
    parent = data.get("extends")
    if not parent:
        return data, own
    if not isinstance(parent, str):
        raise ParamsError(f"{label}: extends: must be a file name")
    parent_path = (base_dir / parent).resolve()
    if not parent_path.is_file() and (PARAMS_DIR / parent).is_file():
        parent_path = (PARAMS_DIR / parent).resolve()
    if parent_path in seen:
        raise ParamsError(f"{label}: extends: cycle through {_label(parent_path)}")
    parent_label = _label(parent_path)
    if not parent_path.is_file():
        raise ParamsError(f"{label}: extends: params file not found: {parent}")
    parent_data, set_by = _resolve_extends(read_yaml(parent_path, parent_label), parent_path.parent, parent_label,
                                           seen + (parent_path,))
    return merge(parent_data, {k: v for k, v in data.items() if k != "extends"}), {**set_by, **own}


def merge(base: dict, over: dict) -> dict:
    """`over` merged into `base`, mappings key by key (a copy: neither is changed)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def origins(data: dict, label: str, path: tuple = ()) -> Origins:
    """Every key path of `data` (sections, their keys, nested keys) → `label`."""
    out = {}
    for key, value in data.items():
        out[path + (key,)] = label
        if isinstance(value, dict):
            out.update(origins(value, label, path + (key,)))
    return out


def where(set_by: Origins, path: tuple, label: str) -> str:
    """The file that set `path` (or the nearest key above it); `label` when none did."""
    return next((set_by[path[:n]] for n in range(len(path), 0, -1) if path[:n] in set_by), label)


# ---------------------------------------------------------------- keys never live in params
_KEY_NAME = re.compile(r"(^|[_-])(api[_-]?key|apikey|token|secret|password|passwd|authorization|bearer|"
                       r"private[_-]?key|credentials?)$", re.I)
_KEY_VALUE = re.compile(r"^(sk-|sk_|hf_|ghp_|gho_|github_pat_|xox[abprs]-|AKIA|AIza|bearer\s)|://[^/\s:@]+:[^/\s@]+@|"
                        r"[?&](api[_-]?key|apikey|access[_-]?token|token|key|secret|password)=", re.I)


def _not_env_name(value: str) -> bool:
    random = len(value) >= 20 and all(re.search(c, value) for c in ("[a-z]", "[A-Z]", "[0-9]"))
    return random or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", value) or bool(_KEY_VALUE.search(value))


def key_literals(data: Any, path: tuple = ()) -> list[tuple[tuple, str]]:
    """(key path, why) for each key written into params."""
    if isinstance(data, str):
        return [(path, "looks like a key or a credential: keys come from environment variables named in params "
                       "(e.g. api_key_env: OPENAI_API_KEY); value not shown")] if _KEY_VALUE.search(data) else []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    found = []
    for key, value in items:
        name, at = str(key), path + (key,)
        if name.endswith("_env") and isinstance(value, str) and _not_env_name(value):
            found.append((at, "must be the NAME of the environment variable holding the key; value not shown"))
        elif _KEY_NAME.search(name) and isinstance(value, str) and len(value) >= 8 and not value.startswith("<"):
            found.append((at, "a key in params: keys come from the environment (models.<role>.api_key_env: "
                                 "NAME); value not shown"))
        else:
            found += key_literals(value, at)
    return found


# ---------------------------------------------------------------- settings that contradict each other
def _combinations(cfg: Config) -> list[tuple[tuple, str]]:
    """Settings each valid alone that contradict each other (TRL or a stage would fail later, naming neither)."""
    d, e2h, found = cfg.dapo, cfg.synthesis.e2hqa, []
    if (d.per_device_train_batch_size * d.gradient_accumulation_steps) % d.num_generations:
        found.append((("dapo", "per_device_train_batch_size"), f"{d.per_device_train_batch_size} × "
                      f"gradient_accumulation_steps ({d.gradient_accumulation_steps}) must be a multiple of "
                      f"num_generations ({d.num_generations}): a step trains on whole groups"))
    if d.epsilon_high < d.epsilon:
        found.append((("dapo", "epsilon_high"), f"{d.epsilon_high} is below epsilon ({d.epsilon})"))
    if e2h.min_hops > e2h.hops:
        found.append((("synthesis", "e2hqa", "min_hops"), f"{e2h.min_hops} is more than hops ({e2h.hops})"))
    specs = {("models", k): getattr(cfg.models, k) for k in ModelsParams.model_fields}
    specs.update({("eval", "extra_models", k): v for k, v in cfg.eval.extra_models.items()})
    found += [(path + ("max_new_tokens",), f"{spec.max_new_tokens} is more than context_length "
               f"({spec.context_length})") for path, spec in specs.items()
              if spec is not None and spec.max_new_tokens > spec.context_length]
    return found


# ---------------------------------------------------------------- messages
def _show(value: Any) -> str:
    """A rejected value for a message: short, and not at all when it could be a key."""
    text = repr(value)
    if isinstance(value, str) and len(value) >= 16 and not re.search(r"\s", value) and re.search(r"\d", value):
        return " (value not shown: it could be a key)"
    hint = "; YAML reads 1e-5 as text: write 1.0e-5" if isinstance(value, str) and \
        re.fullmatch(r"[-+]?\d+[eE][-+]?\d+", value) else ""
    return f" (got {text if len(text) <= 60 else text[:60] + '…'}){hint}"


def format_errors(label: str, exc: ValidationError, set_by: Origins) -> str:
    """`file: key.path: message (got value)` per error, the file being the one that set the key."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<top>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] != "extra_forbidden" and not isinstance(err.get("input"), (dict, list)):  # never a whole tree
            msg += _show(err.get("input"))
        lines.append(f"{where(set_by, tuple(err['loc']), label)}: {key}: {msg}")
    return "\n".join(lines)
