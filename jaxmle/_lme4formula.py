"""lme4's model formula, split into what formulaic builds and the random-effect terms (host side).

    response ~ fixed terms + (expr | g) + (expr || g) + (1 | a/b) + (1 | a:b) + ...

- `(expr | g)`: random effects for the columns of `expr` (a formulaic right-hand side, with an
  intercept unless `0 +` or `- 1` removes it), correlated within each level of the factor g.
- `(expr || g)`: uncorrelated: lme4's `expandDoubleVerts`, one term per formula term of `expr`,
  `(1 | g) + (0 + x | g) + ...` (a factor's dummies stay one correlated block, as in lme4).
- `(expr | a/b)`: nested: `(expr | b:a) + (expr | a)` (lme4's `expandSlash`, with its names).
- `(expr | a:b)`: one factor whose levels are the observed combinations of a and b.
- `cbind(successes, failures) ~ ...`: a binomial response given as two counts.

The fixed part (everything outside the bars; `y ~ (1 | g)` has an intercept, as in R) goes to
formulaic unchanged, so `C(f)`, `x * z`, `np.log(x)` and `I(x**2)` work as in `jm.glm`. Formulas are
Python code: never build one from untrusted input.

Refused, as lme4 refuses them: no `~`, no random-effect term, a grouping spec other than names
joined by `/` and `:`, a term with no random effects (`(0 | g)`), an empty side of a bar, and a bar
term outside parentheses (lme4 would read `y ~ x + 1 | g` as one term `(x + 1 | g)`; we ask for the
parentheses rather than guess).
"""

from __future__ import annotations

import dataclasses
import re

_NAME = re.compile(r"^(`[^`]+`|[A-Za-z_.][A-Za-z0-9_.]*)$")


@dataclasses.dataclass(frozen=True)
class BarTerm:
    """One random-effect term after expansion: the columns `expr` random over factor `factor`.

    `factor` is lme4's name of the grouping factor ("Subject", "cask:batch"); `variables` the data
    columns whose combinations define its levels (("cask", "batch")).
    """

    expr: str
    factor: str
    variables: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class MixedFormula:
    """A parsed lme4 formula. `fixed` is a formulaic formula "lhs ~ rhs"; `cbind` the two count
    expressions of a binomial response (else None), `response` its text."""

    formula: str
    response: str
    fixed_rhs: str
    terms: tuple[BarTerm, ...]
    cbind: tuple[str, str] | None

    def fixed(self, response: str | None = None) -> str:
        return f"{response or self.response} ~ {self.fixed_rhs}"


def _scan(text: str):
    """Yield (index, char, depth) over `text`, depth counting (), [] and {} outside quotes."""
    depth, quote = 0, None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
            yield i, ch, depth + 1
            continue
        if ch in "'\"`":
            quote = ch
            yield i, ch, depth + 1
            continue
        if ch in "([{":
            depth += 1
            yield i, ch, depth
            continue
        if ch in ")]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced parentheses in {text!r}")
        yield i, ch, depth
    if depth != 0 or quote:
        raise ValueError(f"unbalanced parentheses or quotes in {text!r}")


def _split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` (one character) where it is not inside brackets or quotes."""
    parts, start = [], 0
    for i, ch, depth in _scan(text):
        if ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _top_bar(text: str) -> tuple[int, int] | None:
    """(position, width) of the first top-level `|` or `||` in `text`, or None."""
    for i, ch, depth in _scan(text):
        if ch == "|" and depth == 0:
            return i, 2 if text[i + 1 : i + 2] == "|" else 1
    return None


def _enclosing(chunk: str) -> str | None:
    """The inside of `chunk` if the whole chunk is one parenthesised group, else None."""
    s = chunk.strip()
    if not (s.startswith("(") and s.endswith(")")):
        return None
    for i, _, depth in _scan(s):
        if depth == 0 and i < len(s) - 1:
            return None  # "(a) + (b)": the first group closes early
    return s[1:-1]


def parse(formula: str) -> MixedFormula:
    """Split an lme4 formula into its response, fixed part and expanded random-effect terms."""
    if not isinstance(formula, str) or _split_top(formula, "~")[0] == formula:
        raise ValueError(f"formula must be a string 'y ~ x + (1 | g)', got {formula!r}")
    sides = _split_top(formula, "~")
    if len(sides) != 2 or not sides[0].strip():
        raise ValueError(f"the formula {formula!r} needs one response and one '~'")
    response, rhs = sides[0].strip(), sides[1]
    fixed, terms = [], []
    for sign, chunk in _signed_terms(rhs, formula):
        inner = _enclosing(chunk)
        if inner is not None and _top_bar(inner) is not None:
            if sign != "+":
                raise ValueError(
                    f"in {formula!r}, the random-effect term {chunk!r} can only be added with '+'"
                )
            terms += _bar_terms(inner, formula)
        elif _top_bar(chunk) is not None:
            raise ValueError(
                f"in {formula!r}, the random-effect term {chunk!r} must stand in parentheses, "
                "as '(x | g)'"
            )
        else:
            fixed.append(chunk if sign == "+" else f"- {chunk}")
    if not terms:
        raise ValueError(
            f"no random-effect terms in {formula!r}: add one such as '(1 | g)', or fit the model "
            "with jm.glm"
        )
    return MixedFormula(
        formula=formula,
        response=response,
        fixed_rhs=" + ".join(fixed).replace("+ -", "-") if fixed else "1",
        terms=tuple(terms),
        cbind=_cbind(response),
    )


def _signed_terms(rhs: str, formula: str) -> list[tuple[str, str]]:
    """[(sign, term)] at the top-level '+' and '-' of a right-hand side ('- 1' stays a term)."""
    out, start, sign = [], 0, "+"
    for i, ch, depth in _scan(rhs + "+"):
        if ch in "+-" and depth == 0:
            chunk = rhs[start:i].strip()
            if chunk:
                out.append((sign, chunk))
            elif start != 0 or ch != "-":
                raise ValueError(f"the formula {formula!r} has an empty term beside a '{ch}'")
            sign, start = ch, i + 1
    return out


def _cbind(response: str) -> tuple[str, str] | None:
    m = re.fullmatch(r"\s*cbind\s*\((.*)\)\s*", response, flags=re.S)
    if not m:
        return None
    args = [a.strip() for a in _split_top(m.group(1), ",")]
    if len(args) != 2 or not all(args):
        raise ValueError(
            f"cbind() in the response takes two count expressions, cbind(successes, failures); "
            f"got {response!r}"
        )
    return args[0], args[1]


def _bar_terms(inner: str, formula: str) -> list[BarTerm]:
    at, width = _top_bar(inner)
    lhs, grp = inner[:at].strip(), inner[at + width :].strip()
    shown = f"({inner.strip()})"
    if not lhs or not grp:
        raise ValueError(f"the random-effect term {shown} in {formula!r} has an empty side")
    if _top_bar(grp) is not None:
        raise ValueError(f"the random-effect term {shown} has more than one bar")
    factors = _grouping(grp, shown)
    exprs = _split_double(lhs, shown) if width == 2 else [lhs]
    _check_has_effects(exprs, shown)
    return [BarTerm(e, name, vars_) for name, vars_ in factors for e in exprs]


def _grouping(grp: str, shown: str) -> list[tuple[str, tuple[str, ...]]]:
    """[(lme4 factor name, variables)]: `a/b/c` -> c:b:a, b:a, a (lme4's expandSlash order)."""
    levels = []
    for piece in _split_top(grp, "/"):
        names = [v.strip() for v in _split_top(piece.strip(), ":")]
        if not all(_NAME.match(v) for v in names):
            raise ValueError(
                f"invalid grouping factor specification {grp!r} in {shown}: use column names "
                "joined by ':' (interaction) or '/' (nesting), e.g. (1 | a/b)"
            )
        levels.append([v.strip("`") for v in names])
    out = []
    for depth in range(len(levels), 0, -1):
        parts = levels[:depth]
        name = ":".join(":".join(p) for p in reversed(parts))
        out.append((name, tuple(v for p in reversed(parts) for v in p)))
    return out


def _split_double(lhs: str, shown: str) -> list[str]:
    """`(x + z || g)` -> ["1", "0 + x", "0 + z"] (lme4's expandDoubleVerts, by formula term)."""
    import formulaic

    try:
        terms = [str(t) for t in formulaic.Formula(lhs)]
    except Exception as e:  # formulaic raises several kinds for a bad expression
        raise ValueError(f"cannot parse {lhs!r} in {shown}: {e}") from e
    return ["1" if t == "1" else f"0 + {t}" for t in terms]


def _check_has_effects(exprs: list[str], shown: str) -> None:
    import formulaic

    for e in exprs:
        try:
            n = len(list(formulaic.Formula(e)))
        except Exception as err:
            raise ValueError(f"cannot parse {e!r} in {shown}: {err}") from err
        if n == 0:
            raise ValueError(f"the random-effect term {shown} has no random effects ({e!r})")
