"""Error categories, decided from real exceptions and their cause/context chains."""

from __future__ import annotations

import errno
import importlib
import socket
import urllib.error
from collections.abc import Callable
from email.message import Message
from pathlib import Path

import pytest
import redis
from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from redis.backoff import NoBackoff
from redis.retry import Retry

from recovery import TrackedTask, categories
from recovery.categories import CATEGORIES, categorize, categorize_message, exception_chain
from tasks.errors import (
    CorruptedDocument,
    DocumentOutsideRoots,
    DocumentTooLarge,
    UnsupportedDocumentType,
)


def caught(action: Callable[[], object]) -> BaseException:
    """The exception ``action`` raises, with the traceback and chain Python gave it."""
    try:
        action()
    except BaseException as exc:
        return exc
    raise AssertionError("expected an exception")


def import_missing_module() -> object:
    return importlib.import_module("docrecovery_no_such_module_xyz")


def import_missing_name() -> object:
    from os import no_such_name_xyz  # type: ignore[attr-defined]

    return no_such_name_xyz


def connect_to_closed_port() -> object:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return socket.create_connection(("127.0.0.1", port), timeout=2)


def redis_on_closed_port() -> object:
    client = redis.Redis(port=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        return client.ping()
    finally:
        client.close()


def http_error() -> object:
    raise urllib.error.HTTPError("http://example.invalid/doc.pdf", 503, "down", Message(), None)


def raise_(exc: BaseException) -> Callable[[], object]:
    def action() -> object:
        raise exc

    return action


@pytest.mark.parametrize(
    ("action", "category"),
    [
        (import_missing_module, categories.IMPORT),
        (import_missing_name, categories.IMPORT),
        (lambda: bytearray(2**62), categories.MEMORY),
        (raise_(DocumentTooLarge("/docs/huge.pdf is 2 GB")), categories.MEMORY),
        (raise_(SoftTimeLimitExceeded()), categories.TIMEOUT),
        (raise_(TimeLimitExceeded(300)), categories.TIMEOUT),
        (raise_(TimeoutError("read timed out")), categories.TIMEOUT),
        (raise_(socket.timeout("timed out")), categories.TIMEOUT),  # noqa: UP041
        (lambda: Path("/no/such/dir/doc.pdf").read_bytes(), categories.FILE_NOT_FOUND),
        (raise_(PermissionError(13, "Permission denied", "/docs/a.pdf")), categories.PERMISSION),
        (connect_to_closed_port, categories.NETWORK),
        (redis_on_closed_port, categories.NETWORK),
        (raise_(socket.gaierror(-2, "Name or service not known")), categories.NETWORK),
        (http_error, categories.NETWORK),
        (raise_(urllib.error.URLError("unreachable")), categories.NETWORK),
        (raise_(WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL).")), "worker_lost"),
        (raise_(DocumentOutsideRoots("/etc/passwd")), categories.PERMANENT),
        (raise_(UnsupportedDocumentType("/docs/a.exe")), categories.PERMANENT),
        (raise_(CorruptedDocument("/docs/broken.pdf")), categories.PERMANENT),
        (lambda: int("not a number"), categories.OTHER),
        (lambda: dict[str, int]()["missing key"], categories.OTHER),
    ],
)
def test_each_category_is_recognized_from_a_real_exception(
    action: Callable[[], object], category: str
) -> None:
    assert categorize(caught(action)) == category


def test_every_category_is_a_known_name() -> None:
    assert categories.WORKER_LOST == "worker_lost"
    assert len(set(CATEGORIES)) == len(CATEGORIES) == 9


def test_a_subclass_is_categorized_by_its_base_class() -> None:
    class ParserPluginMissing(ModuleNotFoundError):
        pass

    assert categorize(ParserPluginMissing("pdf plugin")) == categories.IMPORT


def test_an_explicit_cause_decides_when_the_wrapper_says_nothing() -> None:
    def wrap() -> object:
        try:
            import_missing_module()
        except ImportError as exc:
            raise RuntimeError("extraction failed") from exc
        return None

    assert categorize(caught(wrap)) == categories.IMPORT


def test_an_implicit_context_decides_when_the_wrapper_says_nothing() -> None:
    def wrap() -> object:
        try:
            Path("/no/such/file.txt").read_text()
        except OSError:
            raise RuntimeError("could not load document")  # noqa: B904 - implicit context
        return None

    exc = caught(wrap)

    assert isinstance(exc.__context__, FileNotFoundError)
    assert categorize(exc) == categories.FILE_NOT_FOUND


def test_a_context_two_levels_down_is_found() -> None:
    def wrap() -> object:
        try:
            try:
                raise MemoryError
            except MemoryError:
                raise ValueError("bad page")  # noqa: B904 - implicit context
        except ValueError as exc:
            raise RuntimeError("giving up") from exc

    chain = list(exception_chain(caught(wrap)))

    assert [type(link) for link in chain] == [RuntimeError, ValueError, MemoryError]
    assert categorize(chain[0]) == categories.MEMORY


def test_the_outermost_known_type_wins_over_its_causes() -> None:
    def wrap() -> object:
        try:
            raise ConnectionResetError("peer went away")
        except ConnectionError as exc:
            raise TimeoutError("gave up waiting") from exc

    assert categorize(caught(wrap)) == categories.TIMEOUT


def test_a_cyclic_chain_ends() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__context__, second.__context__ = second, first

    assert list(exception_chain(first)) == [first, second]
    assert categorize(first) == categories.OTHER


def test_an_override_maps_an_unknown_type() -> None:
    exc = caught(lambda: int("x"))

    assert categorize(exc, {"ValueError": categories.PERMANENT}) == categories.PERMANENT


def test_an_override_replaces_a_built_in_mapping() -> None:
    exc = caught(lambda: Path("/no/such/doc.pdf").read_bytes())

    assert categorize(exc, {"FileNotFoundError": categories.NETWORK}) == categories.NETWORK
    assert categorize(exc) == categories.FILE_NOT_FOUND


def test_an_override_applies_to_a_cause_in_the_chain() -> None:
    class VendorSDKError(Exception):
        pass

    def wrap() -> object:
        try:
            raise VendorSDKError("quota")
        except VendorSDKError as exc:
            raise RuntimeError("extraction failed") from exc

    assert categorize(caught(wrap), {"VendorSDKError": categories.NETWORK}) == categories.NETWORK


@pytest.mark.parametrize(
    ("message", "category"),
    [
        ("ModuleNotFoundError: No module named 'pypdf'", categories.IMPORT),
        ("ImportError: cannot import name 'x' from 'y'", categories.IMPORT),
        ("Cannot allocate memory", categories.MEMORY),
        ("Worker exited prematurely: signal 9 (SIGKILL).", categories.WORKER_LOST),
        ("TimeLimitExceeded(300,)", categories.TIMEOUT),
        ("the read timed out", categories.TIMEOUT),
        ("[Errno 2] No such file or directory: '/docs/a.pdf'", categories.FILE_NOT_FOUND),
        ("[Errno 13] Permission denied: '/docs/a.pdf'", categories.PERMISSION),
        ("Error 111: Connection refused", categories.NETWORK),
        ("path is outside the configured roots", categories.PERMANENT),
        ("something nobody foresaw", categories.OTHER),
    ],
)
def test_an_error_known_only_as_text_is_categorized_by_its_message(
    message: str, category: str
) -> None:
    assert categorize_message(message) == category


def test_an_unknown_type_falls_back_to_its_message() -> None:
    class BackendError(Exception):
        pass

    assert categorize(BackendError("connection refused by 10.0.0.5")) == categories.NETWORK
    assert categorize(BackendError("quota exceeded")) == categories.OTHER


def test_an_override_on_a_base_class_beats_the_built_in_entry_for_a_subclass() -> None:
    # Given an operator who files every OSError under network
    overrides = {"OSError": categories.NETWORK}

    # When a FileNotFoundError (an OSError with a built-in entry of its own) is seen
    category = categorize(FileNotFoundError(2, "gone"), overrides)

    # Then the override wins: overrides are checked before the built-in table
    assert category == categories.NETWORK


def test_a_context_hidden_with_raise_from_none_is_not_followed() -> None:
    try:
        try:
            raise ModuleNotFoundError("No module named 'pypdf'")
        except ModuleNotFoundError:
            raise ValueError("bad document") from None
    except ValueError as exc:
        error = exc

    assert [type(e) for e in exception_chain(error)] == [ValueError]
    assert categorize(error) == categories.OTHER


# --- failures no retry can fix, told apart without a class of their own ---------------

#: An app of this module's own: its tasks run in-process through Celery's tracer
#: (``task.apply``), the code path a worker takes, with no broker and no tracking.
signatures = Celery("signatures", set_as_current=False)


def helper(document_path: str) -> str:
    return document_path


@signatures.task(name="convert")  # type: ignore[untyped-decorator]
def convert(document_path: str, query: str | None = None) -> str:
    """Calls ``helper`` wrongly when asked to: a bug deep in the code, not a bad message."""
    if query == "deep":
        return helper(document_path, query)  # type: ignore[call-arg]
    return document_path


@signatures.task(name="convert_tracked", base=TrackedTask)  # type: ignore[untyped-decorator]
def convert_tracked(document_path: str, query: str | None = None) -> str:
    return document_path if query is None else f"{document_path}?{query}"


def failure_of(task: Task, *args: object, **kwargs: object) -> BaseException:
    """The exception a run of ``task`` with these arguments raised, traceback and all."""
    result = task.apply(args=args, kwargs=kwargs)
    assert isinstance(result.result, BaseException), result.result
    return result.result


@pytest.mark.parametrize("task", [convert, convert_tracked], ids=["plain", "tracked"])
@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("/docs/a.txt",), {"pages": 3}, "got an unexpected keyword argument 'pages'"),
        ((), {}, "missing 1 required positional argument: 'document_path'"),
        (("/docs/a.txt", None, {}), {}, "positional arguments but 3 were given"),
        (("/docs/a.txt",), {"document_path": "/docs/b.txt"}, "got multiple values for argument"),
    ],
)
def test_a_task_called_with_arguments_its_signature_refuses_is_permanent(
    task: Task, args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    exc = failure_of(task, *args, **kwargs)

    assert isinstance(exc, TypeError)
    assert message in str(exc)
    assert categorize(exc) == categories.PERMANENT


def test_a_wrong_call_deep_inside_a_task_is_not_mistaken_for_a_bad_message() -> None:
    exc = failure_of(convert, "/docs/a.txt", "deep")

    assert "helper() takes 1 positional argument but 2 were given" in str(exc)
    assert categorize(exc) == categories.OTHER


def test_a_wrong_call_of_the_task_function_outside_celery_is_not_permanent() -> None:
    exc = caught(lambda: convert.run(pages=3))

    assert isinstance(exc, TypeError)
    assert categorize(exc) == categories.OTHER


@pytest.mark.parametrize(
    "action",
    [
        lambda: Path("/docs/a\0b.txt").read_bytes(),
        lambda: Path("/docs/a\0b.txt").resolve(),
        lambda: open("/docs/a\0b.txt", "rb"),  # noqa: SIM115 - raises before opening
    ],
    ids=["read", "resolve", "open"],
)
def test_a_nul_byte_in_a_path_is_permanent(action: Callable[[], object]) -> None:
    exc = caught(action)

    assert str(exc) == "embedded null byte"
    assert categorize(exc) == categories.PERMANENT


def test_a_name_too_long_for_the_file_system_is_permanent(tmp_path: Path) -> None:
    exc = caught(lambda: (tmp_path / ("x" * 300)).read_bytes())

    assert isinstance(exc, OSError)
    assert exc.errno == errno.ENAMETOOLONG
    assert categorize(exc) == categories.PERMANENT


def test_a_name_too_long_is_found_behind_a_wrapper(tmp_path: Path) -> None:
    def wrap() -> object:
        try:
            (tmp_path / ("x" * 300)).stat()
        except OSError as exc:
            raise RuntimeError("could not read the document") from exc
        return None

    assert categorize(caught(wrap)) == categories.PERMANENT


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("header holds an embedded null byte"),
        OSError(errno.EIO, "Input/output error"),
        TypeError("process_document() got an unexpected keyword argument 'pages'"),
    ],
    ids=["other-value-error", "other-errno", "bad-call-without-traceback"],
)
def test_look_alikes_of_failures_that_never_succeed_stay_other(exc: BaseException) -> None:
    assert categorize(exc) == categories.OTHER


@pytest.mark.parametrize(
    "message",
    ["ValueError: embedded null byte", "OSError: [Errno 36] File name too long: '/docs/xx'"],
)
def test_failures_that_never_succeed_known_only_as_text_are_permanent(message: str) -> None:
    assert categorize_message(message) == categories.PERMANENT


class QuotaExceeded(Exception):
    """An application's own error, filing itself."""

    recovery_category = categories.NETWORK


class Confused(Exception):
    recovery_category = "no such category"


def test_an_application_error_files_itself_by_declaring_its_category() -> None:
    assert categories.categorize(QuotaExceeded("429 from the OCR service")) == categories.NETWORK
    # the user's overrides still win; a category that does not exist is ignored
    overrides = {"QuotaExceeded": categories.PERMANENT}
    assert categories.categorize(QuotaExceeded("x"), overrides) == categories.PERMANENT
    assert categories.categorize(Confused("x")) == categories.OTHER
