"""HCL text -> plain Python values, with the line each key was defined on.

This is the only module that imports :mod:`hcl2`. We use its parser but not its
transformer: python-hcl2 8 returns strings with their quotes still on, marks
blocks with ``__is_block__`` and drops line numbers, and the line numbers are
the point of a good error message. So we walk the lark parse tree ourselves.

Theory of operation:

- The accepted language is HCL's *literal* subset: numbers, strings (quoted
  with escapes, or heredocs), ``true``/``false``/``null``, lists and objects,
  arranged as attributes and blocks. Interpolation, references, function calls
  and operators (other than a leading minus on a number) are reported as
  problems: a proxy config has no variables to refer to, and silently passing
  ``"${x}"`` through would be worse than refusing it.
- Blocks become nested dicts keyed by their type and then by each label:
  ``server { }`` -> ``{"server": {...}}`` and ``ingress "web" { }`` ->
  ``{"ingress": {"web": {...}}}``. Defining the same attribute, unlabelled
  block or block label twice is a problem, as in HCL itself.
- Every value gets an entry in :attr:`Document.lines` keyed by its key path,
  e.g. ``("ingress", "web", "services", 0, "name")``.
- A syntax error stops the parse (lark does not recover); problems found while
  converting values are collected, and all of them are raised together.
- The walk is recursive, so nesting (blocks, lists, objects, signs) deeper
  than :data:`MAX_NESTING` levels is a problem rather than a
  ``RecursionError``; so is an integer literal of more digits than Python
  converts (``sys.get_int_max_str_digits()``, 4300 by default).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import final

import hcl2
from lark import Token, Tree
from lark.exceptions import UnexpectedEOF, UnexpectedInput, UnexpectedToken

from snakeway.errors import ConfigError, Problem

KeyPath = tuple[str | int, ...]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_ESCAPE = re.compile(r"\\(u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
_SIMPLE_QUOTES = {char: "\\" + code for code, char in _SIMPLE_ESCAPES.items()}
_QUOTE = re.compile(r'[\\"\n\r\t\x00-\x1f\x7f]|[$%]\{')
_HEREDOC = re.compile(r"<<(-?)([A-Za-z][A-Za-z0-9._-]*)\r?\n(.*?)[ \t]*\2\r?\n?\Z", re.DOTALL)
_INTERPOLATION = re.compile(r"(?<!\$)\$\{|(?<!%)%\{")
#: Deepest nesting of blocks and values accepted; a real configuration needs fewer than ten levels.
MAX_NESTING = 100
# Parse-tree nodes that are only layout.
_SKIP = frozenset({"new_line_or_comment"})


def format_key_path(path: KeyPath) -> str:
    """Render a key path the way users write it: ``ingress.web.services[0].name``.

    Keys that are not plain names (an ingress called ``a.b``) are quoted.
    """
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        else:
            text = part if _NAME.match(part) else quote(part)
            out.append(f".{text}" if out else text)
    return "".join(out)


def quote(text: str) -> str:
    """Quote ``text`` as an HCL string literal that decodes back to ``text``.

    ``{`` after ``$`` or ``%`` is written ``\\u007b`` rather than as ``$${``:
    python-hcl2 only accepts ``$${`` when a ``}`` follows.
    """
    return '"' + _QUOTE.sub(_quote_char, text) + '"'


def _quote_char(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _SIMPLE_QUOTES:
        return _SIMPLE_QUOTES[char]
    if len(char) == 2:  # "${" or "%{"
        return char[0] + "\\u007b"
    return f"\\u{ord(char):04x}"


def describe(value: object) -> str:
    """A plain value as error messages show it, by HCL type: ``string "80"``, ``number 1.5``, ``list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {'true' if value else 'false'}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {quote(value if len(value) <= 40 else value[:37] + '...')}"
    return "list" if isinstance(value, list) else "object"


@final
@dataclass(frozen=True)
class Document:
    """A parsed HCL file.

    Attributes:
        path: The file, as given to :func:`load` / :func:`parse`.
        data: The top-level body as plain values (``dict``, ``list``, ``str``,
            ``int``, ``float``, ``bool``, ``None``).
        lines: The line on which each key path's value is defined.
    """

    path: Path
    data: dict[str, object]
    lines: Mapping[KeyPath, int] = field(repr=False)

    def line(self, path: KeyPath) -> int:
        """The line of ``path``, or of its nearest defined ancestor (a missing key)."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1


def load(path: Path) -> Document:
    """Read and parse the HCL file at ``path``.

    Raises:
        ConfigError: The file cannot be read, is not UTF-8, has a syntax error
            or uses something outside the literal subset (see module docs).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem(path, 1, "", f"cannot read file: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([Problem(path, line, "", "file is not valid UTF-8")]) from None
    return parse(text, path)


def parse(text: str, path: Path) -> Document:
    """Parse HCL ``text``; ``path`` is only used in errors and :attr:`Document.path`.

    Raises:
        ConfigError: See :func:`load`.
    """
    text = text.removeprefix("\ufeff")
    try:
        tree = hcl2.parses_to_tree(text)
    except UnexpectedInput as exc:
        raise ConfigError([Problem(path, max(exc.line, 1), "", _syntax_message(exc, text))]) from None
    walker = _Walker(path)
    data = walker.body(_child_trees(tree)[0], ())
    if walker.problems:
        raise ConfigError(walker.problems)
    return Document(path, data, walker.lines)


def _syntax_message(exc: UnexpectedInput, text: str) -> str:
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        return "syntax error: unexpected end of file (unclosed brace, bracket or string?)"
    # Show the character lark stopped at: its contextual lexer can make tokens
    # out of odd spans ("= 2" as string characters), which would confuse.
    lines = text.split("\n")
    line = lines[exc.line - 1] if 0 < exc.line <= len(lines) else ""
    char = line[exc.column - 1] if 0 < exc.column <= len(line) else ""
    if not char.strip():
        return f"syntax error at column {exc.column}: unexpected end of line"
    return f"syntax error at column {exc.column}: unexpected {quote(char)}"


def _child_trees(node: Tree[Token]) -> list[Tree[Token]]:
    return [c for c in node.children if isinstance(c, Tree) and c.data not in _SKIP]


def _line(node: Tree[Token] | Token) -> int:
    if isinstance(node, Token):
        return node.line or 1
    return node.meta.line if not node.meta.empty else 1


def _token_text(node: Tree[Token]) -> str:
    """The text of a single-token node such as ``identifier`` or ``keyword``."""
    token = node.children[0]
    return str(token.value) if isinstance(token, Token) else ""


class _Walker:
    """Converts the lark tree to plain values, recording lines and problems."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[KeyPath, int] = {}
        self.problems: list[Problem] = []
        self.depth = 0  # blocks and values being walked, outermost included
        self.too_deep = False  # reported once per file

    def enter(self, path: KeyPath, line: int) -> bool:
        """Go one level deeper, unless that is beyond MAX_NESTING (reported); pair a True with :meth:`leave`."""
        if self.depth >= MAX_NESTING:
            if not self.too_deep:
                self.too_deep = True
                self.problem(path, line, f"nested more than {MAX_NESTING} levels deep")
            return False
        self.depth += 1
        return True

    def leave(self) -> None:
        self.depth -= 1

    def problem(self, path: KeyPath, line: int, message: str) -> None:
        self.problems.append(Problem(self.path, line, format_key_path(path), message))

    def body(self, node: Tree[Token], path: KeyPath) -> dict[str, object]:
        if not self.enter(path, _line(node)):
            return {}
        try:
            return self._body(node, path)
        finally:
            self.leave()

    def _body(self, node: Tree[Token], path: KeyPath) -> dict[str, object]:
        out: dict[str, object] = {}
        # key -> (number of block labels, or -1 for an attribute; first line)
        kinds: dict[str, tuple[int, int]] = {}
        for item in _child_trees(node):
            parts = _child_trees(item)
            name = _token_text(parts[0])
            line = _line(item)
            if item.data == "attribute":
                if self._claim(kinds, name, -1, path, line):
                    self.lines[(*path, name)] = line
                    out[name] = self.value(parts[1], (*path, name))
            elif item.data == "block":
                labels = [self.label(p, path) for p in parts[1:] if p.data != "body"]
                if self._claim(kinds, name, len(labels), path, line):
                    self._add_block(out, name, labels, parts[-1], path, line)
        return out

    def _claim(self, kinds: dict[str, tuple[int, int]], name: str, labels: int, path: KeyPath, line: int) -> bool:
        """Whether ``name`` may be (re)defined here; reports the clash if not."""
        previous = kinds.get(name)
        if previous is None:
            kinds[name] = (labels, line)
            return True
        if labels > 0 and previous[0] == labels:
            return True  # another labelled block of the same type: labels must differ
        self.problem((*path, name), line, f"{quote(name)} is already defined on line {previous[1]}")
        return False

    def _add_block(
        self, out: dict[str, object], name: str, labels: list[str], body: Tree[Token], path: KeyPath, line: int
    ) -> None:
        container, key, here = out, name, (*path, name)
        for label in labels:
            self.lines.setdefault(here, line)
            nested = container.setdefault(key, {})
            assert isinstance(nested, dict)  # only blocks with labels create these
            container, key, here = nested, label, (*here, label)
        if key in container:
            self.problem(here, line, f"this block is already defined on line {self.lines[here]}")
            return
        self.lines[here] = line
        container[key] = self.body(body, here)

    def label(self, node: Tree[Token], path: KeyPath) -> str:
        if node.data == "string":
            return self.string(node, path)
        return _token_text(node)

    def value(self, node: Tree[Token] | Token, path: KeyPath) -> object:
        # A wrapper node, and "( expr )": unwrapped in a loop, so that parentheses cost no recursion.
        while isinstance(node, Tree) and node.data == "expr_term" and len(inner := _child_trees(node)) == 1:
            node = inner[0]
        if not self.enter(path, _line(node)):
            return None
        try:
            return self._value(node, path)
        finally:
            self.leave()

    def _value(self, node: Tree[Token] | Token, path: KeyPath) -> object:
        if isinstance(node, Token):  # not produced by the grammar for values
            self.problem(path, _line(node), f"unexpected {quote(str(node.value))}")
            return None
        kind = node.data
        children = _child_trees(node)
        if kind == "int_lit":
            digits = _token_text(node)
            try:
                return int(digits)
            except ValueError:  # more digits than int() converts
                self.problem(path, _line(node), f"integer of {len(digits)} digits is too large")
                return None
        if kind == "float_lit":
            return float(_token_text(node))
        if kind == "literal_value":
            return {"true": True, "false": False, "null": None}[_token_text(node)]
        if kind == "string":
            return self.string(node, path)
        if kind in ("heredoc_template", "heredoc_template_trim"):
            return self.heredoc(_token_text(node), path, _line(node))
        if kind == "tuple":
            return self.tuple(children, path)
        if kind == "object":
            return self.object(children, path)
        if kind == "unary_op":
            return self.negative(node, children, path)
        if kind == "identifier":
            word = _token_text(node)
            self.problem(path, _line(node), f"bare word {word}: strings must be quoted, as in {quote(word)}")
            return None
        self.problem(path, _line(node), "only literal values are supported here (no expressions or references)")
        return None

    def negative(self, node: Tree[Token], children: list[Tree[Token]], path: KeyPath) -> object:
        sign, before = node.children[0], len(self.problems)
        if isinstance(sign, Token) and sign.value == "-" and len(children) == 1:
            number = self.value(children[0], path)
            if isinstance(number, int | float) and not isinstance(number, bool):
                return -number
        if len(self.problems) == before:  # or the operand's problem says it all
            self.problem(path, _line(node), "only literal values are supported here (no expressions or references)")
        return None

    def tuple(self, items: list[Tree[Token]], path: KeyPath) -> list[object]:
        out: list[object] = []
        for index, item in enumerate(items):
            self.lines[(*path, index)] = _line(item)
            out.append(self.value(item, (*path, index)))
        return out

    def object(self, elems: list[Tree[Token]], path: KeyPath) -> dict[str, object]:
        out: dict[str, object] = {}
        for elem in elems:
            key_node, value_node = _child_trees(elem)
            line = _line(elem)
            key = self.object_key(key_node, path, line)
            if key is None:
                continue
            if key in out:
                self.problem((*path, key), line, f"{quote(key)} is already defined on line {self.lines[(*path, key)]}")
                continue
            self.lines[(*path, key)] = line
            out[key] = self.value(value_node, (*path, key))
        return out

    def object_key(self, node: Tree[Token], path: KeyPath, line: int) -> str | None:
        inner = _child_trees(node)
        if node.data == "object_elem_key" and len(inner) == 1:
            node = inner[0]
            inner = _child_trees(node)
        if node.data == "expr_term" and len(inner) == 1:
            node = inner[0]
        if node.data in ("identifier", "keyword", "literal_value"):
            return _token_text(node)
        if node.data == "string":
            return self.string(node, path)
        self.problem(path, line, "object keys must be names or quoted strings")
        return None

    def string(self, node: Tree[Token], path: KeyPath) -> str:
        out: list[str] = []
        for part in node.children:
            if not isinstance(part, Tree):
                continue  # the quotes
            piece = part.children[0]
            if isinstance(piece, Tree):
                self.problem(path, _line(part), "interpolation and template directives are not supported "
                             '(write "$${" or "%%{" for a literal "${" or "%{")')
            elif piece.type == "ESCAPED_INTERPOLATION" or piece.type == "ESCAPED_DIRECTIVE":
                out.append(str(piece.value)[1:])
            else:
                out.append(self.unescape(str(piece.value), path, _line(part)))
        return "".join(out)

    def unescape(self, text: str, path: KeyPath, line: int) -> str:
        def replace(match: re.Match[str]) -> str:
            code = match.group(1)
            if code in _SIMPLE_ESCAPES:
                return _SIMPLE_ESCAPES[code]
            if len(code) > 1:
                char = int(code[1:], 16)
                if char <= 0x10FFFF and not 0xD800 <= char <= 0xDFFF:
                    return chr(char)
            self.problem(path, line, f"invalid escape sequence {match.group(0)} in string")
            return match.group(0)

        return _ESCAPE.sub(replace, text)

    def heredoc(self, text: str, path: KeyPath, line: int) -> str:
        match = _HEREDOC.match(text)
        if match is None:  # the grammar's token and our pattern disagree
            self.problem(path, line, "malformed heredoc")
            return ""
        trim, body = match.group(1), match.group(3)
        if _INTERPOLATION.search(body):
            self.problem(path, line, "interpolation and template directives are not supported in heredocs")
        lines = body.splitlines(keepends=True)
        if trim:
            indents = [len(ln) - len(ln.lstrip(" \t")) for ln in lines if ln.strip()]
            cut = min(indents, default=0)
            lines = [ln[cut:] for ln in lines]
        return "".join(lines).replace("$${", "${").replace("%%{", "%{")
