"""The last guard on what the OCPP wire log writes: a line that may carry a secret
configuration value is masked, or withheld whole when it cannot be masked for sure.

``handler.logged_frame`` masks the frames we log ourselves in their usual shapes. What
it cannot see: the ``ocpp`` package logs a charger's CALLERROR at WARNING (on by default)
with its ``errorDetails``, where chargers often echo the refused request, a secret's new
value in it; and answers in unusual shapes (a key name written with a ``\\u`` escape, a
list of pairs) passed the text check (review s18). This filter sits on the wire logger and
sees every line it writes, whoever logs it, already formatted.

URLs: every URL in a line (a JSON string's from its ``scheme://`` to its closing quote,
never read as free text; elsewhere ``url_spans``, a linear scan: ``scheme://`` up to a
space or a quote, slashes JSON-escaped or not, on to the end of the token when its rest
holds an ``@``, or to the next ``@`` of its line when a ``:`` follows its ``//``:
``_FreeUrls``) is written as the audit keeps an upload or download location
(``command_rules.without_credentials``: user information, query values and fragment
hidden, or all after the scheme), whatever frame or message holds it. A charger's CALLERROR
repeating a presigned URL (in its description, or its details echoing the request)
holds no action name, so ``handler.logged_frame`` never read it again, and the
package's WARNING line of it was not read for URLs at all (review s25: an Azure ``sig``
was logged whole). A line with no ``:/`` (nearly every frame: MeterValues, Heartbeat)
is not searched. The filter runs only for a line the logger writes (``logging`` checks
the level first); masking is linear in the line, which a charger may make megabytes
long (review s25: a regular expression took seconds on one, holding the event loop).

Configuration values: each ``key``/``value`` pair whose key is a secret's
(``command_rules.is_secret_key``) has its value replaced; if the line still names a
secret more often than it masked one (the value came first, another shape, an escaped
name), the line is withheld, its length kept. Fail closed: a debug line lost costs less
than a password in a log shipped to everyone who reads logs.
"""

from __future__ import annotations

import json
import logging
import re
import string
from collections.abc import Iterator

from domain.command_rules import (
    SECRET_KEY_PARTS,
    is_secret_key,
    key_words,
    without_credentials,
)

HIDDEN = "[hidden]"

#: A name in a line, as written or escaped (``\u004bey``): a secret's when
#: ``is_secret_key`` says so.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")


def _secret_names(text: str) -> int:
    """How many times ``text`` names a secret key: a name of two words or more
    (``MqttPwd``, ``api_token``), or one holding a part that names a secret anywhere
    (``password``). Not a lone word of free text ("pin voltage out of range", "token"):
    a status's ``info`` saying so was withheld whole (review s23). A key named by one
    such word alone is still masked where it is a key (``_PAIR``)."""
    return sum(1 for name in _NAME.findall(_unescaped(text))
               if is_secret_key(name) and (len(key_words(name)) > 1 or any(
                   part in name.lower() for part in SECRET_KEY_PARTS)))

#: ``"key": "<name>", "value": "<value>"`` as JSON writes it, or as a Python dict's repr
#: (``'key': '<name>', 'value': '<value>'``).
_PAIR = re.compile(
    r"""(?P<head>(?P<q>["'])key(?P=q)\s*:\s*(?P<nq>["'])(?P<name>[^"'\\]*)(?P=nq)"""
    r"""(?:\s*,\s*(?P<rq>["'])readonly(?P=rq)\s*:\s*(?:true|false|True|False))?"""
    r"""\s*,\s*(?P<vq>["'])value(?P=vq)\s*:\s*)(?P<sq>["'])(?P<value>(?:\\.|[^"'\\])*)(?P=sq)""")


#: A URL's scheme (RFC 3986, 3.1): a letter, then letters, digits, ``+``, ``-`` and ``.``.
_LETTERS = frozenset(string.ascii_letters)
_SCHEME = frozenset(string.ascii_letters + string.digits + "+-.")
#: What ends a URL in a log line: a space, a quote or an angle bracket (a Python repr's
#: end). One character: a search for it reads up to the first, no further.
_URL_END = re.compile(r"""[\s"'<>]""")


def url_spans(text: str) -> Iterator[tuple[int, int, int]]:
    """Each URL in a log line: a scheme, ``:`` and two slashes (JSON may escape them:
    ``:\\/\\/``), up to ``_URL_END`` or the line's end; as ``(start, after, end)``,
    ``after`` where what follows the slashes begins.

    A scan reading each character a bounded number of times, not a regular expression:
    ``[A-Za-z][A-Za-z0-9+.-]*:`` was tried from every letter of a run and read the rest
    of the run each time, quadratic in a long word before a ``:/`` (review s25: a 64 KiB
    bad frame held the event loop, every charger and request, for seconds). Here each
    ``:`` followed by the slashes reads back over the scheme's characters, never past
    where the previous URL (or ``:``) ended."""
    pos = 0
    while (colon := text.find(":", pos)) >= 0:
        after = _past_slashes(text, colon + 1)
        if after < 0:
            pos = colon + 1
            continue
        start = colon
        while start > pos and text[start - 1] in _SCHEME:
            start -= 1
        while start < colon and text[start] not in _LETTERS:
            start += 1
        if start == colon:  # no letter: no scheme (``1://``)
            pos = colon + 1
            continue
        found = _URL_END.search(text, after)
        end = found.start() if found else len(text)
        yield start, after, end
        pos = end


def _past_slashes(text: str, at: int) -> int:
    """Where two slashes from ``at`` end (each may be JSON-escaped, ``\\/``); -1 when
    there are not two."""
    for _ in range(2):
        if at < len(text) and text[at] == "\\":
            at += 1
        if at >= len(text) or text[at] != "/":
            return -1
        at += 1
    return at


def without_url_credentials(text: str, cut: bool = False) -> str:
    """``text`` with each URL in it shown as ``without_credentials`` shows it; ``text``
    itself when none changed (or there is none: the cheap test first).

    A JSON string literal holding ``://`` (as written or ``:\\/\\/``) is read as JSON
    reads it (``\\"``, ``\\/``, ``\\u0040`` decoded), and from its URL's scheme to its
    closing quote is one URL: a password holding a space, a quote or ``<`` ended the
    scan there, and the rest of it was written (review s26). Such a literal is never
    read as free text. Outside such literals (free text, a Python repr's quotes), a URL
    ends at ``_URL_END`` (``url_spans``), or runs on past it (``_FreeUrls``); a quote
    inside such a URL opens no JSON string. ``cut``:
    ``text`` is the start of a longer line, so a URL running to its end may be missing
    the rest of its user information: hidden whole after its scheme."""
    if ":/" not in text and ":\\/" not in text:
        return text
    pieces: list[str] = []
    done = pos = 0
    spans = _FreeUrls(text)
    while (quote := text.find('"', pos)) >= 0:
        inside = spans.around(pos, quote)
        if inside is not None:  # the quote is a free-text URL's, not a JSON string's
            pos = inside
            continue
        literal = _JSON_STRING.match(text, quote)
        assert literal is not None  # it matches at any '"'
        pos = literal.end()
        content = literal["content"]
        if ":/" not in content and ":\\/" not in content:
            continue
        # Its URL ends at its closing quote: shown or not, the literal is no free text
        # (review r26-robust3: read on as free text, a URL ending there, its host:port
        # whole, ran on to the next '@' of the line and hid a configuration's keys).
        shown = _string_shown(content, cut and not literal["close"] and pos == len(text))
        pieces += (_free_text_shown(text[done:quote], False), '"',
                   content if shown is None else shown, literal["close"])
        done = pos
    if not pieces:
        return _free_text_shown(text, cut)
    pieces.append(_free_text_shown(text[done:], cut))
    shown = "".join(pieces)
    return text if shown == text else shown


#: A JSON string literal from its opening quote: up to its closing unescaped quote, or to
#: the end of the text (a cut line, a malformed frame). Linear: no backtracking.
_JSON_STRING = re.compile(r'"(?P<content>(?:[^"\\]+|\\.)*)(?P<close>"?)', re.DOTALL)


def _string_shown(content: str, cut: bool) -> str | None:
    """A JSON string's ``content`` (its text between the quotes) holding a URL, with
    what follows its first URL's scheme shown as ``without_credentials`` shows it, as
    JSON text; ``None`` when unchanged."""
    try:
        decoded = json.loads(f'"{content}"')
    except ValueError:  # an escape JSON has not (a Python repr's), a cut one
        decoded = None
    if isinstance(decoded, str) and not cut:
        start = next((s for s, _, _ in url_spans(decoded)), None)
        if start is None:
            return None
        shown = without_credentials(decoded[start:])
        if shown == decoded[start:]:
            return None
        return json.dumps(decoded[:start] + shown, ensure_ascii=False)[1:-1]
    first = next(url_spans(content), None)  # undecodable or cut: nothing after the scheme
    return None if first is None else f"{content[:first[1]]}{HIDDEN}"


def _free_text_shown(text: str, cut: bool) -> str:
    """``text`` (no JSON string holding a URL) with each URL in it (``url_spans``) shown
    as ``without_credentials`` shows it."""
    if ":/" not in text and ":\\/" not in text:
        return text
    pieces: list[str] = []
    done = reach = 0
    spans = _FreeUrls(text)
    for start, after, end in url_spans(text):
        if start < reach:  # in the token of the URL before
            continue
        end = reach = spans.extended(start, end)
        url = text[start:end].replace("\\/", "/")
        shown = f"{text[start:after]}{HIDDEN}" if cut and end == len(text) \
            else without_credentials(url)
        if shown != url:
            pieces += (text[done:start], shown)
            done = end
    if not pieces:
        return text
    pieces.append(text[done:])
    return "".join(pieces)


#: Whitespace: what ends a token; and what a token holding user information holds
#: (``_FreeUrls``).
_SPACE = re.compile(r"\s")
_AT = re.compile("@")
_NEWLINE = re.compile("\n")


class _FreeUrls:
    """Where a URL outside a JSON string ends, failing closed (review s25): ``url_spans``
    ends it at a quote or a space, which a password may hold (``_url`` takes
    ``ftp://diag:hunter"22@host/``), and a Python repr (the ``ocpp`` package's CALLERROR
    WARNING line) does not escape; the rest of the password was written. So when a URL
    ends at one of ``_URL_END`` and the rest of that token (up to the next whitespace, or
    the next word when it ended at a space) holds an ``@``, the URL runs on to that
    token's end, and ``without_credentials`` reads it whole (its one rule: user
    information hidden, or all after the scheme when the ``@`` is elsewhere). A URL cut
    inside its authority where no host ends (``ftp://diag:hun`` of ``ftp://diag:hun
    ter two@host/``: a password of more than one space) runs on to the end of the token
    holding the next ``@`` on the line (``_cut_in_authority``): the words between were
    its password's; not one with no ``:`` after its ``//``. One whose host:port looks
    whole (``ftp://diag:2024!``, a password's first word), or holding a ``/``, ``?`` or
    ``#`` (``ftp://diag:Xy/9k``), runs on too: fail closed, the words of a sentence up
    to an e-mail address hidden rather than a password's written.

    Linear in the text: the next whitespace and the next ``@`` are each searched for
    from past the last one found, the queries moving forward only."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._spans = url_spans(text)
        self._span: tuple[int, int, int] | None = None
        # The next found, from where the last search began.
        self._space = self._at = self._newline = -1

    def _next(self, pattern: re.Pattern[str], at: int, found: int) -> int:
        if at <= found:
            return found  # no other between ``at`` and it: still the next
        match = pattern.search(self.text, at)
        return match.start() if match else len(self.text)

    def extended(self, start: int, end: int) -> int:
        """Where a URL ``url_spans`` found at ``start:end`` ends, failing closed."""
        if end >= len(self.text):
            return end
        self._space = self._next(_SPACE, end + 1, self._space)
        self._at = self._next(_AT, end + 1, self._at)
        if self._at < self._space:
            return self._space
        self._newline = self._next(_NEWLINE, end + 1, self._newline)
        if self._at < self._newline and _cut_in_authority(self.text[start:end]):
            # Its user information goes on past more than one space or quote (``ftp://
            # diag:hun ter two@host/``): the words between were written (QA s26). Run on
            # to the end of the token holding the next ``@`` on its line.
            self._space = self._next(_SPACE, self._at + 1, self._space)
            return self._space
        return end

    def around(self, pos: int, quote: int) -> int | None:
        """Where the free-text URL holding the quote at ``quote`` ends, ``None`` when no
        URL beginning in ``pos:quote`` holds it. ``pos`` and ``quote`` only grow."""
        while self._span is None or self._span[0] < pos:
            self._span = next(self._spans, None)
            if self._span is None:
                return None
            if self._span[0] >= pos:
                break
        found = None
        while self._span is not None and self._span[0] < quote:
            end = self.extended(self._span[0], self._span[2])
            if end > quote:
                found = end
            self._span = next(self._spans, None)
            while self._span is not None and self._span[0] < end:
                self._span = next(self._spans, None)
            if found is not None:
                return found
        return None


def _cut_in_authority(url: str) -> bool:
    """Whether ``url``, ended at a space or a quote, may have been cut inside its user
    information: a ``:`` after its ``//``, which may part a user from a password going
    on past the cut. Fail closed: neither what precedes the cut reading as a whole
    host[:port] (review r26-robust2: ``ftp://diag:2024! Go team@host/f`` read as the
    host ``diag``, port ``2024`` and a sentence's ``!``) nor a ``/``, ``?`` or ``#``
    before it (review r26-robust3: ``ftp://diag:Xy/9k two words@host``, a password
    holding base64's ``/``) tells it ended there. The price, chosen: in free text, a URL
    holding a ``:`` (a port, a time in its query) before an unrelated e-mail address on
    the same line (``(http://host:9000) unreachable, notify noc@op.com``) has every word
    up to that address hidden. Never inside a JSON string, which ends its URL."""
    return ":" in url.replace("\\/", "/").partition("://")[2]


def masked_line(text: str, cut: bool = False) -> str:
    """``text`` with credentials in its URLs and every secret key's value hidden, or
    withheld (see the module). ``cut``: ``text`` is the start of a longer one
    (``without_url_credentials``)."""
    text = without_url_credentials(text, cut)
    if "key" not in text and _secret_names(text) == 0:
        return text  # no pair to mask, no secret named
    masked = 0

    def hide(match: re.Match[str]) -> str:
        nonlocal masked
        if not is_secret_key(match["name"]):
            return match[0]
        masked += 1
        quote = match["sq"]
        return f"{match['head']}{quote}{HIDDEN}{quote}"

    result = _PAIR.sub(hide, text)
    if masked == 0 and _secret_names(text) == 0:
        return text
    if _secret_names(result) > masked:
        return f"<{len(text)} characters withheld: they may hold a secret configuration value>"
    return result


def _unescaped(text: str) -> str:
    """``text`` with JSON's ``\\uXXXX`` escapes read: a name written escaped is that name."""
    if "\\u" not in text:
        return text
    return re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), text)


class SecretMasking(logging.Filter):
    """Masks (``masked_line``) each line of the logger it is added to."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        safe = masked_line(text)
        if safe is not text:
            record.msg, record.args = safe, None
        return True

