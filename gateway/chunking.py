"""Split text into chunks on paragraph and sentence boundaries, sized in the embedding model's tokens.

Token counts come from the model's own tokenizer (the inference service's
Tokenize), so a chunk of `size` tokens fits the model without truncation.
Consecutive chunks share about `overlap` tokens of whole sentences.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

CountTokens = Callable[[Sequence[str]], Awaitable[list[int]]]

_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9À-ÖØ-Þ#*\-])")


@dataclass(frozen=True)
class Piece:
    text: str
    tokens: int
    paragraph_start: bool


def split_sentences(paragraph: str) -> list[str]:
    parts = [p.strip() for p in _SENTENCE_END.split(paragraph)]
    return [p for p in parts if p]


def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


async def _pieces(text: str, size: int, count: CountTokens) -> list[Piece]:
    units: list[tuple[str, bool]] = []
    for paragraph in paragraphs(text):
        for i, sentence in enumerate(split_sentences(paragraph.replace("\n", " "))):
            units.append((sentence, i == 0))
    if not units:
        return []
    counts = await count([u[0] for u in units])
    pieces: list[Piece] = []
    for (sentence, starts), tokens in zip(units, counts, strict=True):
        if tokens <= size:
            pieces.append(Piece(sentence, tokens, starts))
            continue
        # A sentence longer than a chunk is cut on word boundaries into near-equal parts.
        words = sentence.split()
        parts = -(-tokens // size) + 1
        step = max(1, -(-len(words) // parts))
        fragments = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
        fragment_counts = await count(fragments)
        for j, (fragment, n) in enumerate(zip(fragments, fragment_counts, strict=True)):
            pieces.append(Piece(fragment, min(n, size), starts and j == 0))
    return pieces


async def chunk_text(text: str, size: int, overlap: int, count: CountTokens) -> list[str]:
    """Chunks of at most about `size` tokens, preferring to end at paragraph boundaries."""
    pieces = await _pieces(text, size, count)
    chunks: list[str] = []
    current: list[Piece] = []
    used = 0
    for piece in pieces:
        # Close the chunk when the piece does not fit, or at a paragraph start once it is mostly full.
        full = used + piece.tokens > size
        natural_break = piece.paragraph_start and used >= size * 0.75
        if current and (full or natural_break):
            chunks.append(_join(current))
            carried: list[Piece] = []
            carried_tokens = 0
            for previous in reversed(current):
                if carried_tokens + previous.tokens > overlap or carried_tokens + previous.tokens + piece.tokens > size:
                    break
                carried.insert(0, previous)
                carried_tokens += previous.tokens
            current, used = carried, carried_tokens
        current.append(piece)
        used += piece.tokens
    if current:
        chunks.append(_join(current))
    return chunks


def _join(pieces: list[Piece]) -> str:
    out = ""
    for piece in pieces:
        if not out:
            out = piece.text
        else:
            out += ("\n\n" if piece.paragraph_start else " ") + piece.text
    return out
