"""Linear restrictions given as text: "b[1] = b[2], b[3] = 0" -> (R, r), and host checks of R.

Names are parameter names as in `summary()`; expressions are linear (numbers, names, + - * /,
parentheses), a side without '=' is '= 0'. `_check_linear` checks a concrete (R, r) against a fit
(shape, finiteness, fixed parameters, rank, consistency) before any work.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ._results import FitResult


class _Linear(NamedTuple):
    coef: np.ndarray  # (k,)
    const: float


# Parentheses nest by recursion; far below Python's recursion limit, and far beyond any real use.
MAX_NESTING = 100
_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][\w.]*(\[[^\]]*\])?")
_NAME_CHARS = re.compile(r"[\w.\[]")


def _split_restrictions(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch in "[(") - (ch in "])")
        if depth == 0 and ch in ",;\n":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


class _Parser:
    """Linear expressions in parameter names: numbers, names, + - * / and parentheses."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.by_length = sorted(range(len(names)), key=lambda i: -len(names[i]))

    def tokens(self, text: str, where: str):
        out, i = [], 0
        while i < len(text):
            if text[i].isspace():
                i += 1
                continue
            for j in self.by_length:
                name = self.names[j]
                end = i + len(name)
                if text.startswith(name, i) and not (
                    end < len(text) and _NAME_CHARS.match(text[end]) and not name.endswith("]")
                ):
                    out.append(("name", j))
                    i = end
                    break
            else:
                if m := _NUMBER.match(text, i):
                    out.append(("num", float(m.group())))
                    i = m.end()
                elif text[i] in "+-*/()":
                    out.append(("op", text[i]))
                    i += 1
                elif m := _IDENT.match(text, i):
                    close = difflib.get_close_matches(m.group(), self.names, n=3)
                    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
                    raise KeyError(
                        f"unknown parameter {m.group()!r} in restriction {where!r}{hint}; "
                        f"the parameters are: {', '.join(self.names)}"
                    )
                else:
                    raise ValueError(f"cannot read {text[i:]!r} in restriction {where!r}")
        return out

    def parse(self, text: str, where: str) -> _Linear:
        self.toks, self.pos, self.where, self.depth = self.tokens(text, where), 0, where, 0
        if not self.toks:
            raise ValueError(f"empty side in restriction {where!r}")
        out = self._expr()
        if self.pos != len(self.toks):
            raise ValueError(f"unexpected {self._show(self.toks[self.pos])} in {where!r}")
        return out

    def _show(self, tok):
        kind, v = tok
        return repr(self.names[v] if kind == "name" else v)

    def _peek(self):
        return self.toks[self.pos] if self.pos < len(self.toks) else (None, None)

    def _expr(self):
        out = self._term()
        while self._peek() in (("op", "+"), ("op", "-")):
            sign = 1.0 if self.toks[self.pos][1] == "+" else -1.0
            self.pos += 1
            t = self._term()
            out = _Linear(out.coef + sign * t.coef, out.const + sign * t.const)
        return out

    def _term(self):
        out = self._unary()
        while self._peek() in (("op", "*"), ("op", "/")):
            op = self.toks[self.pos][1]
            self.pos += 1
            t = self._unary()
            if op == "/":
                if t.coef.any():
                    raise ValueError(
                        f"{self.where!r} divides by a parameter: restrictions given as text must "
                        "be linear; pass a function g(params) for a nonlinear Wald test"
                    )
                if t.const == 0.0:
                    raise ValueError(f"division by zero in {self.where!r}")
                out = _Linear(out.coef / t.const, out.const / t.const)
            elif out.coef.any() and t.coef.any():
                raise ValueError(
                    f"{self.where!r} multiplies parameters: restrictions given as text must be "
                    "linear; pass a function g(params) for a nonlinear Wald test"
                )
            else:
                c, lin = (out.const, t) if not out.coef.any() else (t.const, out)
                out = _Linear(c * lin.coef, c * lin.const)
        return out

    def _unary(self):
        sign = 1.0
        while self._peek() in (("op", "+"), ("op", "-")):  # a loop: "- - - x" needs no recursion
            sign *= -1.0 if self.toks[self.pos][1] == "-" else 1.0
            self.pos += 1
        t = self._primary()
        return t if sign > 0 else _Linear(-t.coef, -t.const)

    def _primary(self):
        kind, v = self._peek()
        self.pos += 1
        zero = np.zeros(len(self.names))
        if kind == "num":
            return _Linear(zero, v)
        if kind == "name":
            zero[v] = 1.0
            return _Linear(zero, 0.0)
        if (kind, v) == ("op", "("):
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise ValueError(
                    f"restriction {self.where[:40]!r}... nests parentheses more than {MAX_NESTING} "
                    "deep; write it out flat"
                )
            out = self._expr()
            self.depth -= 1
            if self._peek() != ("op", ")"):
                raise ValueError(f"missing ')' in {self.where!r}")
            self.pos += 1
            return out
        raise ValueError(
            f"expected a number or a parameter name in {self.where!r}, got "
            + ("the end" if kind is None else self._show((kind, v)))
        )


def parse_restrictions(text: str | Sequence[str], names: tuple[str, ...]):
    """'b[1] = b[2], b[3] = 0' -> (R (q, k), r (q,)); a side without '=' is '= 0'."""
    pieces = [text] if isinstance(text, str) else list(text)
    rows = [p for piece in pieces for p in _split_restrictions(piece)]
    if not rows:
        raise ValueError("no restrictions given")
    parser = _Parser(names)
    R, r = [], []
    for row in rows:
        sides = row.replace("==", "=").split("=")
        if len(sides) > 2:
            raise ValueError(f"restriction {row!r} has more than one '='")
        lhs = parser.parse(sides[0], row)
        rhs = parser.parse(sides[1], row) if len(sides) == 2 else _Linear(lhs.coef * 0, 0.0)
        R.append(lhs.coef - rhs.coef)
        r.append(rhs.const - lhs.const)
        if not R[-1].any():
            raise ValueError(f"restriction {row!r} involves no parameter (after cancelling)")
    labels = [" ".join(row.split()) + ("" if "=" in row else " = 0") for row in rows]
    return np.array(R), np.array(r), labels


def _format_row(coef, const, names) -> str:
    terms = []
    for c, name in zip(coef, names, strict=True):
        if c == 0:
            continue
        sign = "-" if c < 0 else "+"
        mag = "" if abs(c) == 1 else f"{abs(c):g}*"
        terms.append((sign, f"{mag}{name}"))
    text = " ".join(f"{s} {t}" for s, t in terms)
    text = text[2:] if text.startswith("+ ") else "-" + text[2:]
    return f"{text} = {const:g}"


def _check_linear(R, r, res: FitResult, labels=None):
    """Host checks of a concrete R: shape, finiteness, fixed parameters, rank, consistency."""
    k, names = len(res.names), res.names
    if R.ndim != 2 or R.shape[1] != k:
        raise ValueError(
            f"R must be (q, {k}) over the flattened parameters ({', '.join(names)}), got shape "
            f"{R.shape}"
        )
    if r.shape != (R.shape[0],):
        raise ValueError(f"r must have shape ({R.shape[0]},) to match R, got {r.shape}")
    if not (np.isfinite(R).all() and np.isfinite(r).all()):
        raise ValueError("R and r must be finite")
    if labels is None:
        labels = [_format_row(R[i], r[i], names) for i in range(R.shape[0])]
    for i, row in enumerate(R):
        if not row.any():
            raise ValueError(f"row {i} of R is zero: it restricts nothing")
        held = [names[j] for j in np.flatnonzero(row) if not res.free[j]]
        if held:
            raise ValueError(
                f"restriction {labels[i]!r} involves {held}, held fixed in this fit (no variance): "
                "test free parameters only"
            )
    _check_rank(R, r, labels)
    return labels


def _check_rank(R, r, labels):
    scale = np.abs(R).max()
    for i in range(1, R.shape[0]):
        prev = R[:i]
        c, *_ = np.linalg.lstsq(prev.T, R[i], rcond=None)
        if np.abs(prev.T @ c - R[i]).max() <= 1e-10 * scale:
            implied = float(c @ r[:i])
            if abs(implied - r[i]) <= 1e-10 * max(1.0, abs(r[i]), np.abs(r[:i]).max()):
                raise ValueError(
                    f"R is rank-deficient: restriction {labels[i]!r} is implied by the ones before "
                    "it; drop it (the test has one restriction fewer)"
                )
            raise ValueError(
                f"the restrictions are inconsistent: {labels[i]!r} contradicts the ones before it "
                f"(they imply its left side is {implied:g}, not {r[i]:g}); no parameter value "
                "satisfies them all"
            )
