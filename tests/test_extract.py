"""Extraction of every supported type, from the bundled sample corpus and crafted bytes."""

from __future__ import annotations

import codecs
import json
import random
import sys
import zipfile
from pathlib import Path

import pytest
from pypdf.errors import PyPdfError

from tasks.errors import CorruptedDocument, UnsupportedDocumentType
from tasks.extract import EXTRACTORS, decode_text, extract

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


@pytest.mark.parametrize(
    ("name", "doc_type", "encoding", "phrase"),
    [
        ("celery-retries.txt", "text", "utf-8", "declares autoretry_for with the exception"),
        ("redis-persistence.md", "markdown", "utf-8", "With `appendfsync everysec` at most"),
        ("worker-failures.csv", "csv", "utf-8", "MemoryError memory 1 huge table, moved"),
        ("task-states.json", "json", "utf-8", "The task raised; the result holds"),
        ("recovery-guide.html", "html", "utf-8", "Memory errors are resubmitted to the highmem"),
        ("visibility-timeout.pdf", "pdf", None, "Derive the visibility timeout from the hard"),
        ("document-pipeline.docx", "docx", None, "ranked against the query with BM25"),
    ],
)
def test_sample_of_each_type_yields_its_text(
    name: str, doc_type: str, encoding: str | None, phrase: str
) -> None:
    extraction = extract(name, sample(name))

    assert extraction.type == doc_type
    assert extraction.encoding == encoding
    assert phrase in extraction.text


def test_sample_corpus_covers_every_supported_type() -> None:
    sample_types = {
        EXTRACTORS[path.suffix][0] for path in SAMPLES.iterdir() if path.suffix in EXTRACTORS
    }

    assert sample_types == {doc_type for doc_type, _ in EXTRACTORS.values()}


def test_html_drops_scripts_styles_and_markup_but_keeps_entities() -> None:
    text = extract("recovery-guide.html", sample("recovery-guide.html")).text

    assert "console.log" not in text
    assert "font-family" not in text
    assert "<" not in text
    assert "a corrupted file, a path outside the roots — are never retried" in text
    assert text.splitlines()[0] == "Recovering failed documents"


def test_json_keeps_string_values_and_drops_keys() -> None:
    text = extract("task-states.json", sample("task-states.json")).text

    assert "PENDING" in text
    assert "Exceptions cross the JSON result backend" in text
    assert "description" not in text


def test_docx_includes_table_cells() -> None:
    text = extract("document-pipeline.docx", sample("document-pipeline.docx")).text

    assert "python-docx" in text.splitlines()


def test_pdf_text_comes_from_every_page() -> None:
    text = extract("visibility-timeout.pdf", sample("visibility-timeout.pdf")).text

    assert text.startswith("Visibility timeout and late acknowledgement")
    assert "Choosing the timeout" in text


def test_extension_is_matched_case_insensitively() -> None:
    assert extract("NOTES.TXT", b"plain words").type == "text"


def test_non_utf8_text_decodes_with_a_fallback_instead_of_failing() -> None:
    extraction = extract("legacy-cp1252.txt", sample("legacy-cp1252.txt"))

    assert extraction.encoding == "cp1252"
    assert "Café résumés" in extraction.text
    assert "“smart quotes” and the € sign" in extraction.text


def test_bytes_undefined_in_cp1252_fall_back_to_latin1() -> None:
    assert decode_text(b"caf\xe9 \x81") == ("café \x81", "latin-1")


def test_utf8_byte_order_mark_is_recorded_and_stripped() -> None:
    assert decode_text(codecs.BOM_UTF8 + "naïve".encode()) == ("naïve", "utf-8-sig")


def test_utf16_with_byte_order_mark_is_text_not_binary() -> None:
    assert decode_text("queue naïve".encode("utf-16")) == ("queue naïve", "utf-16")


def test_binary_behind_a_utf16_byte_order_mark_is_still_binary() -> None:
    with pytest.raises(UnsupportedDocumentType):
        decode_text(codecs.BOM_UTF16_LE + b"\x01\x00\x02\x00" * 50)


def test_binary_garbage_in_a_text_file_is_unsupported() -> None:
    garbage = random.Random(7).randbytes(4096)

    with pytest.raises(UnsupportedDocumentType, match="binary data"):
        extract("report.txt", garbage)


def test_a_single_nul_byte_makes_otherwise_plain_text_binary() -> None:
    with pytest.raises(UnsupportedDocumentType):
        extract("notes.md", b"plain words " * 100 + b"\x00")


def test_control_characters_without_nul_bytes_are_binary() -> None:
    with pytest.raises(UnsupportedDocumentType):
        extract("table.csv", b"a,b\n" + bytes(range(1, 8)) * 20)


def test_unknown_extension_is_unsupported_and_lists_the_supported_ones() -> None:
    with pytest.raises(UnsupportedDocumentType, match=r"'\.exe'.*\.docx, \.htm, \.html"):
        extract("setup.exe", b"MZ")


def test_file_without_extension_is_unsupported() -> None:
    with pytest.raises(UnsupportedDocumentType, match="no extension"):
        extract("README", b"text")


def test_broken_pdf_is_corrupted_and_keeps_the_parser_error_as_cause() -> None:
    with pytest.raises(CorruptedDocument, match="corrupted PDF") as caught:
        extract("broken.pdf", b"%PDF-1.4\nthis is not a pdf body")

    assert isinstance(caught.value.__cause__, PyPdfError)


def test_file_that_is_not_a_zip_is_a_corrupted_docx() -> None:
    with pytest.raises(CorruptedDocument, match="corrupted DOCX") as caught:
        extract("broken.docx", b"not a zip archive")

    assert isinstance(caught.value.__cause__, zipfile.BadZipFile)


def test_zip_without_word_parts_is_a_corrupted_docx(tmp_path: Path) -> None:
    archive = tmp_path / "empty.docx"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("hello.txt", "not a word document")

    with pytest.raises(CorruptedDocument):
        extract(archive.name, archive.read_bytes())


def test_invalid_json_is_corrupted() -> None:
    with pytest.raises(CorruptedDocument, match="corrupted JSON") as caught:
        extract("data.json", b'{"title": ')

    assert isinstance(caught.value.__cause__, json.JSONDecodeError)


def test_json_nested_too_deep_to_parse_is_corrupted_not_a_crash() -> None:
    with pytest.raises(CorruptedDocument):
        extract("deep.json", b"[" * 100_000)


@pytest.mark.parametrize(
    ("module", "name"),
    [("pypdf", "visibility-timeout.pdf"), ("docx", "document-pipeline.docx")],
)
def test_missing_optional_extra_raises_the_real_module_not_found_error(
    monkeypatch: pytest.MonkeyPatch, module: str, name: str
) -> None:
    # Given the extra is not importable (a None entry makes `import` raise)
    monkeypatch.setitem(sys.modules, module, None)

    # When a document that needs it is extracted, then the import error is not wrapped
    with pytest.raises(ModuleNotFoundError) as caught:
        extract(name, sample(name))

    assert type(caught.value) is ModuleNotFoundError
    assert caught.value.name == module
