"""Chunking and BM25 ranking of a document's text against a query.

Text is cut into overlapping windows of words, so a passage that straddles a boundary
still lands whole in one chunk. Chunks are ranked with Okapi BM25 over lower-cased
word tokens, with the document's own chunks as the collection: a term that occurs in
every chunk says little, a rare one a lot. Without a query (or with one that has no
word characters) nothing is ranked: the chunks are counted and ``top_chunks`` is
empty, since a "best match" for nothing would be noise. Chunks that share no term
with the query score 0 and are left out for the same reason.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

CHUNK_WORDS = 200
CHUNK_OVERLAP = 40
PREVIEW_CHARS = 240
_TOKEN = re.compile(r"\w+")


@dataclass(frozen=True)
class ScoredChunk:
    """One chunk's position in the document, its BM25 score and the start of its text."""

    index: int
    score: float
    preview: str

    def as_dict(self) -> dict[str, int | float | str]:
        return {"index": self.index, "score": self.score, "preview": self.preview}


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def chunk_text(text: str, size: int = CHUNK_WORDS, overlap: int = CHUNK_OVERLAP) -> list[str]:
    """Windows of ``size`` words, each starting ``size - overlap`` words after the last."""
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap must be >= 0 and < size {size}; got {overlap}")
    words = text.split()
    if not words:
        return []
    # The last window starts where it still adds words that no earlier window holds.
    starts = range(0, max(len(words) - overlap, 1), size - overlap)
    return [" ".join(words[start : start + size]) for start in starts]


def bm25_scores(
    query: Sequence[str], documents: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75
) -> list[float]:
    """Okapi BM25 of every tokenized document for the query terms (Lucene's idf, >= 0)."""
    if not documents:
        return []
    frequencies = [Counter(doc) for doc in documents]
    average_length = sum(map(len, documents)) / len(documents) or 1.0
    containing = Counter(term for counts in frequencies for term in counts)
    total = len(documents)
    scores: list[float] = []
    for doc, counts in zip(documents, frequencies, strict=True):
        norm = k1 * (1 - b + b * len(doc) / average_length)
        score = 0.0
        for term in query:
            tf = counts[term]
            if tf:
                idf = math.log(1 + (total - containing[term] + 0.5) / (containing[term] + 0.5))
                score += idf * tf * (k1 + 1) / (tf + norm)
        scores.append(score)
    return scores


def top_chunks(chunks: Sequence[str], query: str | None, limit: int = 3) -> list[ScoredChunk]:
    """The ``limit`` best chunks for the query, best first; ties keep document order."""
    terms = tokenize(query or "")
    if not terms:
        return []
    scores = bm25_scores(terms, [tokenize(chunk) for chunk in chunks])
    ranked = sorted(
        (i for i, score in enumerate(scores) if score > 0), key=lambda i: (-scores[i], i)
    )
    return [
        ScoredChunk(index=i, score=round(scores[i], 4), preview=_preview(chunks[i]))
        for i in ranked[:limit]
    ]


def _preview(chunk: str) -> str:
    return chunk if len(chunk) <= PREVIEW_CHARS else chunk[: PREVIEW_CHARS - 1].rstrip() + "…"
