"""The report as a document: sections of blocks (a figure and its tables) with links to the
run's table files (`table_links`), rendered as Markdown (`render_markdown`) and as
self-contained HTML (`render_html`, inline CSS).

Example:
    >>> section = Section("notes", "Notes", bullets=["one seed"])
    >>> render_markdown("Study", [], [section], []).splitlines()[-1]
    '- one seed'
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from headcount.report.format import MISSING, TABLE_DIR

# --------------------------------------------------------------------------------------
# The document: sections of blocks (figure + tables)


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    style: str = ""  # "claims": cells wrap, and verdict cells are coloured by their verdict


@dataclass
class Block:
    title: str
    figure: str | None = None  # path of the figure without suffix, relative to the run dir
    caption: str = ""
    tables: list[Table] = field(default_factory=list)


@dataclass
class Section:
    key: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    code: str | None = None
    links: list[tuple[str, str]] = field(default_factory=list)


def table_links(run_dir: Path, *names: str) -> list[tuple[str, str]]:
    """(label, href) of each file of the tables `names` under RUN_DIR/tables (CSV, Parquet)
    that exists, in that order."""
    return [(f"{TABLE_DIR}/{name}{suffix}", f"{TABLE_DIR}/{name}{suffix}")
            for name in names for suffix in (".csv", ".parquet")
            if (run_dir / TABLE_DIR / f"{name}{suffix}").is_file()]


# --------------------------------------------------------------------------------------
# Rendering


_MD_SPECIAL = re.compile(r"([\\`*_\[\]])")
_MD_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")


def _md(text) -> str:
    """Plain text for Markdown: emphasis, code and link characters escaped; '<' (raw HTML)
    and an '&' that would start an entity written as entities."""
    text = _MD_ENTITY.sub("&amp;", str(text)).replace("<", "&lt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_cell(text) -> str:
    return _md(text).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    lines = []
    if table.caption:
        lines += [f"*{_md(table.caption)}*", ""]
    columns = table.columns
    lines.append("| " + " | ".join(_md_cell(c) or " " for c in columns) + " |")
    lines.append("|" + "|".join("---:" if _numeric_column(table, i) else "---"
                                for i in range(len(columns))) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(cell) for cell in row) + " |")
    return lines + [""]


_NUMERIC = re.compile(r"^[-+−]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?%?( ± [\d.eE+-]+)?$")


def _numeric_column(table: Table, index: int) -> bool:
    cells = [row[index] for row in table.rows if index < len(row) and row[index] != MISSING]
    return bool(cells) and all(_NUMERIC.match(cell) for cell in cells)


def _fence(code: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    return "`" * max(3, longest + 1)


def _by_topic(findings: list[tuple[str, str]]) -> dict[str, list[str]]:
    topics: dict[str, list[str]] = {}
    for topic, sentence in findings:
        topics.setdefault(topic, []).append(sentence)
    return topics


def _md_section(section: Section) -> list[str]:
    lines = [f"## {_md(section.title)}", ""]
    for paragraph in section.paragraphs:
        lines += [_md(paragraph), ""]
    for block in section.blocks:
        lines += [f"### {_md(block.title)}", ""]
        if block.figure:
            lines += [f"![{_md(block.caption)}]({block.figure}.png)", "",
                      f"([SVG]({block.figure}.svg))", ""]
        for table in block.tables:
            lines += _md_table(table)
    for table in section.tables:
        lines += _md_table(table)
    if section.bullets:
        lines += [f"- {_md(bullet)}" for bullet in section.bullets] + [""]
    if section.code is not None:
        fence = _fence(section.code)
        lines += [f"{fence}toml", section.code.rstrip("\n"), fence, ""]
    if section.links:
        lines += ["Full data: " + ", ".join(f"[{_md(label)}]({href})"
                                            for label, href in section.links), ""]
    return lines


def render_markdown(title: str, findings: list[tuple[str, str]], sections: list[Section],
                    problems: list[str], subtitle: str = "", lead: Section | None = None) -> str:
    """The report as Markdown: `lead` (the claims) first, then the headline findings, the
    warnings and the sections."""
    lines = [f"# {_md(title)}", ""]
    if lead is not None:
        lines += _md_section(lead)
    lines += ["## Headline findings", ""]
    if not findings:
        lines += ["No findings: no tables.", ""]
    for topic, sentences in _by_topic(findings).items():
        lines += [f"### {_md(topic)}", ""] + [f"- {_md(s)}" for s in sentences] + [""]
    if problems:
        lines += ["## Report warnings", ""] + [f"- {_md(p)}" for p in problems] + [""]
    for section in sections:
        lines += _md_section(section)
    markdown = "\n".join(lines).rstrip("\n") + "\n"
    if subtitle:  # under the title, which is the first line
        markdown = markdown.replace("\n", f"\n\n{_md(subtitle)}\n", 1)
    return markdown


_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #1f2328; background: #fff; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 32px 64px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.4em; }
h2 { font-size: 1.3em; margin-top: 2.2em; padding-bottom: 0.25em;
  border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1.05em; margin: 1.4em 0 0.5em; color: #424a53; }
p { margin: 0.5em 0 0.8em; max-width: 78ch; }
nav.toc { font-size: 0.92em; background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px;
  padding: 8px 14px; margin: 12px 0 18px; display: flex; flex-wrap: wrap; gap: 4px 18px; }
nav.toc a { white-space: nowrap; }
a { color: #0969da; text-decoration: none; } a:hover { text-decoration: underline; }
ul.findings { padding-left: 1.3em; } ul.findings li { margin: 0.35em 0; }
.warnings { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 6px 14px; }
.pair { display: flex; flex-wrap: wrap; gap: 16px 32px; align-items: flex-start; }
.pair figure { flex: 0 1 auto; margin: 0; max-width: 100%; }
.pair .tables { flex: 1 1 auto; min-width: 0; max-width: 100%; display: flex;
  flex-wrap: wrap; gap: 0 28px; align-items: flex-start; }
.pair .tables .table-wrap { max-width: 100%; }
.pair.side .tables { flex: 1 1 300px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #d0d7de;
  border-radius: 4px; background: #fff; }
figcaption { font-size: 0.85em; color: #59636e; margin-top: 4px; }
.table-wrap { overflow-x: auto; margin: 0 0 14px; }
table { border-collapse: collapse; font-size: 0.82em; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-size: 0.95em; color: #59636e;
  padding: 0 0 4px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; text-align: left; }
td { white-space: nowrap; }
td.num { text-align: right; }
tbody tr:nth-child(even) { background: #fbfcfd; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 14px;
  overflow-x: auto; font-size: 0.85em; line-height: 1.4; }
.links { font-size: 0.9em; color: #59636e; }
table.claims { font-size: 0.75em; line-height: 1.25; width: 100%; }
table.claims td, table.claims th { white-space: normal; padding: 1px 5px; }
table.claims td:nth-child(1) { width: 27%; } table.claims td:nth-child(2) { width: 22%; }
table.claims td:nth-child(3) { width: 35%; }
td.agrees { background: #dafbe1; } td.disagrees { background: #ffebe9; }
td.unsure { background: #fff8c5; }
#claims h2 { margin: 0.4em 0 0.3em; } #claims p { margin: 0.1em 0 0.4em; font-size: 0.9em;
  max-width: none; }
.meta { color: #59636e; font-size: 0.92em; max-width: none; margin: 0 0 0.3em; }
"""


VERDICT_CLASSES = {"agrees": "agrees", "disagrees": "disagrees", "inconclusive": "unsure"}


def _cell_class(table: Table, cell: str, numeric: bool) -> str:
    """The class of a cell: numbers align right; in a claims table a verdict is coloured."""
    if table.style == "claims":
        word = cell.split(" ", 1)[0].strip(":")
        return f' class="{VERDICT_CLASSES[word]}"' if word in VERDICT_CLASSES else ""
    return ' class="num"' if numeric else ""


def _html_table(table: Table) -> str:
    esc = html.escape
    numeric = [_numeric_column(table, i) for i in range(len(table.columns))]
    style = f' class="{esc(table.style)}"' if table.style else ""
    parts = [f'<div class="table-wrap"><table{style}>']
    if table.caption:
        parts.append(f"<caption>{esc(table.caption)}</caption>")
    if any(table.columns):
        parts.append("<thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in table.columns)
                     + "</tr></thead>")
    parts.append("<tbody>")
    for row in table.rows:
        parts.append("<tr>" + "".join(
            f"<td{_cell_class(table, cell, i < len(numeric) and numeric[i])}>{esc(cell)}</td>"
            for i, cell in enumerate(row)) + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _table_px(table: Table) -> float:
    """A rough width of `table` in CSS pixels (cells do not wrap; headers wrap at spaces)."""
    width = 0.0
    for index, column in enumerate(table.columns):
        longest = max([len(row[index]) for row in table.rows if index < len(row)]
                      + [max((len(word) for word in column.split()), default=0)])
        width += 7.5 * longest + 18
    return width


def _html_section(section: Section) -> list[str]:
    esc = html.escape
    out = [f'<section id="{esc(section.key)}"><h2>{esc(section.title)}</h2>']
    out += [f"<p>{esc(p)}</p>" for p in section.paragraphs]
    for block in section.blocks:
        out.append(f"<h3>{esc(block.title)}</h3>")
        narrow = block.figure and block.tables and max(
            _table_px(table) for table in block.tables) <= 460
        out.append(f'<div class="pair{" side" if narrow else ""}">')
        if block.figure:
            svg, png = esc(block.figure + ".svg"), esc(block.figure + ".png")
            out.append(f'<figure><a href="{svg}"><img src="{svg}" alt="{esc(block.caption)}"'
                       f'></a><figcaption>{esc(block.caption)} '
                       f'<a href="{png}">PNG</a> · <a href="{svg}">SVG</a></figcaption>'
                       "</figure>")
        if block.tables:
            out.append('<div class="tables">' + "".join(_html_table(t) for t in block.tables)
                       + "</div>")
        out.append("</div>")
    out += [_html_table(table) for table in section.tables]
    if section.bullets:
        out.append("<ul>" + "".join(f"<li>{esc(b)}</li>" for b in section.bullets) + "</ul>")
    if section.code is not None:
        out.append(f"<pre><code>{esc(section.code)}</code></pre>")
    if section.links:
        out.append('<p class="links">Full data: ' + ", ".join(
            f'<a href="{esc(href)}">{esc(label)}</a>' for label, href in section.links)
            + "</p>")
    out.append("</section>")
    return out


def render_html(title: str, findings: list[tuple[str, str]], sections: list[Section],
                problems: list[str], subtitle: str = "", lead: Section | None = None) -> str:
    """The report as one HTML page: `lead` (the claims) right under the title, so that it
    fills the first screen; then the contents, the headline findings, the warnings and the
    sections."""
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main>",
           f"<h1>{esc(title)}</h1>"]
    if subtitle:
        out.append(f'<p class="meta">{esc(subtitle)}</p>')
    if lead is not None:
        out += _html_section(lead)
    toc = ([] if lead is None else [(lead.key, lead.title)]) + [
        ("findings", "Headline findings")] + [(s.key, s.title) for s in sections]
    out.append('<nav class="toc">' + "".join(f'<a href="#{esc(key)}">{esc(name)}</a>'
                                             for key, name in toc) + "</nav>")
    out.append('<section id="findings"><h2>Headline findings</h2>')
    for topic, sentences in _by_topic(findings).items():
        out.append(f"<h3>{esc(topic)}</h3>")
        out.append('<ul class="findings">' + "".join(f"<li>{esc(f)}</li>" for f in sentences)
                   + "</ul>")
    if not findings:
        out.append("<p>No findings: no tables.</p>")
    out.append("</section>")
    if problems:
        out.append('<div class="warnings"><p><strong>Report warnings</strong></p><ul>'
                   + "".join(f"<li>{esc(p)}</li>" for p in problems) + "</ul></div>")
    for section in sections:
        out += _html_section(section)
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"
