"""Text extraction and chunking, the gateway's pure steps (no layers involved)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import pytest

from gateway.chunking import chunk_text, split_sentences
from gateway.extract import extract_text, normalize_content_type
from services.runtime.errors import InvalidArgument


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text`, written by hand so the test needs no PDF writer."""
    content = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_html_drops_scripts_and_styles_and_keeps_blocks() -> None:
    html = (
        b"<html><head><title>x</title><style>p{color:red}</style></head><body>"
        b"<h1>Owls</h1><p>Owls hunt at night.</p><script>var secret = 1;</script>"
        b"<ul><li>Barn owl</li><li>Snowy owl</li></ul></body></html>"
    )
    text = extract_text(html, "text/html; charset=utf-8")
    assert "secret" not in text and "color" not in text
    assert text.split("\n\n") == ["Owls", "Owls hunt at night.", "Barn owl", "Snowy owl"]


def test_pdf_text_is_extracted() -> None:
    assert "Volcanoes erupt basalt" in extract_text(minimal_pdf("Volcanoes erupt basalt"), "application/pdf")


def test_bad_inputs_are_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="not supported"):
        normalize_content_type("image/png")
    with pytest.raises(InvalidArgument, match="UTF-8"):
        extract_text(b"\xff\xfe\xfa", "text/plain")
    with pytest.raises(InvalidArgument, match="PDF"):
        extract_text(b"%PDF-1.4 garbage", "application/pdf")


def test_sentences_split_on_terminal_punctuation() -> None:
    assert split_sentences("It rained. Then it snowed! Did it? Yes.") == [
        "It rained.",
        "Then it snowed!",
        "Did it?",
        "Yes.",
    ]
    assert split_sentences("Version 1.5 shipped.") == ["Version 1.5 shipped."]


async def words(texts: Sequence[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def test_chunks_respect_size_and_carry_overlap() -> None:
    text = "\n\n".join(
        " ".join(f"Paragraph {p} sentence {s} has exactly seven words." for s in range(4)) for p in range(6)
    )
    chunks = asyncio.run(chunk_text(text, size=30, overlap=8, count=words))
    assert all(len(c.split()) <= 30 for c in chunks)
    # Every sentence is somewhere, in order.
    joined = " ".join(chunks)
    for p in range(6):
        for s in range(4):
            assert f"Paragraph {p} sentence {s} " in joined
    # Consecutive chunks share a sentence (the overlap).
    for previous, following in itertools.pairwise(chunks):
        first_sentence = following.split(".")[0] + "."
        assert first_sentence in previous


def test_a_sentence_longer_than_a_chunk_is_cut_on_words() -> None:
    long_sentence = " ".join(f"w{i}" for i in range(100)) + "."
    chunks = asyncio.run(chunk_text(long_sentence, size=32, overlap=0, count=words))
    assert len(chunks) >= 4
    assert all(len(c.split()) <= 32 for c in chunks)
    assert " ".join(chunks).split() == long_sentence.split()
