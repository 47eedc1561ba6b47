"""
recbole_specgr.data.amazon_meta
###############################
Item text of Amazon Reviews 2023 (``meta_<Category>.jsonl``) for :mod:`recbole_specgr.data.amazon`.

Each JSON line is one item; only ``parent_asin``, ``title``, ``features``, ``description``, ``categories`` and ``store``
are kept. Text is made safe for one tab-separated RecBole ``token`` field: HTML entities unescaped, tags stripped, all
whitespace (tabs, newlines) collapsed to single spaces.
"""

import html
import json
import logging
import re

TEXT_FIELDS = ("title", "features", "description", "categories", "store")

_TAG = re.compile(r"</?[A-Za-z][^<>]*>")  # an HTML tag; a bare "<" or "< 5 >" in prose is not one

_logger = logging.getLogger(__name__)


def read_item_meta(path: str, wanted: set) -> dict:
    """Stream ``meta_<Category>.jsonl`` and return cleaned text fields of the ``wanted`` items.

    Returns:
        ``{parent_asin: (title, features, description, categories, store)}``; duplicated asins keep their first row.

    Raises:
        ValueError: a line that is not a JSON object with a string ``parent_asin``, or a text field of the wrong type.
    """
    meta, n_duplicates = {}, 0
    with open(path, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {line_no}: invalid JSON ({err.msg} at column {err.colno})") from None
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}: line {line_no}: not UTF-8 text ({err.reason})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("parent_asin"), str):
                raise ValueError(f"{path}: line {line_no}: expected a JSON object with a string 'parent_asin'")
            asin = obj["parent_asin"]
            if asin not in wanted:
                continue
            if asin in meta:
                n_duplicates += 1
                continue
            meta[asin] = _text_fields(obj, f"{path}: line {line_no}")
    if n_duplicates:
        _logger.warning(f"[DATA] {path}: {n_duplicates} repeated parent_asin rows ignored (first row kept)")
    return meta


def _text_fields(obj: dict, where: str) -> tuple:
    """``(title, features, description, categories, store)`` of one metadata object, cleaned for a TSV token."""
    categories = " ".join(c.replace(" ", "_") for c in _text_list(obj.get("categories"), "categories", where))
    return (
        _clean(_text(obj.get("title"), "title", where)),
        _join_sentences(_text_list(obj.get("features"), "features", where)),
        _join_sentences(_text_list(obj.get("description"), "description", where)),
        categories,
        _clean(_text(obj.get("store"), "store", where)),
    )


def _text(value, field: str, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: {field} must be a string or null, got {type(value).__name__}")
    return value


def _text_list(value, field: str, where: str) -> list:
    """A list-of-strings field, cleaned, empty entries dropped (a bare string counts as a one-element list)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: {field} must be a list of strings or null, got {value!r:.80}")
    return [text for text in map(_clean, value) if text]


def _clean(text: str) -> str:
    """Unescape HTML entities, strip tags and collapse all whitespace (tabs, newlines) to single spaces."""
    text = html.unescape(text)
    if "<" in text:
        text = _TAG.sub(" ", text)
    return " ".join(text.replace("\x00", " ").split())


def _join_sentences(parts: list) -> str:
    """Join with ``". "``, without doubling a part's own final ``.``, ``!`` or ``?``."""
    out = ""
    for part in parts:
        out = part if not out else out + (" " if out[-1] in ".!?" else ". ") + part
    return out
