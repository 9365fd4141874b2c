"""How search reads text, shared by the server and the client SDK: words, query terms,
snippets, relevance and trigram similarity. Pure functions, no I/O.

A query is never handed to a database as syntax. It is cut into words here (letters and
digits of any script; everything else, FTS operators and quotes included, is a separator),
and each word becomes a quoted term of the database's own query language, all of them
required. The index folds case and diacritics (SQLite's unicode61 tokenizer with
remove_diacritics, Postgres's unaccent); `fold` does much the same here, so that the snippet
highlights what the index matched.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property

WORD = re.compile(r"[^\W_]+")  # a run of letters and digits, in any script (underscore separates)
MAX_TERMS = 16
PREFIX_MIN = 3  # a last word this long, not followed by a space, also matches longer words (typing)
SNIPPET_CHARS = 160
NAME_SIMILARITY = 0.3  # pg_trgm's default similarity threshold


def fold(text: str) -> str:
    """Lower case without diacritics: "Café" -> "cafe"."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@dataclass(frozen=True)
class Terms:
    """The words of a query, in lower case; the last one matches as a prefix when `prefix` is set.

    The words go to the database as typed (but for case): its tokenizer folds them exactly as it
    folded the text it indexed. `folded` is for matching here (snippets, relevance).
    """

    words: tuple[str, ...]
    prefix: bool

    @cached_property
    def folded(self) -> tuple[str, ...]:
        return tuple(fold(word) for word in self.words)

    def fts5(self) -> str:
        """SQLite FTS5 MATCH syntax: each word quoted (so never an operator), all required."""
        quoted = [f'"{word}"' for word in self.words]
        if self.prefix:
            quoted[-1] += " *"
        return " ".join(quoted)

    def tsquery(self) -> str:
        """Postgres to_tsquery syntax: each word quoted, joined by &."""
        quoted = [f"'{word}'" for word in self.words]
        if self.prefix:
            quoted[-1] += ":*"
        return " & ".join(quoted)

    def found_in(self, words: set[str]) -> bool:
        """Whether a text with these folded words has every term (what an index would answer)."""
        *whole, last = self.folded
        if any(term not in words for term in whole):
            return False
        return last in words or (self.prefix and any(word.startswith(last) for word in words))

    def matches(self, word: str) -> bool:
        """Whether a folded word of a text is one of the terms (the last one as a prefix, if so)."""
        folded = self.folded
        if word in folded:
            return True
        return self.prefix and word.startswith(folded[-1])


class TooManyTerms(ValueError):
    pass


def query_terms(query: str) -> Terms | None:
    """The terms of a query; None when it has no word at all (nothing to search for).

    TooManyTerms past MAX_TERMS words: every one is required, and a long list finds nothing.
    """
    words = WORD.findall(query.lower())
    if not words:
        return None
    if len(words) > MAX_TERMS:
        raise TooManyTerms(f"A search takes at most {MAX_TERMS} words.")
    unique = tuple(dict.fromkeys(words))
    typing = not query[-1:].isspace() and len(words[-1]) >= PREFIX_MIN and unique[-1] == words[-1]
    return Terms(unique, typing)


def text_words(text: str) -> list[str]:
    """The folded words of a text, as the index sees them."""
    return WORD.findall(fold(text))


def _matches(text: str, terms: Terms) -> list[tuple[int, int]]:
    """Where the terms stand in `text` (offsets into it, not into its folded form)."""
    return [
        (m.start(), m.end())
        for m in WORD.finditer(text)
        if any(terms.matches(w) for w in WORD.findall(fold(m.group())))
    ]


def snippet(text: str, terms: Terms, width: int = SNIPPET_CHARS) -> list[tuple[str, bool]]:
    """A short piece of `text` around its first match, as (text, is a match) segments in order.

    Segments, not markup: a client shows them as text and marks the matches however it likes,
    and nothing in a message can pass for a marker. "…" stands for what was cut off.
    """
    spans = _matches(text, terms)
    first = spans[0][0] if spans else 0
    start = 0
    if len(text) > width and first > width // 3:
        start = first - width // 3
        space = text.find(" ", start, first)
        start = space + 1 if space != -1 else start
    end = min(len(text), start + width)
    if end < len(text):
        space = text.rfind(" ", max(start, first + 1), end)
        end = space if space > start else end
    segments: list[tuple[str, bool]] = []
    at = start
    for span_start, span_end in spans:
        if span_start < start or span_end > end:
            continue
        if span_start > at:
            segments.append((text[at:span_start], False))
        segments.append((text[span_start:span_end], True))
        at = span_end
    if at < end:
        segments.append((text[at:end], False))
    segments = [(" ".join(piece.split("\n")), matched) for piece, matched in segments]
    if start > 0:
        segments.insert(0, ("…", False))
    if end < len(text):
        segments.append(("…", False))
    return _merged(segments)


def _merged(segments: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    out: list[tuple[str, bool]] = []
    for piece, matched in segments:
        if out and out[-1][1] == matched:
            out[-1] = (out[-1][0] + piece, matched)
        elif piece:
            out.append((piece, matched))
    return out


def relevance(text: str, terms: Terms) -> float:
    """How well a text matches (higher is better), the same on every backend: each term counts
    more the more often it is there and more as a whole word than as a prefix; the words of the
    query side by side, in order, count extra; a long text counts less."""
    words = text_words(text)
    last = len(terms.words) - 1
    score = 0.0
    for i, term in enumerate(terms.folded):
        whole = words.count(term)
        prefixed = sum(1 for w in words if w.startswith(term)) - whole if terms.prefix and i == last else 0
        if whole:
            score += 1 + math.log(whole)
        elif prefixed:
            score += 0.6 * (1 + math.log(prefixed))
    if last > 0 and _side_by_side(words, terms):
        score += 1.5
    return round(score / (1 + math.log(1 + len(words) / 12)), 6)


def _side_by_side(words: list[str], terms: Terms) -> bool:
    """Whether the query's words stand in the text one after the other, in the query's order."""
    size = len(terms.words)
    for i in range(len(words) - size + 1):
        window = words[i : i + size]
        if window[:-1] == list(terms.folded[:-1]) and terms.matches(window[-1]):
            return True
    return False


# -- names: usernames, display names, chat titles ---------------------------------------------


def trigrams(text: str) -> set[str]:
    """pg_trgm's trigrams: each word in lower case, two spaces before and one after."""
    found: set[str] = set()
    for word in WORD.findall(text.lower()):
        padded = f"  {word} "
        found.update(padded[i : i + 3] for i in range(len(padded) - 2))
    return found


def similarity(a: str, b: str) -> float:
    """pg_trgm's similarity(): shared trigrams over all trigrams of both."""
    x, y = trigrams(a), trigrams(b)
    if not x or not y:
        return 0.0
    shared = len(x & y)
    return shared / (len(x) + len(y) - shared)


def name_rank(query: str, *names: str) -> tuple[int, float] | None:
    """Where a name stands for a query (lower sorts first), None when it does not match.

    0 an exact name, 1 the first name (a username) starts with it, 2 a word of another name
    starts with it, 3 any name contains it, 4 a name spelled similarly (trigram similarity,
    higher first).
    """
    q = query.strip().lower()
    lowered = [name.lower() for name in names]
    if not q:
        return None
    if q in lowered:
        return (0, 0.0)
    if lowered[0].startswith(q):
        return (1, 0.0)
    if any(name.startswith(q) or f" {q}" in name for name in lowered[1:]):
        return (2, 0.0)
    if any(q in name for name in lowered):
        return (3, 0.0)
    best = max(similarity(q, name) for name in lowered)
    return (4, -round(best, 6)) if best >= NAME_SIMILARITY else None


def like_pattern(text: str) -> str:
    """`text` for a LIKE pattern, its wildcards escaped (with ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
