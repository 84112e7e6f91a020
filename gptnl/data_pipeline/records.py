"""One input record as a datatrove Document, or as a malformed one that says why.

Whatever a record holds (bad JSON, JSON nested 100k deep, an integer of 5,000 digits, a lone
surrogate, the wrong types), the result is a Document: a malformed one carries its file and
position, and the first gate refuses it into the ledger. Nothing here raises on bad input.
"""

from __future__ import annotations

import json

from datatrove.data import Document

from gptnl.config import SourceConfig

PASSED_FIELDS = ("url", "author", "created", "retrieved")


def malformed(src: SourceConfig, location: str, what: str) -> Document:
    """A record that is not a usable document: refused by the malformed gate with `what`."""
    return Document(text="", id=location, metadata={"source": src.name, "location": location, "malformed": what})


def too_long(size: int | str, limit: int) -> str:
    return f"record of {size} bytes; the limit is {limit} (reader.max_record_bytes)"


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg}"
    if isinstance(exc, RecursionError):
        return "not valid JSON: nested too deeply"
    return f"not valid JSON: {str(exc).split(';')[0]}"  # e.g. an integer of more than 4,300 digits


def to_document(src: SourceConfig, location: str, raw: bytes) -> Document:
    """A JSONL line as a Document (or a malformed one saying why)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return malformed(src, location, f"invalid UTF-8 at byte {exc.start}")
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        return malformed(src, location, _json_error(exc))
    # Only a \uXXXX escape can put a lone surrogate in a parsed string; strict UTF-8 decoding cannot.
    return record_to_document(src, location, obj, check_surrogates=b"\\ud" in raw.lower())


def _surrogate(obj: dict, keys) -> str | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"'{key}' holds a lone surrogate (U+{ord(value[exc.start]):04X}) at character {exc.start}"
    return None


def record_to_document(src: SourceConfig, location: str, obj, check_surrogates: bool = False) -> Document:
    """A parsed record (a JSON object, a Parquet row) as a Document, or a malformed one."""
    if not isinstance(obj, dict):
        return malformed(src, location, f"expected a JSON object, got {type(obj).__name__}")
    for key in ("id", "text"):
        if key not in obj:
            return malformed(src, location, f"no '{key}' field")
        if not isinstance(obj[key], str):
            return malformed(src, location, f"'{key}' must be a string, got {type(obj[key]).__name__}")
    if not obj["id"].strip() or not obj["text"].strip():
        return malformed(src, location, "empty 'id'" if not obj["id"].strip() else "empty 'text'")
    for key in PASSED_FIELDS:  # later steps match urls against the blocklist and write dates into the card
        if obj.get(key) is not None and not isinstance(obj[key], str):
            return malformed(src, location, f"'{key}' must be a string, got {type(obj[key]).__name__}")
    if check_surrogates:  # the ledger and documents are UTF-8: a lone surrogate cannot be written
        what = _surrogate(obj, ("id", "text", src.licence_field, *PASSED_FIELDS))
        if what:
            return malformed(src, location, what)
    licence = obj.get(src.licence_field)
    meta = {
        "source": src.name,
        "location": location,
        "licence": licence if isinstance(licence, str) and licence.strip() else src.licence,
        "tdm_reservation": bool(obj.get("tdm_reservation", False)) or src.tdm_reservation,
        **{k: obj.get(k) for k in PASSED_FIELDS},
    }
    meta["retrieved"] = meta["retrieved"] or src.retrieved
    return Document(text=obj["text"], id=obj["id"], metadata=meta)
