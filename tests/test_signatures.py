"""Errors grouped by similarity: what one group is, and what keeps two apart."""

from __future__ import annotations

import pytest

from recovery.signatures import PATTERN_CHARS, READ_CHARS, error_line, normalize, signature


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            "FileNotFoundError: [Errno 2] No such file or directory: '/data/x123.pdf'",
            "FileNotFoundError: [Errno 2] No such file or directory: '/data/y7.pdf'",
        ),
        (
            "ConnectionError: Error 111 connecting to 10.0.0.5:6379. Connection refused.",
            "ConnectionError: Error 111 connecting to 10.0.0.9:6380. Connection refused.",
        ),
        (
            "WorkerLost: run 8c663fdf-9789-4587-94ba-dcddbcb1e5e3 ended",
            "WorkerLost: run 0b399629-ddb9-4fed-92cb-bb8160f400b3 ended",
        ),
        (
            "HTTPError: GET https://ocr.example/v1/a?id=1 failed",
            "HTTPError: GET https://x/b failed",
        ),
        ("MemoryError: page 17 needs 2.5 GB", "MemoryError: page 3 needs 900 GB"),
    ],
)
def test_occurrences_of_one_problem_share_a_signature(first: str, second: str) -> None:
    assert signature("E", first) == signature("E", second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            "ModuleNotFoundError: No module named 'docx'",
            "ModuleNotFoundError: No module named 'pypdf'",
        ),
        ("ValueError: bad page", "ValueError: bad header"),
    ],
)
def test_different_problems_keep_different_signatures(first: str, second: str) -> None:
    assert signature("E", first) != signature("E", second)


def test_the_error_type_is_part_of_the_signature() -> None:
    assert signature("KeyError", "x") != signature("ValueError", "x")


def test_a_traceback_is_grouped_by_its_last_line_and_a_message_by_its_first() -> None:
    trace = 'Traceback (most recent call last):\n  File "/a.py", line 3\nValueError: page 17\n'

    assert error_line(trace) == "ValueError: page 17"
    assert error_line("KeyError: 'x'\nduring handling of another") == "KeyError: 'x'"
    assert normalize(trace) == "ValueError: page <n>"


def test_a_ten_megabyte_message_is_read_from_its_ends_only() -> None:
    huge = "ValueError: " + "x" * (10 * 2**20)
    trace = "Traceback (most recent call last):\n" + "  frame\n" * 2**20 + "OSError: disk 3"

    assert len(normalize(huge)) == PATTERN_CHARS
    assert normalize(trace) == "OSError: disk <n>"


@pytest.mark.parametrize("blank", [0, 1, READ_CHARS - 1, READ_CHARS + 1, 3 * READ_CHARS])
def test_blank_lines_around_a_traceback_of_any_length_are_skipped(blank: int) -> None:
    trace = "Traceback (most recent call last):\n" + '  File "/a.py"\n' * 200 + "OSError: disk 3"

    assert error_line(" \n" * blank + trace + "\n \t" * blank) == "OSError: disk 3"
    assert error_line("\n" * blank + "KeyError: 'x'\nmore" + "\n" * blank) == "KeyError: 'x'"
