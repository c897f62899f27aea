"""Run the numbered notebooks in order with one params YAML (papermill).

    python -m wdlib.pipeline params/smoke.yaml                # all six
    python -m wdlib.pipeline params/smoke.yaml --only 03,04   # a subset
    python -m wdlib.pipeline params/smoke.yaml --resume       # skip notebooks that already completed
    python -m wdlib.pipeline params/7b.yaml --check           # only the preflight: what this machine lacks

Before the first notebook the preflight (`wdlib.preflight`: GPUs, packages, models, keys, data, disk) checks what the
selected notebooks need; a problem stops the pipeline before any kernel starts (`--no-check` skips it). Executed
copies land in outputs/<run>/notebooks/, key values redacted (`wdlib.redact`: a cell that printed one does not leave
it in the copy). A notebook that completes leaves a `.done` marker beside its copy; `--resume` skips those. The first
failure stops the pipeline and prints the failing cell's error (redacted too). What the cells print, progress bars
included, streams to the terminal as they run (redacted the same way; `--quiet`: only the pipeline's own lines).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from wdlib import config, preflight
from wdlib.params import load as load_params
from wdlib.redact import redact

NOTEBOOK_DIR = config.REPO_ROOT / "notebooks"


def notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def select(only: str | None) -> list[Path]:
    nbs = notebooks()
    if not only:
        return nbs
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    chosen = [nb for nb in nbs if nb.name[:2] in wanted or nb.stem in wanted]
    missing = wanted - {nb.name[:2] for nb in chosen} - {nb.stem for nb in chosen}
    if missing:
        raise SystemExit(f"--only: no notebook {sorted(missing)}; have {[nb.name[:2] for nb in nbs]}")
    return chosen


def parameters_for(params_path: Path) -> dict:
    """What papermill injects: the YAML's own top-level keys (as `-f` would) plus `params_file` for messages."""
    params = yaml.safe_load(params_path.read_text()) or {}
    params["params_file"] = str(params_path.resolve())
    return params


class StageFailed(RuntimeError):
    pass


def redact_notebook(path: Path) -> None:
    """The executed copy without key values (outputs, tracebacks, the injected parameters)."""
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        clean = redact(text)
        if clean != text:
            path.write_text(clean, encoding="utf-8")


class RedactedStream:
    """A notebook's stdout/stderr on its way to the terminal (papermill's stdout_file/stderr_file), key values masked
    as in the executed copy. tqdm's carriage returns pass through, so a stage's progress bar updates in place."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        self.stream.write(redact(text))

    def flush(self) -> None:
        self.stream.flush()


def _params_path(params: str | Path) -> Path:
    path = Path(params)
    if not path.is_file() and (config.PARAMS_DIR / path).is_file():
        path = config.PARAMS_DIR / path
    return path


def check(params: str | Path, only: str | None = None) -> tuple[bool, str]:
    """The preflight of the notebooks `only` selects: (ready, report)."""
    cfg = load_params(_params_path(params))
    notebooks = [nb.name[:2] for nb in select(only)]
    problems = preflight.check(cfg, notebooks)
    return not any(not p.warning for p in problems), preflight.report(cfg, problems, notebooks)


def run(params: str | Path, only: str | None = None, resume: bool = False, kernel_name: str | None = None,
        log_output: bool = False, check_first: bool = True, stream_output: bool = False) -> list[Path]:
    """Execute the selected notebooks; returns the executed copies. Raises StageFailed when the preflight finds a
    problem (before any kernel starts) or on the first failing notebook. `stream_output`: what the cells print goes to
    this process's stdout/stderr as they run (`log_output`: papermill's logger, rich outputs too)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    params_path = _params_path(params)
    cfg = load_params(params_path)  # fail early, with file and key, before any kernel starts
    if check_first:
        ready, text = check(params_path, only)
        print(f"[pipeline] {text}", flush=True)
        if not ready:
            raise StageFailed(f"preflight found problems; nothing was run (--no-check skips the preflight)\n{text}")
    parameters = parameters_for(params_path)
    out_dir = cfg.paths.notebooks
    out_dir.mkdir(parents=True, exist_ok=True)
    streams = ({"stdout_file": RedactedStream(sys.stdout), "stderr_file": RedactedStream(sys.stderr)}
               if stream_output else {})
    executed = []
    for nb in select(only):
        out = out_dir / nb.name
        marker = out.with_suffix(".done")
        if resume and marker.is_file():
            print(f"[pipeline] {nb.name}: done earlier, skipped (--resume)")
            executed.append(out)
            continue
        marker.unlink(missing_ok=True)
        print(f"[pipeline] {nb.name} → {out}", flush=True)
        start = time.time()
        try:
            pm.execute_notebook(str(nb), str(out), parameters=parameters, cwd=str(config.REPO_ROOT),
                                kernel_name=kernel_name, log_output=log_output, progress_bar=False, **streams)
        except PapermillExecutionError as exc:
            raise StageFailed(redact(f"{nb.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
                                     f"{''.join(exc.traceback[-3:]) if exc.traceback else ''}\n"
                                     f"executed copy with the error: {out}")) from None
        finally:
            redact_notebook(out)
        marker.write_text(json.dumps({"seconds": round(time.time() - start, 1), "params": str(params_path)}))
        print(f"[pipeline] {nb.name}: ok in {time.time() - start:.0f}s", flush=True)
        executed.append(out)
    return executed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wdlib.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("params", help="params YAML, e.g. params/smoke.yaml")
    ap.add_argument("--only", help="comma-separated notebook numbers, e.g. 03,04")
    ap.add_argument("--resume", action="store_true", help="skip notebooks that completed in an earlier run")
    ap.add_argument("--quiet", action="store_true",
                    help="only the pipeline's own lines, not what the cells print (progress bars included)")
    ap.add_argument("--log-output", action="store_true", help="papermill's log of every cell output, rich ones too")
    ap.add_argument("--check", action="store_true", help="only the preflight: exit 1 and list what is missing")
    ap.add_argument("--no-check", action="store_true", help="skip the preflight before the first notebook")
    args = ap.parse_args(argv)
    try:
        if args.check:
            ready, text = check(args.params, args.only)
            print(text, file=sys.stdout if ready else sys.stderr)
            return 0 if ready else 1
        run(args.params, only=args.only, resume=args.resume, log_output=args.log_output, check_first=not args.no_check,
            stream_output=not args.quiet)
    except (StageFailed, config.ParamsError) as exc:
        print(f"[pipeline] FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
