"""Text extraction, one small function per document type, chosen by file extension.

Text formats are decoded leniently (UTF-8, then legacy 8-bit encodings), because a
file in an old encoding is still a good document; the encoding used is reported.
Bytes that are not text at all are refused with ``UnsupportedDocumentType``.

PDF and DOCX need the optional extras (``pypdf``, ``python-docx``). They are imported
inside their extractors and a missing one raises the real ``ModuleNotFoundError``:
that is an environment fault the recovery system retries after the extra is
installed, not a property of the document. A parser's own errors become
``CorruptedDocument``, chained to the original.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath
from typing import Any

from tasks.errors import CorruptedDocument, UnsupportedDocumentType

#: Share of control characters above which "text" is taken for binary data.
MAX_CONTROL_SHARE = 0.1
_SNIFF_CHARS = 8192
_CONTROL_CHARS = frozenset(map(chr, range(32))) - frozenset("\t\n\r\f\b") | {"\x7f"}
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


@dataclass(frozen=True)
class Extraction:
    """A document's text, its type and, for text formats, the encoding it was read in."""

    type: str
    text: str
    encoding: str | None = None


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode text bytes as ``(text, encoding)``; binary data is unsupported."""
    text, encoding = _decode(data)
    sample = text[:_SNIFF_CHARS]
    controls = sum(char in _CONTROL_CHARS for char in sample)
    if "\x00" in sample or controls > MAX_CONTROL_SHARE * len(sample):
        raise UnsupportedDocumentType(
            f"unsupported document: binary data in a text file ({controls} control "
            f"characters in the first {len(sample)})"
        )
    return text, encoding


def _decode(data: bytes) -> tuple[str, str]:
    bom = "utf-16" if data.startswith(_UTF16_BOMS) else None
    utf8 = "utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8"
    for encoding in (bom or utf8, "cp1252"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1"), "latin-1"  # Maps every byte: the last resort.


def _csv(data: bytes) -> tuple[str, str | None]:
    text, encoding = decode_text(data)
    try:
        rows = [
            " ".join(cell.strip() for cell in row if cell.strip())
            for row in csv.reader(io.StringIO(text, newline=""))
        ]
    except csv.Error as exc:
        raise CorruptedDocument(f"corrupted CSV document: {exc}") from exc
    return "\n".join(row for row in rows if row), encoding


def _strings(value: Any) -> Iterator[str]:
    """Every string value of a decoded JSON document, depth first, without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def _json(data: bytes) -> tuple[str, str | None]:
    text, encoding = decode_text(data)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CorruptedDocument(f"corrupted JSON document: {exc}") from exc
    return "\n".join(s for s in _strings(value) if s.strip()), encoding


class _HTMLText(HTMLParser):
    """Collects visible text; block tags become line breaks so words do not run together."""

    SKIP = frozenset({"script", "style", "template", "noscript"})
    BLOCK = re.compile(
        r"address|article|aside|blockquote|br|d[dlt]|div|figcaption|footer|h[1-6r]|header"
        r"|li|main|nav|ol|p|pre|section|table|t[dhr]|title|ul"
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, _attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif self.BLOCK.fullmatch(tag):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif self.BLOCK.fullmatch(tag):
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _html(data: bytes) -> tuple[str, str | None]:
    text, encoding = decode_text(data)
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    return _tidy("".join(parser.parts)), encoding


def _pdf(data: bytes) -> tuple[str, str | None]:
    import pypdf  # Optional extra: a missing one must stay a ModuleNotFoundError.
    from pypdf.errors import PyPdfError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        pages = [page.extract_text() for page in reader.pages]
    except (PyPdfError, ValueError) as exc:
        raise CorruptedDocument(f"corrupted PDF document: {exc}") from exc
    return _tidy("\n".join(pages)), None


def _docx(data: bytes) -> tuple[str, str | None]:
    import docx  # Optional extra: a missing one must stay a ModuleNotFoundError.

    try:
        document = docx.Document(io.BytesIO(data))
        lines = [paragraph.text for paragraph in document.paragraphs]
        lines += [
            cell.text for table in document.tables for row in table.rows for cell in row.cells
        ]
    # A DOCX is a zip of XML parts: a bad zip, a missing part, bad XML (lxml's
    # XMLSyntaxError is a SyntaxError) or a bad value are all a broken file.
    except (zipfile.BadZipFile, KeyError, ValueError, SyntaxError) as exc:
        raise CorruptedDocument(f"corrupted DOCX document: {exc}") from exc
    return _tidy("\n".join(lines)), None


def _tidy(text: str) -> str:
    """Collapse runs of spaces and blank lines that markup leaves behind."""
    lines = (re.sub(r"[ \t\f\v\xa0]+", " ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


#: Extension -> (document type, extractor returning text and encoding).
EXTRACTORS: dict[str, tuple[str, Callable[[bytes], tuple[str, str | None]]]] = {
    ".txt": ("text", decode_text),
    ".md": ("markdown", decode_text),
    ".csv": ("csv", _csv),
    ".json": ("json", _json),
    ".html": ("html", _html),
    ".htm": ("html", _html),
    ".pdf": ("pdf", _pdf),
    ".docx": ("docx", _docx),
}


def extract(name: str | PurePath, data: bytes) -> Extraction:
    """Extract the text of a document whose file name (for its extension) is ``name``."""
    suffix = PurePath(name).suffix.lower()
    try:
        doc_type, extractor = EXTRACTORS[suffix]
    except KeyError:
        raise UnsupportedDocumentType(
            f"unsupported document type {suffix or '(no extension)'!r} for {str(name)!r}; "
            f"supported: {', '.join(sorted(EXTRACTORS))}"
        ) from None
    text, encoding = extractor(data)
    return Extraction(type=doc_type, text=text, encoding=encoding)
