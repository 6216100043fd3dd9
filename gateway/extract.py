"""Text from a document's bytes: plain text, Markdown, HTML (scripts and styles dropped) and PDF."""

from __future__ import annotations

import io
import re

from services.runtime.errors import InvalidArgument

SUPPORTED_TYPES = ("text/plain", "text/markdown", "text/html", "application/pdf")
_ALIASES = {"text/x-markdown": "text/markdown", "application/xhtml+xml": "text/html", "": "text/plain"}


def normalize_content_type(content_type: str) -> str:
    """Lower-cased MIME type without parameters; INVALID_ARGUMENT when unsupported."""
    base = content_type.split(";", 1)[0].strip().lower()
    base = _ALIASES.get(base, base)
    if base not in SUPPORTED_TYPES:
        raise InvalidArgument(
            f"content type {content_type!r} is not supported; use one of {', '.join(SUPPORTED_TYPES)}",
            reason="UNSUPPORTED_CONTENT_TYPE",
        )
    return base


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"document is not valid UTF-8 text (byte {exc.start})", reason="NOT_UTF8") from exc


def _html_text(data: bytes) -> str:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(_decode(data))
    for node in tree.css("script, style, noscript, template, head"):
        node.decompose()
    # Block elements end paragraphs, so chunking keeps their boundaries.
    for node in tree.css("p, div, section, article, li, h1, h2, h3, h4, h5, h6, br, tr, pre, blockquote"):
        node.insert_after("\n\n")
    root = tree.body or tree.root
    return root.text(separator=" ") if root is not None else ""


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(f"PDF could not be read: {exc}", reason="BAD_PDF") from exc
    return "\n\n".join(pages)


def extract_text(data: bytes, content_type: str) -> str:
    """Readable text of the document, paragraphs separated by blank lines."""
    kind = normalize_content_type(content_type)
    if kind == "text/html":
        text = _html_text(data)
    elif kind == "application/pdf":
        text = _pdf_text(data)
    else:
        text = _decode(data)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()
