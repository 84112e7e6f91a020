"""`CARD.md`: the data card, laid out along the EU AI Act's public summary of training content
(general information; list of data sources; data processing aspects), written from stats.json
through `gptnl/templates/data_card.md.j2` (the wording is there, the facts here); `croissant.json`
beside it says the same in Croissant JSON-LD."""

from __future__ import annotations

import time
from pathlib import Path

from gptnl.artefacts import CorpusStats
from gptnl.config import RecipeConfig, SourcesFile, load_licence_policy
from gptnl.data_pipeline import ledger as ledger_mod
from gptnl.data_pipeline.croissant import write_croissant
from gptnl.fileio import atomic_write_text, code_version
from gptnl.templates import render


def _names(recipe: RecipeConfig, stats: CorpusStats) -> dict | None:
    """How person names were found, how many were replaced, and the detector's score on the test letters."""
    from gptnl.data_pipeline.letters import LETTERS, score_names

    pii = recipe.pii
    if not pii.names and pii.ner is None:
        return None
    how = " and ".join(w for w, on in (("marked by titles, salutations, signatures and \"namens\"", pii.names),
                                       (f"by the local {pii.ner.kind} NER model `{pii.ner.path.name}`"
                                        if pii.ner else "", pii.ner is not None)) if on)
    score = None
    if LETTERS.is_file():
        from gptnl.data_pipeline.letters import detector

        score = score_names(detector(pii.names, pii.ner))
    return {"how": how, "replaced": stats.pii.get("NAME", 0), "score": score}


def rewrite_card(corpus: Path) -> Path:
    """CARD.md again from `stats.json` and the recipe recorded in `manifest.json`."""
    from gptnl.artefacts import CorpusManifest, read_manifest, read_stats
    from gptnl.config import load_sources

    manifest = read_manifest(corpus, CorpusManifest)
    recipe = RecipeConfig.model_validate(manifest.config)
    stats = read_stats(corpus)
    return write_card(corpus, recipe, load_sources(recipe.sources), stats)


def _composition(stats: CorpusStats) -> dict | None:
    """Documents and words kept per source, licence and language (stats.json's `composition`)."""
    comp = stats.composition
    if not comp or not comp.rows:
        return None
    tok = comp.tokenizer
    counted = ["documents", "words", *(["tokens"] if tok else [])]
    said = f"tokens: `{Path(tok.path).name}`'s, checksum {tok.checksum[:12]}" if tok else \
        "model tokens: set `count_tokens_with` in the recipe, or see `gptnl pack`'s manifest"
    return {"counted": counted, "said": said,
            "rows": [[r.source, r.licence, r.lang, *(f"{getattr(r, k):,}" for k in counted)] for r in comp.rows],
            "languages": [[lang, *(f"{getattr(c, k):,}" for k in counted)] for lang, c in comp.languages.items()]}


def write_card(out: Path, recipe: RecipeConfig, sources: SourcesFile, stats: CorpusStats) -> Path:
    out = Path(out)
    policy = load_licence_policy(recipe.licences)
    licences: dict[str, int] = stats.licences
    obligations = [f"{lic} ({n} documents): "
                   + ", ".join(w for w, on in (("attribution", policy.allow[lic].attribution),
                                                ("share-alike", policy.allow[lic].share_alike)) if on)
                   for lic, n in sorted(licences.items())
                   if lic in policy.allow and (policy.allow[lic].attribution or policy.allow[lic].share_alike)]
    text = render(
        "data_card.md.j2", name=out.name, built=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        version=code_version(), recipe=recipe, stats=stats, ledger=ledger_mod.LEDGER,
        languages=[(code, recipe.language.threshold(code)) for code in recipe.language.languages],
        source_rows=[[s.name, s.publisher, s.url, s.retrieved, s.licence or "—", "yes" if s.tdm_reservation else "no",
                      *((c.inputs, c.kept) if (c := stats.sources.get(s.name)) else (0, 0))]
                     for s in sources.sources],
        licence_rows=[[k, v] for k, v in sorted(licences.items())], composition=_composition(stats),
        obligations=obligations, takedowns=stats.takedowns,
        pii_found=", ".join(f"{k} {v}" for k, v in stats.pii.items()), names=_names(recipe, stats),
        refusal_rows=[[step, reason, n] for step, reasons in stats.refused_by_step.items()
                      for reason, n in sorted(reasons.items())])
    path = out / "CARD.md"
    atomic_write_text(path, text)
    write_croissant(out, recipe, sources, stats)  # the same facts as JSON-LD, beside the card
    return path
