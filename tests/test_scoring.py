"""Chunking with overlap and BM25 ranking of chunks against a query."""

from __future__ import annotations

import json

import pytest

from tasks.scoring import PREVIEW_CHARS, bm25_scores, chunk_text, tokenize, top_chunks


def words(prefix: str, count: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(count))


def test_tokens_are_lower_cased_words_without_punctuation() -> None:
    assert tokenize("Redis AOF: fsync_every-second, naïve!") == [
        "redis",
        "aof",
        "fsync_every",
        "second",
        "naïve",
    ]


def test_chunks_overlap_and_cover_every_word() -> None:
    text = words("w", 500)

    chunks = chunk_text(text, size=200, overlap=40)

    assert [chunk.split()[0] for chunk in chunks] == ["w0", "w160", "w320"]
    assert chunks[0].split()[-40:] == chunks[1].split()[:40]
    assert chunks[-1].split()[-1] == "w499"


def test_no_chunk_is_made_only_of_words_an_earlier_chunk_holds() -> None:
    assert len(chunk_text(words("w", 200), size=200, overlap=40)) == 1
    assert len(chunk_text(words("w", 201), size=200, overlap=40)) == 2


def test_short_and_empty_texts_give_one_and_no_chunks() -> None:
    assert chunk_text("just a few words") == ["just a few words"]
    assert chunk_text(" \n\t ") == []


def test_overlap_not_smaller_than_the_chunk_is_rejected() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_text("some text", size=10, overlap=10)


def passage(sentence: str, count: int = 60) -> str:
    """``count`` words of a sentence said over and over."""
    return " ".join((sentence.split() * count)[:count])


def test_relevant_chunk_is_ranked_first() -> None:
    # Given a document of three topical passages, cut into one chunk each
    passages = [
        passage("Celery workers consume messages from queues and run tasks in child processes."),
        passage(
            "The visibility timeout decides when an unacknowledged Redis message is delivered "
            "again; it must outlive the longest task or running work is duplicated."
        ),
        passage("Flower shows workers, tasks and their states in a web dashboard for operators."),
    ]
    chunks = chunk_text(" ".join(passages), size=60, overlap=0)
    assert chunks == passages

    # When they are ranked for a query about the second passage
    ranked = top_chunks(chunks, "Which tasks does the Redis visibility timeout protect?")

    # Then its chunk comes first, ahead of the others that only share "tasks"
    assert ranked[0].index == 1
    assert len(ranked) == 3
    assert ranked[0].score > ranked[1].score > 0
    assert ranked[0].preview.startswith("The visibility timeout decides")


def test_one_rare_query_term_outweighs_many_of_a_common_one() -> None:
    # Given "celery" in five chunks of six, "aof" in one, and chunks of equal length
    common = ["celery"] * 5
    rare = ["aof", "x", "x", "x", "x"]
    others = [["celery", "x", "x", "x", "x"]] * 4

    scores = bm25_scores(["celery", "aof"], [common, rare, *others])

    # Then the single rare match beats five common ones
    assert scores[1] > scores[0] > scores[2] > 0


def test_longer_chunk_with_the_same_matches_scores_lower() -> None:
    documents = [["redis", "filler"], ["redis", *["filler"] * 30]]

    short, long = bm25_scores(["redis"], documents)

    assert short > long


def test_without_a_query_nothing_is_ranked() -> None:
    chunks = ["some text", "more text"]

    assert top_chunks(chunks, None) == []
    assert top_chunks(chunks, "") == []
    assert top_chunks(chunks, "?!") == []


def test_chunks_sharing_no_term_with_the_query_are_left_out() -> None:
    ranked = top_chunks(["redis keeps data", "celery runs tasks"], "redis")

    assert [chunk.index for chunk in ranked] == [0]


def test_at_most_limit_chunks_are_returned_best_first_and_ties_keep_document_order() -> None:
    chunks = ["queue"] * 5

    ranked = top_chunks(chunks, "queue", limit=3)

    assert [chunk.index for chunk in ranked] == [0, 1, 2]


def test_long_chunk_preview_is_cut_with_an_ellipsis_and_serializes_to_json() -> None:
    chunk = "redis " * 100

    (ranked,) = top_chunks([chunk], "redis")

    assert len(ranked.preview) == PREVIEW_CHARS
    assert ranked.preview.endswith("…")
    assert json.loads(json.dumps(ranked.as_dict()))["preview"] == ranked.preview
