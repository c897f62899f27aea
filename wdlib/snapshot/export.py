"""The local web as a snapshot: every page fetched through its loopback server as the visit tool sees it, written as
response + conversion records, with the bm25s index beside them. The offline world and a recorded live run are then
served by the same replay code (`wdlib.snapshot.replay`). Also the command line, `main`:

    python -m wdlib.snapshot export --params params/smoke.yaml --out PATH [--limit N]
    python -m wdlib.snapshot info PATH
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from pathlib import Path

from wdlib import params
from wdlib.config import Config, ParamsError
from wdlib.sites import url_key
from wdlib.snapshot.store import Snapshot, SnapshotError


def export_local_web(cfg: Config, out: str | Path, *, limit: int | None = None, progress: bool = True) -> dict:
    """Write the local web of `cfg.web` as a snapshot at `out`: each page as the loopback server serves it, with
    the visit tool's own extraction (conversion records), and the search index; returns the manifest."""
    from tqdm.auto import tqdm

    # imported here: the toolbox imports the snapshot package (its replay side) when it opens one
    from wdlib import web as localweb
    from wdlib.tools import Toolbox

    out = Path(out)
    if (out / "manifest.json").exists() or (out / "warc").exists():
        raise SnapshotError(f"{out} already holds a snapshot: export into a new folder")
    web_cfg = cfg.web.model_copy(update={"mode": "local", "snapshot": None})
    localweb.build(web_cfg, quiet=not progress)
    backends = {"search": "local (bm25s index in search/)", "fetch": "wdlib.web loopback server",
                "extractor": web_cfg.extractor}
    snap = Snapshot(out, "record", url_key=url_key, session={
        "source": "local web export", "backends": backends,
        "sites": web_cfg.sites, "encyclopedia_max_pages": web_cfg.encyclopedia_max_pages})
    snap.manifest["url_folding"] = "local-web"  # every spelling of a page's URL finds it, as in local mode
    snap.fold = True

    async def fetch_all(tb: Toolbox) -> int:
        n = 0
        for page in tqdm(tb.web.pages[:limit], desc="[snapshot] export", unit="page", disable=not progress,
                         mininterval=1.0):
            got = await tb.fetch(page.url)
            if not got.ok:
                continue
            snap.record_exchange("GET", got.url, [("User-Agent", "wdlib export")], got.status, "OK",
                                 [("Content-Type", got.content_type)], got.html.encode("utf-8"))
            snap.record_parsed(got.url, web_cfg.extractor, got.html, got.text, got.links)
            n += 1
        return n

    with Toolbox(web_cfg) as tb:
        pages = asyncio.run(fetch_all(tb))
        shutil.copytree(localweb.index_dir(web_cfg), out / "search" / "index")
        with open(out / "search" / "pages.jsonl", "w") as f:
            for page in tb.web.pages:  # the search index needs every page (snippets), whatever `limit` says
                record = {k: v for k, v in page.record().items() if k not in ("html", "file")}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    snap.session["pages"] = pages
    snap.close()
    return snap.manifest


def main(argv: list[str] | None = None) -> int:
    """`python -m wdlib.snapshot export --params params/smoke.yaml --out PATH [--limit N]` writes the local web as a
    snapshot; `python -m wdlib.snapshot info PATH` prints a snapshot's manifest and counts."""
    parser = argparse.ArgumentParser(prog="python -m wdlib.snapshot", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write the local web of --params as a snapshot")
    export.add_argument("--params", default="smoke.yaml")
    export.add_argument("--out", required=True)
    export.add_argument("--limit", type=int, default=None, help="export only the first N pages")
    info = sub.add_parser("info", help="a snapshot's manifest and counts")
    info.add_argument("path")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            manifest = export_local_web(params.load(args.params), args.out, limit=args.limit)
        else:
            snap = Snapshot(args.path, "replay", url_key=url_key)
            manifest = {**snap.manifest, "counts": snap.counts()}
        print(json.dumps(manifest, indent=1, ensure_ascii=False))
        return 0
    except (SnapshotError, ParamsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
