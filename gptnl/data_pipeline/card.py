"""`CARD.md`: the data card, laid out along the EU AI Act's public summary of training content
(general information; list of data sources; data processing aspects), written from stats.json;
`croissant.json` beside it says the same in Croissant JSON-LD."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gptnl.config import RecipeConfig, SourcesFile, load_licence_policy
from gptnl.data_pipeline import ledger as ledger_mod
from gptnl.data_pipeline.croissant import write_croissant
from gptnl.fileio import atomic_write_text, code_version


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _names_lines(recipe: RecipeConfig, stats: dict) -> list[str]:
    """How many person names were replaced, and how well the detector does on the test letters."""
    from gptnl.data_pipeline.letters import LETTERS, score_names

    pii = recipe.pii
    if not pii.names and pii.ner is None:
        return ["Person names: not detected (`pii.names: false`, no `pii.ner`).", ""]
    how = " and ".join(w for w, on in (("marked by titles, salutations, signatures and \"namens\"", pii.names),
                                       (f"by the local {pii.ner.kind} NER model `{pii.ner.path.name}`"
                                        if pii.ner else "", pii.ner is not None)) if on)
    lines = [f"Person names ({how}): {stats['pii'].get('NAME', 0)} replaced."]
    if LETTERS.is_file():
        from gptnl.data_pipeline.letters import detector

        s = score_names(detector(pii.names, pii.ner))
        lines.append(f"On the bundled test letters (`data_pipeline/pii/letters.jsonl`: {s.letters} CC0 Dutch letters, "
                     f"{s.gold} names) this detector has precision {s.precision:.2f} and recall {s.recall:.2f} "
                     f"(exact spans; {s.found} found, {s.true_positives} right). Names with no such mark in "
                     "running text are missed.")
    return lines + [""]


def rewrite_card(corpus: Path) -> Path:
    """CARD.md again from `stats.json` and the recipe recorded in `manifest.json`."""
    from gptnl.config import load_sources
    from gptnl.errors import GptnlError
    from gptnl.fileio import read_manifest

    manifest = read_manifest(corpus)
    if manifest.get("stage") != "data" or not (Path(corpus) / "stats.json").is_file():
        raise GptnlError(f"{corpus}: not a corpus built by `gptnl data build`")
    recipe = RecipeConfig.model_validate(manifest["config"])
    stats = json.loads((Path(corpus) / "stats.json").read_text())
    return write_card(corpus, recipe, load_sources(recipe.sources), stats)


def _language_line(recipe: RecipeConfig) -> str:
    lang = recipe.language
    if len(lang.languages) == 1:
        return f"- Language kept: `{lang.languages[0]}` with a py3langid score of at least {lang.threshold(lang.keep)}"
    each = ", ".join(f"`{code}` (score ≥ {lang.threshold(code)})" for code in lang.languages)
    return f"- Languages kept: {each}, each in its own folder `documents/<lang>/` with its own quality thresholds"


def _composition_lines(stats: dict) -> list[str]:
    """Documents and words kept per source, licence and language (stats.json's `composition`)."""
    comp = stats.get("composition")
    if not comp or not comp["rows"]:
        return []
    tok = comp.get("tokenizer")
    counted = ["documents", "words", *(["tokens"] if tok else [])]
    said = f"tokens: `{Path(tok['path']).name}`'s, checksum {tok['checksum'][:12]}" if tok else \
        "model tokens: set `count_tokens_with` in the recipe, or see `gptnl pack`'s manifest"
    return ["### Composition", "",
            f"Kept per source, licence and language (words: runs of letters and digits; {said}).", "",
            *_table(["source", "licence", "language", *counted],
                    [[r["source"], r["licence"], r["lang"], *(f"{r[k]:,}" for k in counted)] for r in comp["rows"]]),
            "", *_table(["language", *counted],
                        [[lang, *(f"{c[k]:,}" for k in counted)] for lang, c in comp["languages"].items()]), ""]


def write_card(out: Path, recipe: RecipeConfig, sources: SourcesFile, stats: dict) -> Path:
    out = Path(out)
    policy = load_licence_policy(recipe.licences)
    licences: dict[str, int] = stats["licences"]
    obligations = [f"{lic} ({n} documents): "
                   + ", ".join(w for w, on in (("attribution", policy.allow[lic].attribution),
                                                ("share-alike", policy.allow[lic].share_alike)) if on)
                   for lic, n in sorted(licences.items())
                   if lic in policy.allow and (policy.allow[lic].attribution or policy.allow[lic].share_alike)]
    lines = [
        f"# Data card: {out.name}",
        "",
        "## 1. General information",
        "",
        f"- Built: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by gptnl {code_version()}",
        f"- Sources: `{recipe.sources.name}`; licence policy: `{recipe.licences.name}`; "
        f"blocklist: `{recipe.blocklist.name if recipe.blocklist else 'none'}`",
        f"- Documents read: {stats['inputs']}; kept: {stats['kept']}; refused: {stats['refused']} "
        f"(every input is in `{ledger_mod.LEDGER}`, one row each)",
        _language_line(recipe),
        "",
        "## 2. List of data sources",
        "",
        *_table(["source", "publisher", "url", "retrieved", "default licence", "TDM reserved", "read", "kept"],
                [[s.name, s.publisher, s.url, s.retrieved, s.licence or "—", "yes" if s.tdm_reservation else "no",
                  stats["sources"].get(s.name, {}).get("inputs", 0), stats["sources"].get(s.name, {}).get("kept", 0)]
                 for s in sources.sources]),
        "",
        "## 3. Data processing aspects",
        "",
        "### Licences",
        "",
        "Only the licences of the policy are admitted; all others, and documents without one, are refused.",
        "",
        *_table(["licence", "documents kept"], [[k, v] for k, v in sorted(licences.items())]),
        "",
        *_composition_lines(stats),
        "Obligations carried into models trained on this corpus: "
        + ("; ".join(obligations) if obligations else "none (all kept documents are public domain or CC0)."),
        "",
        "### Opt-outs honoured",
        "",
        f"- Text-and-data-mining reservations (DSM directive art. 4): {stats['opt_outs']['tdm']} documents refused.",
        f"- Blocklist (ids, urls, domains after opt-out requests or takedowns): {stats['opt_outs']['blocklist']} "
        "documents refused.",
        *[f"- Takedown on {t['date']}: {t['removed']} documents removed ({', '.join(t['entries'])})."
          for t in stats.get("takedowns", [])],
        "",
        "### Personal data",
        "",
        f"Found and replaced ({'typed placeholders' if recipe.pii.mode == 'placeholder' else 'made-up nl_NL values'}): "
        + (", ".join(f"{k} {v}" for k, v in stats["pii"].items()) or "none") + ".",
        "",
        *_names_lines(recipe, stats),
        "### Refusals by step and reason",
        "",
        *_table(["step", "reason", "documents"],
                [[step, reason, n] for step, reasons in stats["refused_by_step"].items()
                 for reason, n in sorted(reasons.items())]),
        "",
    ]
    path = out / "CARD.md"
    atomic_write_text(path, "\n".join(lines))
    write_croissant(out, recipe, sources, stats)  # the same facts as JSON-LD, beside the card
    return path
