"""The last guard on what the OCPP wire log writes: a line that may carry a secret
configuration value is masked, or withheld whole when it cannot be masked for sure.

``handler.logged_frame`` masks the frames we log ourselves in their usual shapes. What
it cannot see: the ``ocpp`` package logs a charger's CALLERROR at WARNING (on by default)
with its ``errorDetails``, where chargers often echo the refused request, a secret's new
value in it; and answers in unusual shapes (a key name written with a ``\\u`` escape, a
list of pairs) passed the text check (review s18). This filter sits on the wire logger and
sees every line it writes, whoever logs it, already formatted.

URLs: every URL-looking substring of a line (``_URL``: ``scheme://`` up to a space or a
quote, slashes JSON-escaped or not) is written as the audit keeps an upload or download
location (``command_rules.without_credentials``: user information and query values
hidden), whatever frame or message holds it. A charger's CALLERROR repeating a presigned
URL (in its description, or its details echoing the request) holds no action name, so
``handler.logged_frame`` never read it again, and the package's WARNING line of it was
not read for URLs at all (review s25: an Azure ``sig`` was logged whole). A line with no
``:/`` (nearly every frame: MeterValues, Heartbeat) is not searched.

Configuration values: each ``key``/``value`` pair whose key is a secret's
(``command_rules.is_secret_key``) has its value replaced; if the line still names a
secret more often than it masked one (the value came first, another shape, an escaped
name), the line is withheld, its length kept. Fail closed: a debug line lost costs less
than a password in a log shipped to everyone who reads logs.
"""

from __future__ import annotations

import logging
import re

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


#: A URL in a log line: a scheme, ``://`` (JSON may escape its slashes: ``:\/\/``) and
#: what follows up to a space, a quote or an angle bracket (a Python repr's end).
_URL = re.compile(r"""[A-Za-z][A-Za-z0-9+.\-]*:(?:\\?/){2}[^\s"'<>]*""")


def without_url_credentials(text: str) -> str:
    """``text`` with each URL in it shown as ``without_credentials`` shows it; ``text``
    itself when none changed (or there is none: the cheap test first)."""
    if ":/" not in text and ":\\/" not in text:
        return text

    def hide(match: re.Match[str]) -> str:
        url = match[0]
        shown = without_credentials(url.replace("\\/", "/"))
        return url if shown == url.replace("\\/", "/") else shown

    result = _URL.sub(hide, text)
    return text if result == text else result


def masked_line(text: str) -> str:
    """``text`` with credentials in its URLs and every secret key's value hidden, or
    withheld (see the module)."""
    text = without_url_credentials(text)
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

