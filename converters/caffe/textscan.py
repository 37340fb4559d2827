"""A small scanner of protobuf text: which layer a line belongs to, and how to cut one field out.

The protobuf text parser stops at the first field its schema does not know, naming the line and
the field.  To say *which layer* holds it (the error names the field, the layer and the line), and
to drop fields that cannot change inference (inside a data layer's parameters, for instance),
the text is tokenised here: strings, comments, braces and bare words, each with its offset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
    (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<punct>[{}<>\[\]:;,])
  | (?P<word>[^\s{}<>\[\]:;,"'\#]+)
  | (?P<space>\s+)
    """,
    re.VERBOSE,
)


@dataclass
class Token:
    kind: str
    text: str
    start: int
    end: int


@dataclass
class LayerSpan:
    """One top-level ``layer { ... }`` (or V1 ``layers``) block: its extent, name and type."""

    start: int
    end: int
    name: str | None = None
    type: str | None = None


def tokens(text: str) -> list[Token]:
    out = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind in ("comment", "space"):
            continue
        out.append(Token(kind, match.group(), match.start(), match.end()))
    return out


def layer_spans(text: str) -> list[LayerSpan]:
    """The top-level layer blocks of a net prototxt, in file order."""
    toks = tokens(text)
    spans: list[LayerSpan] = []
    stack: list[str] = []
    current: LayerSpan | None = None
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.kind == "word":
            j = i + 1
            if j < len(toks) and toks[j].text == ":":
                j += 1
            if j < len(toks) and toks[j].text in ("{", "<"):
                stack.append(tok.text)
                if len(stack) == 1 and tok.text in ("layer", "layers"):
                    current = LayerSpan(tok.start, len(text))
                    spans.append(current)
                i = j + 1
                continue
            if current is not None and len(stack) == 1 and tok.text in ("name", "type") and j < len(toks):
                value = toks[j].text
                if toks[j].kind == "string":
                    value = value[1:-1]
                setattr(current, tok.text, value)
                i = j + 1
                continue
        elif tok.text in ("}", ">"):
            if stack:
                stack.pop()
                if not stack and current is not None:
                    current.end = tok.end
                    current = None
        i += 1
    return spans


def offset_of(text: str, line: int, column: int) -> int:
    """The offset of 1-based ``line``/``column`` (as protobuf's ParseError gives them)."""
    lines = text.splitlines(keepends=True)
    return sum(len(s) for s in lines[: max(line - 1, 0)]) + max(column - 1, 0)


def layer_at(text: str, offset: int) -> LayerSpan | None:
    for span in layer_spans(text):
        if span.start <= offset < span.end:
            return span
    return None


def enclosing_blocks(text: str, offset: int) -> list[str]:
    """The names of the blocks open at ``offset`` (outermost first), e.g. ``["layer", "data_param"]``."""
    stack: list[str] = []
    toks = tokens(text)
    i = 0
    while i < len(toks) and toks[i].start < offset:
        tok = toks[i]
        if tok.kind == "word":
            j = i + 1
            if j < len(toks) and toks[j].text == ":":
                j += 1
            if j < len(toks) and toks[j].text in ("{", "<") and toks[j].start < offset:
                stack.append(tok.text)
                i = j + 1
                continue
        elif tok.text in ("}", ">") and stack:
            stack.pop()
        i += 1
    return stack


def cut_field(text: str, offset: int) -> tuple[str, str]:
    """Remove the field whose name starts at ``offset`` (``name: value``, ``name { ... }``,
    ``name: [a, b]``); return the new text and the removed text."""
    toks = [t for t in tokens(text) if t.start >= offset]
    if not toks:
        return text, ""
    i = 1
    if i < len(toks) and toks[i].text == ":":
        i += 1
    if i >= len(toks):
        end = toks[-1].end
    elif toks[i].text in ("{", "<", "["):
        closing = {"{": "}", "<": ">", "[": "]"}[toks[i].text]
        opening = toks[i].text
        depth = 0
        end = toks[-1].end
        for tok in toks[i:]:
            if tok.text == opening:
                depth += 1
            elif tok.text == closing:
                depth -= 1
                if depth == 0:
                    end = tok.end
                    break
    else:
        end = toks[i].end
        # Adjacent string literals concatenate in protobuf text.
        while toks[i].kind == "string" and i + 1 < len(toks) and toks[i + 1].kind == "string":
            i += 1
            end = toks[i].end
    if end < len(text) and text[end] in ",;":
        end += 1
    return text[:offset] + text[end:], text[offset:end]


__all__ = ["LayerSpan", "cut_field", "enclosing_blocks", "layer_at", "layer_spans", "offset_of", "tokens"]
