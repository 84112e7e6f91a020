"""The Jinja templates of what gptnl writes for people to read: the data card (`CARD.md`), the model
card (`README.md` beside the weights) and the demo report (Markdown and HTML).

The code gathers the facts; the wording and the layout live here, one file per document, so a card
can be reworded without touching the code that counts. Templates are package data, read through
`importlib.resources`, so an installed wheel renders them from any working directory. Undefined names
fail loudly (a card with a silently empty field is worse than none); HTML is autoescaped.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import jinja2

HTML = ("html", "html.j2")  # `*.html.j2` is HTML: jinja's select_autoescape matches the name's last suffixes


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(files(__name__))), undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(HTML), keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["md_cell"] = md_cell
    return env


def md_cell(value: object) -> str:
    """One Markdown table cell: on one line, its pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def render(template: str, /, **context: object) -> str:
    """The template named `template` (e.g. `data_card.md.j2`) filled with `context`."""
    return environment().get_template(template).render(**context)
