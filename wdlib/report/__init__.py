"""Report mode (notebook 06, `python -m wdlib.report`): the agent researches a topic, a writer drafts a cited report
from the evidence it gathered, and every citation is checked against the page it cites.

`sources` (the evidence and the numbered sources) · `draft` (the writer's prompt and reading its Markdown) ·
`check` (the citation check) · `render` (HTML and Markdown) · `run` (research → write → check → save; the CLI).
"""

from wdlib.report.check import check_draft, content_words, has_facts, lexical_support
from wdlib.report.draft import Draft, Sentence, parse_draft, slugify, writer_messages
from wdlib.report.render import to_html, to_markdown
from wdlib.report.run import Report, ReportError, make_report, resolve_model, write_reports
from wdlib.report.sources import RecordingToolbox, Source, gather_sources, writer_context

__all__ = ["Draft", "RecordingToolbox", "Report", "ReportError", "Sentence", "Source", "check_draft", "content_words",
           "gather_sources", "has_facts", "lexical_support", "make_report", "parse_draft", "resolve_model", "slugify",
           "to_html", "to_markdown", "write_reports", "writer_context", "writer_messages"]
