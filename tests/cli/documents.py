"""A small folder of documents on distinct topics, including ones the CLI must skip or report as failed."""

from __future__ import annotations

from pathlib import Path

TEA = "# Green tea\n\nGreen tea leaves are steamed or pan-fired soon after picking, which stops oxidation.\n"
COFFEE = "Espresso is brewed by forcing hot water through finely ground coffee beans under high pressure.\n"
BICYCLE = (
    "<html><head><title>Bikes</title><script>var hidden = 'javascript only';</script></head>"
    "<body><h1>Bicycles</h1><p>A bicycle chain carries power from the pedals to the rear wheel.</p></body></html>"
)
VOLCANO = "Volcanoes erupt molten basalt lava that rises from the mantle."

# Document ids the CLI derives (paths relative to the folder given on the command line).
INGESTED_IDS = {"notes/tea.md", "coffee.txt", "sub/bicycles.html", "papers/volcano.pdf"}


def pdf_with_text(text: str) -> bytes:
    """A one-page PDF whose text pypdf extracts (built by hand: no PDF writer is a dependency)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
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


def make_corpus(root: Path) -> Path:
    """Four good documents, one unsupported file, one invalid-UTF-8 text and a hidden folder."""
    (root / "notes").mkdir(parents=True)
    (root / "sub").mkdir()
    (root / "papers").mkdir()
    (root / ".hidden").mkdir()
    (root / "notes" / "tea.md").write_text(TEA)
    (root / "coffee.txt").write_text(COFFEE)
    (root / "sub" / "bicycles.html").write_text(BICYCLE)
    (root / "papers" / "volcano.pdf").write_bytes(pdf_with_text(VOLCANO))
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "bad.txt").write_bytes(b"caf\xe9 au lait, in Latin-1\n")
    (root / ".hidden" / "secret.md").write_text("never walked\n")
    return root
