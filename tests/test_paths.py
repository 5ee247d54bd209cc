"""Reading documents: roots, symlinks, ``..``, size limit and the operating system's errors."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from tasks.errors import DocumentOutsideRoots, DocumentTooLarge, UnsupportedDocumentType
from tasks.paths import DEFAULT_MAX_BYTES, document_roots, int_setting, read_document

NOBODY = 65534


def test_document_inside_the_root_is_read_with_its_resolved_path(doc_root: Path) -> None:
    (doc_root / "notes.txt").write_bytes(b"celery")

    document = read_document(str(doc_root / "sub" / ".." / "notes.txt"))

    assert document.path == (doc_root / "notes.txt").resolve()
    assert document.data == b"celery"


def test_missing_file_raises_file_not_found(doc_root: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_document(str(doc_root / "absent.txt"))


def test_directory_raises_is_a_directory(doc_root: Path) -> None:
    (doc_root / "folder.txt").mkdir()

    with pytest.raises(IsADirectoryError) as caught:
        read_document(str(doc_root / "folder.txt"))

    assert caught.value.filename == str((doc_root / "folder.txt").resolve())


def test_fifo_is_unsupported_instead_of_blocking_the_worker(doc_root: Path) -> None:
    os.mkfifo(doc_root / "pipe.txt")

    with pytest.raises(UnsupportedDocumentType, match="not a regular file"):
        read_document(str(doc_root / "pipe.txt"))


def test_path_outside_the_roots_is_refused_naming_path_and_roots(
    doc_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("password")

    with pytest.raises(DocumentOutsideRoots) as caught:
        read_document(str(outside))

    assert str(outside) in str(caught.value)
    assert str(doc_root.resolve()) in str(caught.value)


@pytest.mark.usefixtures("doc_root")
def test_missing_file_outside_the_roots_is_refused_before_it_is_looked_up(
    tmp_path: Path,
) -> None:
    with pytest.raises(DocumentOutsideRoots):
        read_document(str(tmp_path / "absent.txt"))


def test_sibling_directory_sharing_the_roots_name_prefix_is_outside(
    doc_root: Path, tmp_path: Path
) -> None:
    sibling = tmp_path / (doc_root.name + "-evil")
    sibling.mkdir()
    (sibling / "a.txt").write_text("x")

    with pytest.raises(DocumentOutsideRoots):
        read_document(str(sibling / "a.txt"))


def test_dotdot_escaping_the_root_is_refused(doc_root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("password")

    with pytest.raises(DocumentOutsideRoots):
        read_document(f"{doc_root}/../secret.txt")


def test_symlink_inside_the_root_that_escapes_it_is_refused(doc_root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("password")
    (doc_root / "innocent.txt").symlink_to(tmp_path / "secret.txt")

    with pytest.raises(DocumentOutsideRoots, match=r"secret\.txt"):
        read_document(str(doc_root / "innocent.txt"))


def test_symlink_that_stays_inside_the_root_is_followed(doc_root: Path) -> None:
    (doc_root / "real.md").write_text("# title")
    (doc_root / "alias.md").symlink_to(doc_root / "real.md")

    assert read_document(str(doc_root / "alias.md")).path.name == "real.md"


def test_every_root_in_the_list_is_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (second / "doc.txt").write_text("in the second root")
    monkeypatch.setenv("DOCRECOVERY_ROOTS", f"{first}{os.pathsep}{second}")

    assert read_document(str(second / "doc.txt")).data == b"in the second root"


def test_working_directory_is_the_root_when_none_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCRECOVERY_ROOTS", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.txt").write_text("relative")

    assert document_roots() == (tmp_path.resolve(),)
    assert read_document("here.txt").data == b"relative"
    with pytest.raises(DocumentOutsideRoots):
        read_document("/etc/hostname")


def test_file_over_the_size_limit_is_too_large(
    doc_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCRECOVERY_MAX_BYTES", "10")
    (doc_root / "exact.txt").write_bytes(b"x" * 10)
    (doc_root / "big.txt").write_bytes(b"x" * 11)

    assert len(read_document(str(doc_root / "exact.txt")).data) == 10
    with pytest.raises(DocumentTooLarge, match=r"11 bytes, limit 10"):
        read_document(str(doc_root / "big.txt"))


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux procfs")
def test_file_that_reports_no_size_is_still_cut_off_at_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a file whose stat size (0) understates its content, like a growing file
    monkeypatch.setenv("DOCRECOVERY_ROOTS", "/proc")
    monkeypatch.setenv("DOCRECOVERY_MAX_BYTES", "10")
    assert Path("/proc/self/status").stat().st_size == 0

    with pytest.raises(DocumentTooLarge):
        read_document("/proc/self/status")


def test_size_limit_defaults_to_50_mib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCRECOVERY_MAX_BYTES", raising=False)

    assert int_setting("DOCRECOVERY_MAX_BYTES", DEFAULT_MAX_BYTES) == 50 * 1024 * 1024


@pytest.mark.parametrize("raw", ["0", "-5", "ten", "1.5"])
def test_bad_size_limit_names_the_variable_and_the_value(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("DOCRECOVERY_MAX_BYTES", raw)

    with pytest.raises(ValueError, match=rf"DOCRECOVERY_MAX_BYTES: got '{raw}'; allowed"):
        int_setting("DOCRECOVERY_MAX_BYTES", DEFAULT_MAX_BYTES)


@pytest.fixture
def shared_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A root an unprivileged user can traverse (pytest's own tmp dirs are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="docrecovery-perm-"))
    root.chmod(0o755)
    monkeypatch.setenv("DOCRECOVERY_ROOTS", str(root))
    yield root
    shutil.rmtree(root)


def _read_as_nobody(path: str, report: Connection) -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    try:
        read_document(path)
    except Exception as exc:
        report.send(type(exc).__name__)
    else:
        report.send("read")


def outcome_without_privileges(path: Path) -> str:
    """What reading ``path`` does for a user the file's mode applies to.

    Root ignores file modes, so as root the read runs in a forked child that has
    dropped to nobody; otherwise the current user is unprivileged already.
    """
    if os.geteuid() != 0:
        try:
            read_document(str(path))
        except Exception as exc:
            return type(exc).__name__
        return "read"
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_read_as_nobody, args=(str(path), sender))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0, f"reader process failed: exit code {child.exitcode}"
    return str(receiver.recv())


def test_unreadable_file_raises_permission_error(shared_root: Path) -> None:
    # Given a readable file and an unreadable one side by side
    (shared_root / "open.txt").write_text("anyone may read this")
    locked = shared_root / "locked.txt"
    locked.write_text("nobody may read this")
    locked.chmod(0o000)

    # Then the same user reads one and is refused the other by the OS itself
    assert outcome_without_privileges(shared_root / "open.txt") == "read"
    assert outcome_without_privileges(locked) == "PermissionError"
