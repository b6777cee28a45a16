"""Rendering report tables: GitHub Markdown and a LaTeX booktabs table (tables.py builds them).
Bold marks each column's best value within a block, compared as printed; missing cells show as —
(Markdown) or -- (LaTeX)."""

from __future__ import annotations

import re

from scope_bench.reports.tables import Table, cell_number


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown: a bold title, a pipe table, notes; block titles as bold rows."""
    cols = table.columns
    parts = [f"**{_md_escape(table.title)}**"]
    if table.groups:
        spans, start = [], 0
        for name, n in table.groups:
            spans.append(f"{name}: {', '.join(table.header(c) for c in cols[start:start + n])}")
            start += n
        parts.append(_md_escape("; ".join(spans)))
    lines = ["| Method | " + " | ".join(_md_escape(table.header(c)) for c in cols) + " |",
             "|:---|" + "---:|" * len(cols)]
    empty = " |" * len(cols)
    for block in table.blocks:
        best = table.best(block)
        title = f"*{block.title}*" if block.reference else f"**{block.title}**"
        lines.append(f"| {title} |" + empty)
        if not any(rows for _, rows in block.sections):
            lines.append("| (no runs) |" + empty)
        for sec_title, rows in block.sections:
            if sec_title:
                lines.append(f"| *{sec_title}* |" + empty)
            for row in rows:
                cells = _cells(table, row, cols, best, missing="—", bold="**{}**")
                lines.append(f"| {_md_escape(row.name)} | " + " | ".join(cells) + " |")
    parts.append("\n".join(lines))
    parts += [_md_escape(n) for n in table.notes]
    return "\n\n".join(parts) + "\n"


def _cells(table, row, cols, best: dict, *, missing: str, bold: str) -> list[str]:
    """A row's formatted cells: `missing` where there is no value, `bold` around a column's best."""
    cells = []
    for c in cols:
        text = table.fmt(c, row.cells.get(c))
        if text is None:
            cells.append(missing)
        elif best.get(c) is not None and cell_number(text) == best[c]:
            cells.append(bold.format(text))
        else:
            cells.append(text)
    return cells


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


_TABLE_NUMBER = re.compile(r"^Table \d+\.\s*")  # LaTeX numbers captions itself


def to_latex(table: Table) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    cols = table.columns
    n = len(cols) + 1
    out = [r"\begin{table}[ht]", r"\centering", r"\small" if len(cols) < 10 else r"\scriptsize",
           rf"\caption{{{latex_escape(_TABLE_NUMBER.sub('', table.title))}}}", rf"\label{{tab:{table.key}}}",
           r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule"]
    if table.groups:
        spans, rules, start = [], [], 2
        for name, width in table.groups:
            spans.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(name)}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        out += [" & " + " & ".join(spans) + r" \\", " ".join(rules)]
    out.append("Method & " + " & ".join(latex_escape(table.header(c)).replace("*", "$^*$") for c in cols) + r" \\")
    for block in table.blocks:
        best = table.best(block)
        out += [r"\midrule", rf"\multicolumn{{{n}}}{{l}}{{\textit{{{latex_escape(block.title)}}}}} \\"]
        if not any(rows for _, rows in block.sections):
            out.append(rf"\multicolumn{{{n}}}{{l}}{{(no runs)}} \\")
        for sec_title, rows in block.sections:
            if sec_title:
                out.append(rf"\multicolumn{{{n}}}{{l}}{{\quad\textit{{{latex_escape(sec_title)}}}}} \\")
            for row in rows:
                cells = _cells(table, row, cols, best, missing="--", bold=r"\textbf{{{}}}")
                out.append(latex_escape(row.name) + " & " + " & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if table.notes:
        out.append(r"\par\smallskip{\footnotesize " + latex_escape(" ".join(table.notes)).replace("—", "--")
                   + "}")
    out.append(r"\end{table}")
    return "\n".join(out)
