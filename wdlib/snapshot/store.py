"""A recorded web: fetched pages in WARC files, search answers and tool LLM calls in a content-addressed cache.

A snapshot is a folder (zip it to share it):

    manifest.json               dates, backends, models, counts (one entry per recording session)
    warc/<session>.warc.gz      request, response, conversion (extracted text + links) and metadata (fetch errors,
                                refused addresses) records, written with warcio; any WARC file dropped here replays too
    warc/<session>.idx.jsonl    where each record is (rebuilt from the WARC when missing)
    cache/search/ab/<sha256>.json   one search answer, keyed by backend, query, number of results
    cache/llm/ab/<sha256>.json      one LLM reply, keyed by backend, model, messages and sampling
    search/                     only in an exported local web: its pages and bm25s index, so any query is answered

`web.mode: live` + `web.snapshot: PATH` records; `web.mode: replay` + `web.snapshot: PATH` serves search, visit and
the cached LLM calls from the folder only (no key, no network). The first capture of a URL or a key wins, also while
recording: a page visited twice in a run is fetched once, so replaying the run gives its observations byte for byte.
Failures are captures too (a timeout replays as the same timeout). Keys are never recorded: request headers that
carry credentials are redacted and key-like query parameters (SerpAPI's `api_key`) are stripped from recorded URLs.
This module is the folder itself (imports nothing from wdlib); the httpx transport, search and LLM wrappers that the
toolbox plugs in are `wdlib.snapshot.replay`, the local web's export `wdlib.snapshot.export`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

FORMAT = "wdlib-snapshot/1"
_SECRET_PARAMS = {"api_key", "apikey", "key", "access_token", "token", "auth", "password", "secret", "client_secret",
                  "sig", "signature"}
_SECRET_HEADER = re.compile(r"authorization|cookie|api[-_]?key|token|secret|password", re.I)


class SnapshotError(RuntimeError):
    """A snapshot that cannot be used as configured; the message says why and what to do."""


class NotInSnapshot(LookupError):
    """Replay was asked for something the snapshot does not hold."""


# ---------------------------------------------------------------- keys never recorded
def redact_url(url: str) -> str:
    """The URL without its fragment and without key-like query parameters (SerpAPI's api_key, token, ...)."""
    parts = urlsplit(url)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if k.lower() not in _SECRET_PARAMS]
        if len(kept) != len(pairs):
            query = urlencode(kept)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def redact_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, "<redacted>" if _SECRET_HEADER.search(k) else v) for k, v in headers]


def scrub(obj: Any) -> Any:
    """A JSON value with key-like fields removed and key-like query parameters stripped from URL strings."""
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items() if k.lower() not in _SECRET_PARAMS}
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    if isinstance(obj, str) and obj.startswith(("http://", "https://")) and "?" in obj:
        return redact_url(obj) + ("#" + obj.split("#", 1)[1] if "#" in obj else "")
    return obj


def content_key(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
                          ).hexdigest()


def text_digest(text: str) -> str:
    return "sha1:" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the folder
@dataclass
class Entry:
    """Where one record is: a WARC file and the offset of its gzip member (plus what the index line carried)."""

    file: Path
    offset: int
    info: dict


class Snapshot:
    """One snapshot folder, opened to `record` (append; what is already there is served first) or to `replay`
    (read only). `stats` is the toolbox's counter dict: replay counts `snapshot_hits` and `snapshot_misses`.
    `url_key`: the local web's URL folding (`wdlib.sites.url_key`), needed to open an exported local web, which
    answers every spelling of a page's URL as the local web does."""

    def __init__(self, path: str | os.PathLike, mode: str, *, stats: dict | None = None, session: dict | None = None,
                 url_key: Callable[[str], str] | None = None):
        if mode not in ("record", "replay"):
            raise ValueError(f"snapshot mode must be 'record' or 'replay', not {mode!r}")
        self.path, self.mode = Path(path).expanduser(), mode
        self.stats = stats if stats is not None else {}
        for name in ("snapshot_hits", "snapshot_misses"):
            self.stats.setdefault(name, 0)
        if mode == "replay" and not (self.path / "manifest.json").is_file() and not list(self._warcs()):
            raise SnapshotError(f"web.snapshot: {self.path} is not a snapshot (no manifest.json, no warc/*.warc.gz): "
                                f"record one with web.mode: live and web.snapshot: PATH, or export the local web "
                                f"with `python -m wdlib.snapshot export`")
        self.manifest = self._read_manifest()
        self.fold, self.url_key = self.manifest.get("url_folding") == "local-web", url_key
        if self.fold and url_key is None:
            raise SnapshotError(f"{self.path} is an exported local web: open it with url_key=wdlib.sites.url_key")
        self._lock = threading.Lock()
        self._fetches: dict[str, Entry] = {}  # url -> first response or fetch error
        self._refusals: dict[str, str] = {}  # url -> why it was not fetched
        self._conversions: dict[tuple[str, str, str], Entry] = {}  # (url, extractor, source digest) -> record
        self._memo: dict[tuple[str, str], Any] = {}  # cache entries read or written in this session
        for warc in self._warcs():
            self._load_index(warc)
        self._writer = self._out = self._idx = None
        self._warc_path: Path | None = None
        self.session = {"started": _now(), **(session or {}),
                        "counts": dict.fromkeys(("responses", "errors", "refusals", "conversions", "searches",
                                                 "llm_calls", "reused"), 0)}
        if mode == "record":
            self.path.mkdir(parents=True, exist_ok=True)
            self.manifest.setdefault("created", self.session["started"])

    # -- index
    def _warcs(self):
        return sorted((self.path / "warc").glob("*.warc.gz")) + sorted((self.path / "warc").glob("*.warc"))

    def _read_manifest(self) -> dict:
        path = self.path / "manifest.json"
        if path.is_file():
            manifest = json.loads(path.read_text())
            if manifest.get("format", FORMAT) != FORMAT:
                raise SnapshotError(f"{path}: format {manifest.get('format')!r}, this wdlib reads {FORMAT!r}")
            return manifest
        return {"format": FORMAT, "url_folding": "exact", "sessions": []}

    def _lookup_key(self, url: str) -> str:
        url = redact_url(url)
        # an exported local web answers every spelling of a page's URL, like the local web does
        return self.url_key(url) if self.fold else url

    def _add(self, warc: Path, line: dict) -> None:
        entry = Entry(warc, line["offset"], line)
        kind, url = line["type"], line.get("uri", "")
        if kind in ("response", "error"):
            self._fetches.setdefault(self._lookup_key(url), entry)
        elif kind == "refusal":
            self._refusals.setdefault(self._lookup_key(url), line["why"])
        elif kind == "conversion":
            self._conversions.setdefault((self._lookup_key(url), line["extractor"], line["source"]), entry)

    def _load_index(self, warc: Path) -> None:
        idx = warc.with_name(warc.name.split(".warc")[0] + ".idx.jsonl")
        if idx.is_file():
            with open(idx) as f:
                lines = [json.loads(line) for line in f if line.endswith("\n")]  # a cut last line is dropped
        else:
            lines = index_warc(warc)
        for line in lines:
            self._add(warc, line)

    # -- reading
    def fetch_entry(self, url: str) -> Entry | None:
        return self._fetches.get(self._lookup_key(url))

    def refusal(self, url: str) -> str | None:
        return self._refusals.get(self._lookup_key(url))

    async def check_address(self, url: str, checker) -> str | None:
        """Why `url` may not be fetched (a private address), as recorded; recording, `checker(host)` decides for a
        URL the snapshot does not hold yet and a refusal is kept. Replay resolves no host names."""
        why = self.refusal(url)
        if why is not None or self.mode == "replay" or self.fetch_entry(url) is not None:
            return why
        why = await checker(urlsplit(url).hostname)
        if why:
            self.record_refusal(url, why)
        return why

    def read_response(self, entry: Entry) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """(status, reason, headers, raw body) of a response record."""
        from warcio.archiveiterator import ArchiveIterator

        with open(entry.file, "rb") as f:
            f.seek(entry.offset)
            record = next(iter(ArchiveIterator(f)))
            http = record.http_headers
            status = int(http.get_statuscode() or 0)
            reason = http.statusline.split(" ", 1)[1] if " " in http.statusline else ""
            return status, reason, list(http.headers), record.raw_stream.read()

    def parsed(self, url: str, extractor: str, html: str) -> tuple[str, list[str], str] | None:
        """(text, links, html) recorded for this exact page body, when a conversion record has them."""
        entry = self._conversions.get((self._lookup_key(url), extractor, text_digest(html)))
        if entry is None:
            return None
        from warcio.archiveiterator import ArchiveIterator

        with open(entry.file, "rb") as f:
            f.seek(entry.offset)
            data = json.loads(next(iter(ArchiveIterator(f))).content_stream().read())
        return data["text"], data["links"], html

    def cache_get(self, kind: str, key: dict) -> dict | None:
        digest = content_key(key)
        hit = self._memo.get((kind, digest))
        if hit is None:
            path = self.path / "cache" / kind / digest[:2] / f"{digest}.json"
            if path.is_file():
                hit = self._memo[(kind, digest)] = json.loads(path.read_text())
        return hit

    def hit(self) -> None:
        if self.mode == "replay":
            self.stats["snapshot_hits"] += 1
        else:
            self.session["counts"]["reused"] += 1

    def miss(self, what: str) -> NotInSnapshot:
        self.stats["snapshot_misses"] += 1
        return NotInSnapshot(f"{what} is not in the snapshot {self.path.name} (web.mode: replay serves only what "
                             f"was recorded)")

    # -- writing (record mode)
    def _open_writer(self) -> None:
        from warcio.warcwriter import WARCWriter

        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        name = f"{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        (self.path / "warc").mkdir(parents=True, exist_ok=True)
        self._warc_path = self.path / "warc" / f"{name}.warc.gz"
        self._out = open(self._warc_path, "ab")
        self._idx = open(self.path / "warc" / f"{name}.idx.jsonl", "a")
        self._writer = WARCWriter(self._out, gzip=True, warc_version="1.1")
        self.session["warc"] = f"warc/{self._warc_path.name}"
        info = self._writer.create_warcinfo_record(self._warc_path.name, {
            "software": "wdlib (WebDancer reproduction)", "format": "WARC File Format 1.1",
            "description": "wdlib snapshot: pages fetched by the visit tool"})
        self._writer.write_record(info)

    def _write(self, record, line: dict) -> str:
        """Append one record and its index line; returns its WARC-Record-ID."""
        if self.mode != "record":
            raise SnapshotError("this snapshot is open for replay: nothing is written to it")
        with self._lock:
            if self._writer is None:
                self._open_writer()
            offset = self._out.tell()
            self._writer.write_record(record)
            self._out.flush()
            line = {**line, "offset": offset, "length": self._out.tell() - offset,
                    "id": record.rec_headers.get_header("WARC-Record-ID")}
            self._idx.write(json.dumps(line, ensure_ascii=False) + "\n")
            self._idx.flush()
            self._add(self._warc_path, line)
            return line["id"]

    def record_exchange(self, method: str, url: str, request_headers: list[tuple[str, str]], status: int,
                        reason: str, headers: list[tuple[str, str]], body: bytes, *, truncated: str | None = None,
                        error: str | None = None) -> None:
        """A request record (credentials redacted) and the response as received (raw body, as far as it was read).
        `error`: the body was cut by this failure (type: message), which replay raises again after the body."""
        from warcio.statusandheaders import StatusAndHeaders

        url = redact_url(url)
        if self._fetches.get(self._lookup_key(url)) is not None:
            return  # first capture wins (two visits of a new page at the same moment both fetched it)
        w = self._writer_or_open()
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        response_id = f"<urn:uuid:{uuid.uuid4()}>"
        request = w.create_warc_record(url, "request", payload=io.BytesIO(b""), length=0, http_headers=StatusAndHeaders(
            f"{method} {target} HTTP/1.1", redact_headers(request_headers), is_http_request=True),
            warc_headers_dict={"WARC-Concurrent-To": response_id})
        # The body is stored as received: Content-Encoding kept; a de-chunked body loses its Transfer-Encoding.
        kept = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        warc_headers = {"WARC-Record-ID": response_id}
        if truncated:
            warc_headers["WARC-Truncated"] = truncated
        if error:
            warc_headers["WDLIB-Stream-Error"] = error
        response = w.create_warc_record(url, "response", payload=io.BytesIO(body), length=len(body),
                                        http_headers=StatusAndHeaders(f"{status} {reason}".strip(), kept,
                                                                      protocol="HTTP/1.1"),
                                        warc_headers_dict=warc_headers)
        self._write(request, {"type": "request", "uri": url})
        self._write(response, {"type": "response", "uri": url, "status": status,
                               **({"stream_error": error} if error else {})})
        self.session["counts"]["responses"] += 1

    def _writer_or_open(self):
        with self._lock:
            if self._writer is None:
                self._open_writer()
        return self._writer

    def _metadata(self, url: str, kind: str, body: dict, line: dict) -> None:
        w = self._writer_or_open()
        data = json.dumps({"kind": kind, **body}, ensure_ascii=False).encode()
        record = w.create_warc_record(url, "metadata", payload=io.BytesIO(data), length=len(data),
                                      warc_content_type="application/json", warc_headers_dict={"WDLIB-Kind": kind})
        self._write(record, {"type": kind, "uri": url, **line})

    def record_error(self, url: str, error_type: str, message: str) -> None:
        url = redact_url(url)
        if self._fetches.get(self._lookup_key(url)) is None:
            self._metadata(url, "error", {"error_type": error_type, "message": message},
                           {"error_type": error_type, "message": message})
            self.session["counts"]["errors"] += 1

    def record_refusal(self, url: str, why: str) -> None:
        url = redact_url(url)
        if self.refusal(url) is None:
            self._metadata(url, "refusal", {"why": why}, {"why": why})
            self.session["counts"]["refusals"] += 1

    def record_parsed(self, url: str, extractor: str, html: str, text: str, links: list[str]) -> None:
        """A conversion record: the page's extracted text and links, for the body it was extracted from (replay
        then skips the extractor: faster, and the same text whatever extractor version is installed)."""
        url, source = redact_url(url), text_digest(html)
        if (self._lookup_key(url), extractor, source) in self._conversions:
            return
        w = self._writer_or_open()
        data = json.dumps({"extractor": extractor, "text": text, "links": links}, ensure_ascii=False).encode()
        record = w.create_warc_record(url, "conversion", payload=io.BytesIO(data), length=len(data),
                                      warc_content_type="application/json",
                                      warc_headers_dict={"WDLIB-Extractor": extractor, "WDLIB-Source-Digest": source})
        self._write(record, {"type": "conversion", "uri": url, "extractor": extractor, "source": source})
        self.session["counts"]["conversions"] += 1

    def cache_put(self, kind: str, key: dict, value: dict) -> None:
        """Store one answer under the hash of its key (the key is kept in the file, scrubbed of credentials)."""
        if self.mode != "record":
            return
        digest = content_key(key)
        if (kind, digest) in self._memo or self.cache_get(kind, key) is not None:
            return  # first capture wins
        value = scrub({"key": key, **value, "recorded": _now()})
        path = self.path / "cache" / kind / digest[:2] / f"{digest}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value, ensure_ascii=False, indent=1))
        tmp.replace(path)
        self._memo[(kind, digest)] = value
        self.session["counts"]["searches" if kind == "search" else "llm_calls"] += 1

    # -- closing
    def counts(self) -> dict:
        kinds = {"search": 0, "llm": 0}
        for kind in kinds:
            folder = self.path / "cache" / kind
            kinds[kind] = sum(1 for _ in folder.glob("*/*.json")) if folder.is_dir() else 0
        fetches = list(self._fetches.values())
        return {"responses": sum(e.info["type"] == "response" for e in fetches),
                "fetch_errors": sum(e.info["type"] == "error" for e in fetches), "refusals": len(self._refusals),
                "conversions": len(self._conversions), "searches": kinds["search"], "llm_calls": kinds["llm"]}

    def close(self) -> None:
        """Record mode: close the WARC file and add this session to the manifest (nothing happens in replay)."""
        if self.mode != "record":
            return
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._idx.close()
                self._out = self._idx = self._writer = None
            if self.session.get("ended"):
                return
            self.session["ended"] = _now()
            # another process may have added its session meanwhile
            manifest = self._read_manifest() if (self.path / "manifest.json").is_file() else self.manifest
            manifest.setdefault("created", self.session["started"])
            manifest["updated"] = self.session["ended"]
            manifest.setdefault("sessions", []).append(self.session)
            manifest["counts"] = self.counts()
            tmp = self.path / f"manifest.json.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
            tmp.replace(self.path / "manifest.json")
            self.manifest = manifest


def index_warc(warc: Path) -> list[dict]:
    """Index lines for a WARC file written by anything (wget --warc-file, browsertrix, ...): its responses, and
    the conversion / metadata records wdlib writes."""
    from warcio.archiveiterator import ArchiveIterator

    lines = []
    with open(warc, "rb") as f:
        it = ArchiveIterator(f)
        for record in it:
            h = record.rec_headers
            line = {"uri": h.get_header("WARC-Target-URI") or "", "offset": it.get_record_offset()}
            if record.rec_type == "response" and record.http_headers is not None:
                line.update(type="response", status=int(record.http_headers.get_statuscode() or 0))
                if h.get_header("WDLIB-Stream-Error"):
                    line["stream_error"] = h.get_header("WDLIB-Stream-Error")
            elif record.rec_type == "conversion" and h.get_header("WDLIB-Extractor"):
                line.update(type="conversion", extractor=h.get_header("WDLIB-Extractor"),
                            source=h.get_header("WDLIB-Source-Digest"))
            elif record.rec_type == "metadata" and h.get_header("WDLIB-Kind") in ("error", "refusal"):
                body = json.loads(record.content_stream().read())
                line.update(type=body.pop("kind"), **body)
            else:
                continue
            lines.append(line)
    return lines
