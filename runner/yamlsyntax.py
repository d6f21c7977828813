"""YAML syntax errors in words staff understand, at the place where the problem begins.

PyYAML (and libyaml) report where the parser gave up, which for a forgotten quote can be
many lines after it ("did not find expected key" at the next quote). This module turns
the common cases into a sentence with a way out, placed at the opening quote, the
opening bracket or the key without a colon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml
from yaml.tokens import ScalarToken

from runner.errors import Diagnostic

# A line that reads like YAML structure: `key:` / `key: value` or a `- ` list item.
_STRUCTURE = re.compile(r"\s*(?:-(?:\s|$)|[^\s#'\"\-][^:#]*:(?:\s|$))")


@dataclass(frozen=True)
class _Quote:
    line: int  # 1-based, of the opening quote
    col: int
    char: str
    last_line: int  # the line the quoted text was read up to


def syntax_diagnostic(e: yaml.MarkedYAMLError, text: str, file: str) -> Diagnostic:
    """One diagnostic for a syntax error: plain words, the line where it begins."""
    problem, context = e.problem or "", e.context or ""
    at = _mark(e.problem_mark) or _mark(e.context_mark) or (1, 1)
    start = _mark(e.context_mark) or at
    lines = text.splitlines()

    quote = _unclosed_quote(e, text)
    if quote is not None:
        q = quote.char
        if quote.last_line == 0:
            read = "the rest of the file"
        else:
            read = f"the text up to the next {q} (on line {quote.last_line})"
        return Diagnostic(file, quote.line, quote.col,
                          f"this {q} is never closed, so YAML read {read} as one value: "
                          f"add the closing {q} at the end of the value (or remove the {q} "
                          "at its start)")

    early = _closed_early(e, text)
    if early is not None:
        line, col, q = early
        inside = "write it twice ('it''s')" if q == "'" else 'write it as \\"'
        other = '"' if q == "'" else "'"
        return Diagnostic(file, line, col,
                          f"this {q} closes the quoted value, and text follows it: to put a "
                          f"{q} inside a {q}...{q} value {inside}, or quote the whole value "
                          f"with {other} instead")
    if "unknown escape character" in problem:
        return Diagnostic(file, at[0], at[1],
                          'a \\ inside "..." starts an escape (\\n, \\t): write \\\\ for '
                          "a backslash, or quote the value with ' instead")

    here = lines[at[0] - 1][at[1] - 1:at[1]] if 0 < at[0] <= len(lines) else ""
    if here == "\t" or "\t" in problem or (
        "tab" in problem and at[0] <= len(lines) and "\t" in lines[at[0] - 1]
    ):
        return Diagnostic(file, at[0], at[1], "a tab is used for indentation; YAML needs "
                                              "spaces: replace the tab with spaces")
    if "could not find expected ':'" in problem:
        return Diagnostic(file, start[0], start[1],
                          "this line has no ':' after its key: write `key: value` (a list "
                          "item starts with `- `), or join it to the line above if it "
                          "continues that value")
    if "flow sequence" in context or "flow mapping" in context:
        opening, closing = ("[", "]") if "sequence" in context else ("{", "}")
        return Diagnostic(file, start[0], start[1],
                          f"this {opening} is not closed where YAML expected it (it gave "
                          f"up on line {at[0]}): add the closing {closing} and a comma "
                          "between items, or quote the value if the brackets are text")
    if "block mapping" in context or "block collection" in context:
        return Diagnostic(file, at[0], at[1],
                          "this line is indented differently from the keys above it (the "
                          f"block starts on line {start[0]}): line it up with spaces under "
                          "the keys it belongs with, or add the missing ':' above")
    if "mapping values are not allowed" in problem:
        return Diagnostic(file, at[0], at[1],
                          "a ': ' here starts a new key where none can start: if it is "
                          "part of the value, put the value in quotes (message: \"a: b\"); "
                          "otherwise check this line's indentation")
    if "cannot start any token" in problem and here in ("`", "@", "%"):
        return Diagnostic(file, at[0], at[1],
                          f"a value cannot start with {here}: put the value in quotes")
    hint = ""
    if "found duplicate anchor" in problem or "found undefined alias" in problem:
        hint = "; check the &anchor and *alias names"
    ctx = f" ({context})" if context else ""
    return Diagnostic(file, at[0], at[1],
                      f"YAML syntax error: {problem or 'invalid YAML'}{ctx}{hint}")


def _mark(mark: yaml.Mark | None) -> tuple[int, int] | None:
    return (mark.line + 1, mark.column + 1) if mark is not None else None


def _unclosed_quote(e: yaml.MarkedYAMLError, text: str) -> _Quote | None:
    """The quote that was never closed, if that is what went wrong."""
    if (e.context == "while scanning a quoted scalar" and e.context_mark is not None
            and ("end of stream" in (e.problem or "") or "document" in (e.problem or ""))):
        m = e.context_mark  # it ran to the end of the file
        return _Quote(m.line + 1, m.column + 1, text[m.index:m.index + 1] or '"', 0)
    if e.problem_mark is None:
        return None
    # The quote swallowed the following lines up to the next quote of its kind, and
    # what followed that one is the error: find that quoted text.
    problem_line = e.problem_mark.line
    found: _Quote | None = None
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            start, end = token.start_mark, token.end_mark
            if start.line > problem_line:
                break
            if (isinstance(token, ScalarToken) and token.style in ('"', "'")
                    and end.line > start.line and problem_line - end.line <= 1
                    and _swallowed_structure(text, start.line, end.line)):
                found = _Quote(start.line + 1, start.column + 1, token.style, end.line + 1)
    except yaml.YAMLError:
        pass  # the scanner stops at (or after) the error; what it found is enough
    return found


def _closed_early(e: yaml.MarkedYAMLError, text: str) -> tuple[int, int, str] | None:
    """`'it's on'`: the error is just after a quoted value on its line (line, col, quote)."""
    m = e.problem_mark
    if m is None:
        return None
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            end = token.end_mark
            if end.line > m.line or end.index > m.index:
                break
            if (isinstance(token, ScalarToken) and token.style in ('"', "'")
                    and end.line == m.line and not text[end.index:m.index].strip()
                    and m.index < len(text) and text[m.index] not in "#\n"):
                return end.line + 1, end.column, token.style
    except yaml.YAMLError:
        pass
    return None


def _swallowed_structure(text: str, first: int, last: int) -> bool:
    """Whether lines after `first` up to `last` (0-based) look like keys or list items."""
    lines = text.splitlines()[first + 1:last + 1]
    return any(_STRUCTURE.match(line) for line in lines)
