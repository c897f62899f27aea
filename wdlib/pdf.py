"""PDF documents for visit: recognising one and reading its text (pypdf), page after page, only as far as needed."""

from __future__ import annotations

import io

PDF_TYPES = ("application/pdf", "application/x-pdf")


def is_pdf(content_type: str, body: bytes) -> bool:
    """A PDF by its content type or by its signature (servers often label PDFs as binary, or wrongly)."""
    return content_type.split(";")[0].strip().lower() in PDF_TYPES or body[:5] == b"%PDF-"


def pdf_text(data: bytes, max_chars: int) -> str:
    """The text of a PDF (pypdf), page after page until `max_chars` are collected (what visit can use at most), so
    a long document costs no more than the pages it needs. Raises on a file pypdf cannot read."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        reader.decrypt("")  # many "encrypted" PDFs only restrict editing and open with the empty password
    parts, total = [], 0
    for page in reader.pages:
        text = (page.extract_text() or "").strip()
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return "\n\n".join(p for p in parts if p)[:max_chars]
