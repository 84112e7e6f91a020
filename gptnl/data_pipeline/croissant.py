"""`croissant.json` beside `CARD.md`: the corpus described in MLCommons Croissant 1.0 (JSON-LD), the
format GPT-NL publishes its collections in, so a catalogue or `mlcroissant` can read what the card
says in prose: the sources the corpus is based on with their licences, the licences of the kept
documents, every file with its SHA-256, and the fields of the document and ledger records.

Written from the corpus dir and its stats (the same facts as the card), by hand rather than through
`mlcroissant` (whose import costs seconds in every build); the tests validate it with `mlcroissant`.
"""

from __future__ import annotations

import time
from pathlib import Path

from gptnl.artefacts import CorpusStats
from gptnl.config import RecipeConfig, SourcesFile
from gptnl.corpus import document_files
from gptnl.data_pipeline import ledger as ledger_mod
from gptnl.fileio import atomic_write_json, code_version, sha256_file

CROISSANT = "croissant.json"
CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"}, "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/", "equivalentProperty": "cr:equivalentProperty", "examples": {"@id": "cr:examples", "@type": "@json"}, "extract": "cr:extract",  # noqa: E501
    "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject", "fileSet": "cr:fileSet",
    "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath",
    "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path", "recordSet": "cr:recordSet",
    "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated", "replace": "cr:replace",
    "samplingRate": "cr:samplingRate", "sc": "https://schema.org/", "separator": "cr:separator", "source": "cr:source", "subField": "cr:subField",  # noqa: E501
    "transform": "cr:transform",
}
JSONL = "application/jsonlines"
# (field, schema.org type, description): the document format of docs/data.md, then the ledger row
DOCUMENT_FIELDS = [
    ("id", "sc:Text", "stable identifier of the document"),
    ("text", "sc:Text", "the text after extraction, normalisation, boilerplate removal and PII replacement"),
    ("source", "sc:Text", "the source (sources.yaml) it was read from"),
    ("licence", "sc:Text", "SPDX licence identifier"),
    ("url", "sc:Text", "where the document was published"),
    ("author", "sc:Text", "author, as the source gives it"),
    ("created", "sc:Text", "creation date, as the source gives it"),
    ("retrieved", "sc:Text", "ISO date the source was retrieved"),
    ("lang", "sc:Text", "language detected (py3langid)"),
    ("lang_score", "sc:Float", "py3langid's probability of that language"),
]
LEDGER_FIELDS = [
    ("id", "sc:Text", "identifier of the input document"),
    ("source", "sc:Text", "the source it was read from"),
    ("location", "sc:Text", "file:line (or file:offset) of the input record"),
    ("outcome", "sc:Text", "kept or refused"),
    ("licence", "sc:Text", "SPDX licence identifier, where known"),
    ("step", "sc:Text", "the step that refused it (empty when kept)"),
    ("reason", "sc:Text", "why it was refused (empty when kept)"),
]


def spdx_url(licence: str) -> str:
    return f"https://spdx.org/licenses/{licence}.html"


def _record_set(name: str, file_set: str, fields: list[tuple[str, str, str]], description: str) -> dict:
    return {"@type": "cr:RecordSet", "@id": name, "name": name, "description": description,
            "key": {"@id": f"{name}/id"} if name == "documents" else None,
            "field": [{"@type": "cr:Field", "@id": f"{name}/{f}", "name": f, "description": d, "dataType": t,
                       "source": {"fileSet": {"@id": file_set}, "extract": {"column": f}}} for f, t, d in fields]}


def croissant(corpus: Path, recipe: RecipeConfig, sources: SourcesFile, stats: CorpusStats) -> dict:
    """The Croissant JSON-LD document of a corpus dir whose `documents/` and ledger are written."""
    corpus = Path(corpus)
    shards = [p.relative_to(corpus).as_posix() for p in document_files(corpus)]
    files = [{"@type": "cr:FileObject", "@id": p, "name": p, "contentUrl": p, "encodingFormat": JSONL,
              "contentSize": f"{(corpus / p).stat().st_size} B", "sha256": sha256_file(corpus / p)} for p in shards]
    ledger = corpus / ledger_mod.LEDGER
    if ledger.is_file():
        files.append({"@type": "cr:FileObject", "@id": ledger_mod.LEDGER, "name": ledger_mod.LEDGER,
                      "contentUrl": ledger_mod.LEDGER, "encodingFormat": JSONL,
                      "contentSize": f"{ledger.stat().st_size} B", "sha256": sha256_file(ledger)})
    files.append({"@type": "cr:FileSet", "@id": "document-files", "name": "document-files",
                  "description": "the kept documents, gzip-compressed JSON lines", "encodingFormat": JSONL,
                  "includes": "documents/*/*.jsonl.gz" if any(p.count("/") > 1 for p in shards)
                  else "documents/*.jsonl.gz"})
    record_sets = [_record_set("documents", "document-files", DOCUMENT_FIELDS,
                               f"{stats.kept} kept documents, one record each")]
    if ledger.is_file():
        files.append({"@type": "cr:FileSet", "@id": "ledger-file", "name": "ledger-file", "encodingFormat": JSONL,
                      "includes": ledger_mod.LEDGER})
        record_sets.append(_record_set("ledger", "ledger-file", LEDGER_FIELDS,
                                       f"one row per input document ({stats.inputs}): kept, or refused with a reason"))
    kept = sorted(stats.licences)
    return {
        "@context": CONTEXT, "@type": "sc:Dataset", "conformsTo": CONFORMS_TO,
        "name": corpus.name, "description": (
            f"Dutch text corpus built by gptnl {code_version()} with recipe sources `{recipe.sources.name}`: "
            f"{stats.inputs} documents read, {stats.kept} kept, {stats.refused} refused "
            "(see CARD.md and the ledger)."),
        "citeAs": f"{corpus.name}, a Dutch corpus built with gptnl {code_version()} (CARD.md, {CROISSANT})",
        "url": corpus.resolve().as_uri(), "version": code_version() or "0.0.0",
        "datePublished": time.strftime("%Y-%m-%d", time.gmtime()),
        "license": [spdx_url(lic) for lic in kept] or None, "inLanguage": recipe.language.keep,
        "isBasedOn": [{"@type": "sc:CreativeWork", "name": s.name, "url": s.url,
                       "publisher": {"@type": "sc:Organization", "name": s.publisher},
                       "license": spdx_url(s.licence) if s.licence else None, "dateModified": s.retrieved}
                      for s in sources.sources],
        "distribution": files, "recordSet": record_sets,
    }


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def write_croissant(corpus: Path, recipe: RecipeConfig, sources: SourcesFile, stats: CorpusStats) -> Path:
    path = Path(corpus) / CROISSANT
    atomic_write_json(path, _without_nulls(croissant(corpus, recipe, sources, stats)))
    return path
