"""A reproducible web: live runs recorded as WARC snapshots and replayed offline, and the local web exported as one.

    store     the snapshot folder: WARC files (warcio) + index, the content-addressed search / LLM cache, the manifest;
              keys never recorded (`redact_url`, `scrub`)
    replay    what the toolbox plugs in: the httpx transport, search backend and LLM client that record or replay
    export    the local web written as a snapshot; the command line (`python -m wdlib.snapshot export|info`)

Inside wdlib import the module you use (`from wdlib.snapshot.store import Snapshot`): the export stands above the
toolbox, whose replay side stands below it.
"""

from wdlib.snapshot.export import export_local_web, main
from wdlib.snapshot.replay import SnapshotLLM, SnapshotSearch, SnapshotTransport, open_snapshot
from wdlib.snapshot.store import NotInSnapshot, Snapshot, SnapshotError, index_warc, redact_url, scrub

__all__ = ["NotInSnapshot", "Snapshot", "SnapshotError", "SnapshotLLM", "SnapshotSearch", "SnapshotTransport",
           "export_local_web", "index_warc", "main", "open_snapshot", "redact_url", "scrub"]
