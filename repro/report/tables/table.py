"""The rendered form of a table (:class:`Table`): a caption, headers, rows and notes, written as Markdown and as
LaTeX (booktabs)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    """A rendered table: a caption, column headers, rows of cell strings, and notes under it."""

    name: str
    caption: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [
            f"**{self.caption}**",
            "",
            "| " + " | ".join(self.header) + " |",
            "|" + "|".join("---" for _ in self.header) + "|",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes]) + "\n"

    def latex(self) -> str:
        def esc(s: str) -> str:
            return (
                s.replace("\\", "\\textbackslash{}")
                .replace("&", "\\&")
                .replace("%", "\\%")
                .replace("_", "\\_")
                .replace("#", "\\#")
                .replace("±", "$\\pm$")
                .replace("×", "$\\times$")
                .replace("–", "--")
                .replace("**", "")
            )

        body = [" & ".join(esc(c) for c in r) + " \\\\" for r in self.rows]
        return "\n".join(
            [
                "\\begin{table}[t]",
                "\\centering",
                f"\\caption{{{esc(self.caption)}}}",
                f"\\label{{tab:{self.name}}}",
                "\\begin{tabular}{l" + "r" * (len(self.header) - 1) + "}",
                "\\toprule",
                " & ".join(esc(h) for h in self.header) + " \\\\",
                "\\midrule",
                *body,
                "\\bottomrule",
                "\\end{tabular}",
                "\\end{table}",
                "",
            ]
        )
