"""Input rules shared by every door into the domain (GraphQL mutations, OCPP, the CLI)."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import ParamSpec, TypeVar, cast

from domain.common_passwords import COMMON_PASSWORDS
from domain.currencies import MINOR_DIGITS
from domain.errors import ValidationError, ValidationErrors
from domain.ocpp16 import Measurand, Phase

# Deliberately simple: one @, a dot in the domain, no spaces. Deliverability is the mail
# system's job; this catches typos and garbage.
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_EMAIL = 254
#: The top-level domain no mailbox is ever in (RFC 6761): an erasure's own, for the
#: emails it gives erased accounts (``erasure.erased_email``), so none is ever given.
RESERVED_EMAIL_TLD = ".invalid"
MAX_NAME = 200
MAX_CP_ID = 48
MAX_ID_TAG = 20
MIN_PASSWORD = 8
MAX_PASSWORD = 256
#: Letters and digits a plate may have (its ``plate_key``), as before plates kept their
#: spaces and dashes; ``MAX_PLATE_SHOWN`` bounds the form as entered, separators included.
MAX_PLATE = 16
MAX_PLATE_SHOWN = 24
#: Instants a record may carry. The Unix epoch is a charger whose clock was never set (its
#: reports are real and kept); anything outside is a corrupt clock or a typo, and dates
#: near years 1 and 9999 overflow as soon as a time zone is applied.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
#: The largest meter reading (Wh, W, A, V, ... as the charger sent it) we keep: a terawatt
#: hour register is far beyond any real meter, and sums of such values stay exact in
#: floating point. Meter registers of long-lived DC chargers do exceed 32 bits of Wh.
MAX_READING = 10**12


P = ParamSpec("P")
T = TypeVar("T")


class Checks:
    """Runs the format and range checks of one input's fields and reports every failure
    at once (``done``): a form with three bad fields is told all three, not one per
    submission. Only checks that need no store are run through it; a use case calls
    ``done`` before it reads anything, so the store never sees input known to be bad,
    and checks that need the store (NOT_FOUND, DUPLICATE, FORBIDDEN) stop at the first
    as before."""

    def __init__(self) -> None:
        self.errors: list[ValidationError] = []

    def __call__(self, check: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``check(*args, **kwargs)``'s value, or, when it fails, its error kept and
        ``None`` in its place: nothing reads that value, since ``done`` raises before
        the use case goes on (a check that needs it asks ``failed`` first)."""
        try:
            return check(*args, **kwargs)
        except ValidationError as exc:
            self.errors.extend(exc.errors if isinstance(exc, ValidationErrors) else (exc,))
            return cast(T, None)

    def failed(self, *fields: str) -> bool:
        """Whether a check of one of ``fields`` (or of a field nested in one:
        ``location`` covers ``location.lat``) failed: a check across fields runs only
        on values that passed their own."""
        return any(error.field is not None and (error.field == field or
                                                error.field.startswith(f"{field}."))
                   for error in self.errors for field in fields)

    def done(self) -> None:
        """Raises what failed: the one error as it was, several as ``ValidationErrors``
        in the order they were checked."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ValidationErrors(self.errors)


def present(value: T | None, field: str, message: str = "must not be null") -> T:
    """A field that may be left out of an update but not cleared: an explicit null is
    refused (REQUIRED)."""
    if value is None:
        raise ValidationError(message, field=field, code="REQUIRED")
    return value


def _given(value: str | None, field: str) -> str:
    """A required text: an explicit null (``updateUser(input: {name: null})``) is refused
    like an empty one, not failed on."""
    if value is None:
        raise ValidationError("must not be null", field=field, code="REQUIRED")
    return value


def filled(value: str | None, field: str) -> str:
    """A required text, given and not empty: null or "" is REQUIRED, whatever else the
    field's own check would say of it (QA s32: an empty email read as INVALID, an
    empty password as TOO_SHORT, or at sign-in as a wrong one)."""
    text = _given(value, field)
    if not text:
        raise ValidationError("must not be empty", field=field, code="REQUIRED")
    return text


def email(value: str | None, field: str = "email") -> str:
    """Trimmed, case-folded and normalized for compatibility (NFKC), so uniqueness
    ignores case, how an accented letter was typed ("rené" and "rene" + combining acute)
    and width ("ｍia" is "mia"); the domain without the trailing dot of a fully
    qualified name ("x.dev." is "x.dev"). A quoted local part is refused: ``"mia"@x`` is
    the mailbox ``mia@x``, and each of these opened an account beside the real one
    that read as it to operators (QA s16). An address in the reserved ``.invalid``
    domain is refused: it reaches nobody, and erasures give accounts such emails
    (QA s25: one taken first, by a sign-up or an email change, made that account's
    erasure fail for good)."""
    cleaned = name_identity(filled(_given(value, field).strip(), field))
    local, at, domain = cleaned.rpartition("@")
    cleaned = f"{local}{at}{domain.rstrip('.')}"
    if len(cleaned) > MAX_EMAIL or not _EMAIL_RE.match(cleaned) \
            or not cleaned.isprintable() or '"' in local:
        raise ValidationError("not a valid email address", field=field)
    if cleaned.endswith(RESERVED_EMAIL_TLD):
        raise ValidationError("not a valid email address: the .invalid domain reaches "
                              "nobody", field=field)
    return cleaned


def legacy_email(value: str | None) -> str | None:
    """The address as ChargeGraph before 0.3 stored it (trimmed, case-folded, NFC), if
    that was valid then: an account made with a trailing dot, a quoted local part or a
    full-width letter still signs in by it (``AccountService.authenticate``)."""
    if not isinstance(value, str):
        return None
    cleaned = unicodedata.normalize("NFC", value.strip().casefold())
    if len(cleaned) > MAX_EMAIL or not _EMAIL_RE.match(cleaned) or not cleaned.isprintable():
        return None
    return cleaned


def name(value: str | None, field: str = "name") -> str:
    """A person's, company's, site's or station's name: trimmed, whitespace runs one
    space, composed (NFC: an "ä" typed as "a" and a combining diaeresis, as macOS input
    and text copied out of PDFs give it, is stored as the one letter; it shows the
    same), without invisible characters where they only make a second name."""
    # Joiners join nothing at a name's ends or beside a space: there they only make a
    # name that reads like another one ("Spree Charging GmbH" and a ZWNJ) a second name.
    text = unicodedata.normalize("NFC", _given(value, field))
    words = (_trimmed(word) for word in text.split())
    cleaned = " ".join(word for word in words if word)
    if not cleaned:
        raise ValidationError("must not be empty", field=field, code="REQUIRED")
    if len(cleaned) > MAX_NAME:
        raise ValidationError(f"at most {MAX_NAME} characters", field=field, code="TOO_LONG")
    _printable(cleaned, field)
    if not cleaned.isascii():
        _placed(cleaned, field)
        if not any(unicodedata.category(c)[0] in "LNPS" for c in cleaned):
            # Only marks (a lone combining accent): a name that shows as nothing.
            raise ValidationError("must show a letter, digit or symbol", field=field,
                                  code="INVALID")
    return cleaned


def _trimmed(word: str) -> str:
    """``word`` without the joiners at its ends that join nothing: all at its start;
    at its end unless after a virama (a Malayalam chillu, a half form: "അവന്\u200d"
    is written so; verify s21)."""
    word = word.lstrip(_JOINERS)
    end = len(word)
    while end and word[end - 1] in _JOINERS:
        end -= 1
    if end < len(word) and end and _virama(word[end - 1]):
        return word[:end + 1]
    return word[:end]


def _placed(text: str, field: str) -> None:
    """The characters that show only beside others, where they change how text shows
    (``_shows``). Elsewhere they show nothing and only make a name that reads like
    another one a second name (review s21: "Spree Charg\u200cing GmbH" beside "Spree
    Charging GmbH")."""
    for i, c in enumerate(text):
        if _modifier(c) and not _shows(text, i):
            raise ValidationError("no invisible characters beside plain letters",
                                  field=field, code="INVALID")


def _shows(text: str, i: int) -> bool:
    """Whether the modifier ``text[i]`` (``_modifier``) changes how its neighbours show,
    by the base it follows (never another modifier, nor a letter of an alphabet that
    has no use for it: a Latin, Greek or Cyrillic "ü" takes no selector, review s21):
    - a joiner between two characters of an emoji sequence or a script that joins
      (Arabic, Indic, Sinhala, ...), or after a virama at a word's end (a chillu);
    - a variation selector after a symbol (emoji presentation, ©️) or a CJK ideograph,
      or in a keycap ("1\ufe0f\u20e3" is 1️⃣); an ideographic one after a CJK
      ideograph (a Japanese name's variant); a Mongolian selector or the vowel
      separator after a Mongolian letter;
    - a tag character inside a flag's tag sequence (🏴, tags, CANCEL TAG)."""
    c = text[i]
    before = text[i - 1] if i else ""
    after = text[i + 1] if i + 1 < len(text) else ""
    if c in _JOINERS and before in _PRESENTATION and i > 1 \
            and unicodedata.category(text[i - 2])[0] == "S":
        before = text[i - 2]  # an emoji in its presentation: 🏳️‍🌈, ❤️‍🔥
    if not before or (_modifier(before) and not _TAGS[0] <= before <= _TAGS[1]):
        return False
    code = ord(c)
    if c in _JOINERS:
        if _virama(before) and (not after or after.isspace()):
            return True
        return _joinable(before) and bool(after) and _joinable(after)
    if _TAGS[0] <= c <= _TAGS[1]:
        return _in_tag_sequence(text, i)
    if 0xE0100 <= code <= 0xE01EF:
        return _cjk(before)
    if 0x180B <= code <= 0x180F:
        return _block(before) == "MONGOLIAN"
    # U+FE00..U+FE0F: presentation (FE0E, FE0F) of an emoji or a keycap; the others
    # standardized variants of CJK ideographs and math symbols.
    if before.isascii():
        return c in _PRESENTATION and before in _KEYCAP_BASES and after == _KEYCAP
    if _cjk(before):
        return c not in _PRESENTATION
    return not _alphabetic(before)


def _joinable(c: str) -> bool:
    """A character a joiner may stand beside: not ASCII, not a modifier, not a letter of
    the Latin, Greek or Cyrillic alphabets (no joiner changes them)."""
    return not c.isascii() and not _modifier(c) and not _alphabetic(c)


def _alphabetic(c: str) -> bool:
    """A letter of the Latin, Greek or Cyrillic alphabets, full-width forms included:
    no joiner or selector changes them (review s21: "Mü\ufe0fller", "Ｍ\u200dＵ")."""
    words = unicodedata.name(c, "").split(" ", 2)[:2]
    return any(word in _UNJOINED for word in words)


def _in_tag_sequence(text: str, i: int) -> bool:
    """Whether the tag ``text[i]`` belongs to a run of tags right after 🏴 that names a
    subdivision emoji show and ends with CANCEL TAG."""
    start = i
    while start and _TAGS[0] <= text[start - 1] <= _TAGS[1]:
        start -= 1
    end = i
    while end + 1 < len(text) and _TAGS[0] <= text[end + 1] <= _TAGS[1]:
        end += 1
    run = text[start:end + 1]
    return start > 0 and text[start - 1] == _BLACK_FLAG and run[-1] == _TAGS[1] \
        and "".join(chr(ord(t) - 0xE0000) for t in run[:-1]) in _SUBDIVISION_FLAGS


def _block(c: str) -> str:
    """The first word of a character's Unicode name: its script or kind, roughly."""
    return unicodedata.name(c, "").split(" ", 1)[0]


def _cjk(c: str) -> bool:
    return _block(c) == "CJK"


#: Scripts no joiner changes: there one only makes a name that reads like another.
_UNJOINED = frozenset({"LATIN", "GREEK", "CYRILLIC"})
#: The flags of subdivisions emoji show (England, Scotland, Wales): any other tag run
#: shows as the plain black flag, another name that reads like one.
_SUBDIVISION_FLAGS = frozenset({"gbeng", "gbsct", "gbwls"})


def _modifier(c: str) -> bool:
    """A character that shows nothing by itself, only by changing its neighbours:
    joiners, variation selectors, Mongolian selectors, tag characters."""
    code = ord(c)
    return c in _JOINERS or any(low <= code <= high for low, high in _MODIFIER_RANGES)


def _virama(c: str) -> bool:
    return unicodedata.combining(c) == _VIRAMA_CLASS


#: Zero-width joiner and non-joiner: kept inside words (emoji sequences, Persian and
#: Indic names need them), dropped where they join nothing.
_JOINERS = "\u200c\u200d"
#: Text and emoji presentation selectors (VS15, VS16): "\u2764\ufe0f" is a red heart.
_PRESENTATION = "\ufe0e\ufe0f"
#: The combining enclosing keycap, and the ASCII characters a keycap emoji encloses.
_KEYCAP = "\u20e3"
_KEYCAP_BASES = "0123456789#*"
#: A tag sequence starts with the waving black flag; tags run to CANCEL TAG.
_BLACK_FLAG = "\U0001f3f4"
_TAGS = ("\U000e0020", "\U000e007f")
#: The canonical combining class of viramas (halant): a joiner after one picks a form.
_VIRAMA_CLASS = 9
#: Modifiers by code point, beside the joiners: Mongolian free variation selectors and
#: vowel separator, variation selectors, tag characters, ideographic variation selectors.
_MODIFIER_RANGES = ((0x180B, 0x180F), (0xFE00, 0xFE0F), (0xE0020, 0xE007F),
                    (0xE0100, 0xE01EF))


#: Characters that make text read differently from how it is stored: bidirectional
#: embeddings, overrides and isolates ("Trojan source"), and the invisible ones behind
#: look-alike names (byte order mark, zero-width space, soft hyphen, word joiner,
#: direction marks), and the blanks that are letters or symbols to Unicode (Hangul
#: fillers, the braille blank, the combining grapheme joiner, Khmer's invisible
#: vowels). No name needs them. Modifiers (joiners, variation selectors) are judged by
#: where they stand (``name``).
_INVISIBLE = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
                       "\ufeff\u200b\u00ad\u2060\u061c\u200e\u200f"
                       "\u3164\uffa0\u115f\u1160\u2800\u034f\u17b4\u17b5")
#: Unicode's default-ignorable code points (DerivedCoreProperties.txt) but for the
#: modifiers: shown as nothing by every renderer, so refused too (invisible operators,
#: musical formatting, unassigned tags; review s21).
_IGNORABLE_RANGES = ((0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F),
                     (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
                     (0xE0000, 0xE001F), (0xE0080, 0xE00FF), (0xE01F0, 0xE0FFF))


def _printable(value: str, field: str, allowed: str = "") -> str:
    """No control characters (NUL, escapes, ...: they end strings in C clients, corrupt
    terminals and CSV exports), lone surrogates (no database stores them as UTF-8) or
    invisible ones (``_INVISIBLE``, default-ignorable code points)."""
    if value.isascii() and value.isprintable():
        return value
    if any(c not in allowed and _hidden(c) for c in value):
        raise ValidationError("no control or invisible characters", field=field,
                              code="INVALID")
    return value


def _hidden(c: str) -> bool:
    """A control character, a lone surrogate, one of ``_INVISIBLE``, or another
    default-ignorable code point but for the modifiers (``_modifier``)."""
    if c in _INVISIBLE or unicodedata.category(c) in ("Cc", "Cs"):
        return True
    if _modifier(c):
        return False
    code = ord(c)
    return any(low <= code <= high for low, high in _IGNORABLE_RANGES)


def shown_text(value: str | None) -> str | None:
    """Text a charger reports (status info, vendor, model): kept, but without the
    characters ``_printable`` refuses from people. A charger's report is not refused
    over a stray escape code; it is shown in dashboards and exports, so those go (the
    blanks too: a model of Hangul fillers showed as nothing)."""
    if value is None or (value.isascii() and value.isprintable()):
        return value
    kept = []
    for c in value:
        if c.isspace():
            kept.append(" ")  # a line break in a report reads as a space
        elif not _hidden(c):
            kept.append(c)
    return "".join(kept) or None


def optional_text(value: str | None, field: str, max_len: int = MAX_NAME) -> str | None:
    """Free text such as an address: lines and tabs are fine, other controls are not."""
    if value is None:
        return None
    cleaned = value.strip()
    if len(cleaned) > max_len:
        raise ValidationError(f"at most {max_len} characters", field=field, code="TOO_LONG")
    return _printable(cleaned, field, allowed="\n\t") or None


def password(value: str | None, field: str = "password") -> str:
    """A new password: its length, and not one guessed first (``TOO_WEAK``: blank, one
    character repeated, or among ``COMMON_PASSWORDS``). No rules on what it must
    contain: those make passwords harder to remember, not to guess (NIST SP 800-63B).
    Each rule holds for the text as typed AND for the form it is hashed in
    (``password_form``): a full-width "ｐａｓｓｗｏｒｄ" is "password", "aａaａaａaａ" one
    letter repeated, and "a" with a combining accent one character once normalized
    (review s25: each was taken, and then the weak password it stands for signed in);
    "¼¼¼" (three keystrokes), "㍍" eight times (one key) or a single "ﷺ" grow long only
    once normalized, and are refused for what was typed (review s25). The text given is
    returned, hashed by ``AccountService.hash_password`` in that form."""
    value = filled(value, field)
    forms = (value, password_form(value))
    if any(len(form) < MIN_PASSWORD for form in forms):
        raise ValidationError(
            f"at least {MIN_PASSWORD} characters", field=field, code="TOO_SHORT"
        )
    if any(len(form) > MAX_PASSWORD for form in forms):
        raise ValidationError(f"at most {MAX_PASSWORD} characters", field=field, code="TOO_LONG")
    if any(len(set(form)) == 1 or not form.strip() or form.casefold() in COMMON_PASSWORDS
           for form in forms):
        raise ValidationError("too easy to guess: one of the passwords tried first (choose "
                              "a few unrelated words)", field=field, code="TOO_WEAK")
    return value


def password_form(value: str) -> str:
    """What an account's password is hashed and checked as: its NFKC form (NIST SP
    800-63B), so it signs in however its letters were typed ("ü" as one letter, or "u"
    and a combining diaeresis, as some keyboards and pastes give it; full-width forms),
    as emails are compared (QA s25). The rules of ``password`` apply to this form as well
    as to the text typed: it is the password the account really has, the typed text the
    keys a guesser presses."""
    return unicodedata.normalize("NFKC", value)


def license_plate(value: str | None, field: str = "licensePlate") -> str:
    """The plate as entered, for display (``plate_shown``): "b-mi  2024" is "B-MI 2024",
    and so is "ｂ-ｍｉ　２０２４" typed with a phone's full-width keyboard. Letters, digits,
    spaces and dashes only; what tells one car from another is its ``plate_key``."""
    shown = plate_shown(_given(value, field))
    key = plate_key(shown)
    rule = (f"letters, digits, spaces and dashes only, at most {MAX_PLATE} letters and "
            "digits")
    if any(not (c.isalnum() or c in " -") for c in shown):
        raise ValidationError(rule, field=field, code="INVALID")
    if not key:  # blank, or dashes alone
        raise ValidationError("must not be empty", field=field, code="REQUIRED")
    if len(key) > MAX_PLATE:
        raise ValidationError(rule, field=field, code="INVALID")
    if len(shown) > MAX_PLATE_SHOWN:
        raise ValidationError(f"at most {MAX_PLATE_SHOWN} characters", field=field,
                              code="TOO_LONG")
    return shown


def plate_shown(text: str) -> str:
    """A plate as it is kept and shown: in its compatibility form (NFKC, as emails and
    passwords are compared: QA s25, full-width "ＢＭＩ２０２４" from an IME was another
    car than "BMI2024", its owner's second, and no search for "bmi 2024" found it),
    trimmed, runs of whitespace one space, upper case."""
    return " ".join(unicodedata.normalize("NFKC", text).split()).upper()


def plate_key(text: str) -> str:
    """What a plate is compared by: its letters and digits, upper case, in compatibility
    form (``plate_shown``). "B-MI 2024", "bmi2024", "B MI-2024" and "ＢＭＩ２０２４" are
    one car (unique per owner on this key), and a search for "bmi 2024" finds it. For
    a plate written before plates kept their separators, the stored plate is its key."""
    return "".join(c for c in plate_shown(text) if c.isalnum())


def name_key(text: str) -> str:
    """What a list in NAME order sorts by, the order a person expects: case folded,
    accents dropped ("Ärztehaus" sorts with the a's, not after "Zoo"), compatibility
    forms unfolded ("ﬁ" is "fi", a full-width "Ａ" an "a"), whitespace runs one space.
    Stored beside the name (``name_key``), since neither store can sort by such a rule:
    SQLite and MongoDB compare text by code point, which Python's ``<`` agrees with, so
    a cursor's key compares in Python as in either store. Not a locale's collation:
    "ø" or "æ" have no decomposition and sort after "z"."""
    # NFKD on both sides of the case fold: folding can make a letter with a mark
    # ("İ" is "i" + a dot above) and decomposing an upper-case letter ("ℌ" is "H").
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    bare = "".join(c for c in folded if not unicodedata.combining(c))
    return " ".join(bare.split())


def name_identity(text: str) -> str:
    """What two names are one name by, where a name must be unique (companies'): case
    folded and normalized for compatibility (NFKC), the fold emails (``email``) build on
    too (searches, ``query.search_folded``, drop the accents besides), so "BÄCKEREI", an
    "ä" typed as "a" and a combining diaeresis, a full-width "Ａ" or the ligature "ﬁ"
    make no second name. Accents are kept, unlike ``name_key``'s: "Müller" and "Muller"
    are two names that read apart (and two families), only sorted together."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


#: The OCPP server's base path, which a charger's URL adds its identity to.
OCPP_PATH = "ocpp"


def cp_id(value: str | None, field: str = "cpId") -> str:
    """OCPP charge point identity: printable ASCII without spaces or URL-special characters
    (it is a path segment of the websocket URL), at most 48 characters. No ``:``: the
    identity is the user name of the charger's HTTP Basic auth (security profiles 1 and
    2), which cannot hold one (RFC 7617), so such a station could never sign in. Not
    ``.``, ``..`` nor ``ocpp`` (brief x33-secfix). Checked
    when an identity is made (a station created or registered); one stored before keeps
    working without a password."""
    value = filled(value, field)
    if len(value) > MAX_CP_ID:
        raise ValidationError(f"at most {MAX_CP_ID} characters", field=field, code="TOO_LONG")
    if not re.fullmatch(r"[A-Za-z0-9._~\-*+|@]+", value):
        raise ValidationError(
            "letters, digits and . _ ~ - * + | @ only", field=field, code="INVALID"
        )
    if value in (".", "..") or value.lower() == OCPP_PATH:
        # "." and "..": URL clients and proxies rewrite them as dot segments, so the
        # charger's URL would not reach its own path. "ocpp": ``/ocpp`` is the base its
        # URL adds the identity to, and the bare base would connect as that station.
        raise ValidationError(
            "not \".\", \"..\" nor \"ocpp\" (any case): a charger's URL is /ocpp/{cpId}, "
            "and URL clients rewrite dot segments", field=field, code="INVALID")
    return value


def cp_id_key(cp_id: str) -> str:
    """A cpId as it is one whatever its case (``Station.cp_id_key``): OCPP 1.6's
    chargeBoxIdentity is a CiString, case-insensitive. cpIds are ASCII (``cp_id``)."""
    return cp_id.lower()


def id_tag(value: str | None, field: str = "tag") -> str:
    """OCPP 1.6 IdToken: CiString20Type, case-insensitive by the spec; stored upper-case."""
    cleaned = filled(_given(value, field).strip(), field)
    if len(cleaned) > MAX_ID_TAG:
        raise ValidationError(f"at most {MAX_ID_TAG} characters", field=field, code="TOO_LONG")
    if not cleaned.isascii() or not cleaned.isprintable():
        raise ValidationError("printable ASCII only", field=field, code="INVALID")
    return cleaned.upper()


def stored_id_tag(presented: str) -> str:
    """A tag as a session stores it, as the charger presented it: trimmed, upper-cased
    (IdToken is case-insensitive), unprintable characters (controls, bidi overrides) shown
    as U+FFFD: operators read it in sessions and the audit log, and it must not read as
    another card's (such a tag matches no card and is Invalid anyway)."""
    tag = presented.strip().upper()
    return tag if tag.isprintable() else "".join(c if c.isprintable() else "\ufffd"
                                                 for c in tag)


#: The highest connector id a station may have.
MAX_CONNECTOR_ID = 100


def connector_id(value: int, field: str = "connectorId") -> int:
    if value < 1:
        raise ValidationError("connector ids start at 1", field=field, code="OUT_OF_RANGE")
    if value > MAX_CONNECTOR_ID:
        raise ValidationError(f"at most {MAX_CONNECTOR_ID} connectors", field=field,
                              code="OUT_OF_RANGE")
    return value


def coordinates(lat: float | None, lon: float | None, field: str = "location") -> None:
    """A point on the map (both or neither given), or the user errors naming ``field``'s
    ``lat`` and ``lon``: both at once when both are out of range."""
    if (lat is None) != (lon is None):
        raise ValidationError("give both lat and lon", field=field, code="REQUIRED")
    checks = Checks()
    checks(_within, lat, 90.0, f"{field}.lat")
    checks(_within, lon, 180.0, f"{field}.lon")
    checks.done()


def _within(degrees: float | None, bound: float, field: str) -> None:
    if degrees is not None and not -bound <= degrees <= bound:
        raise ValidationError(f"{field.rsplit('.', 1)[-1]} must be within "
                              f"-{number(bound)}..{number(bound)}", field=field,
                              code="OUT_OF_RANGE")


def number(value: float) -> str:
    """``value`` as a person writes it in a message: no exponent (``:g`` printed 10⁷ as
    "1e+07", QA s30), no trailing ".0" (230.0 is "230"), twelve significant digits at
    most (6 A at 230 V on three phases is 4.14 kW, not 4.140000000000001)."""
    return format(Decimal(f"{value:.12g}").normalize(), "f")


def positive(value: float | None, field: str, *, max_value: float = 10_000.0) -> float | None:
    if value is None:
        return None
    if not 0 < value <= max_value:
        raise ValidationError(f"must be > 0 and ≤ {number(max_value)}", field=field,
                              code="OUT_OF_RANGE")
    return value


def money(value: Decimal | str | float, field: str, *, max_value: Decimal = Decimal(10_000)
          ) -> Decimal:
    """A non-negative price with at most 6 decimals (fractions of a cent per kWh are real)."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValidationError("not a number", field=field) from exc
    if not amount.is_finite() or amount < 0 or amount > max_value:
        raise ValidationError(f"must be within 0..{max_value}", field=field, code="OUT_OF_RANGE")
    exponent = amount.as_tuple().exponent
    if exponent < -6:  # type: ignore[operator]
        # Zeros past the sixth decimal write no fraction: "0.4000000" is 0.4 (QA s24:
        # refused, while a refund of "1.000" EUR was taken).
        six = amount.quantize(Decimal("1e-6"))
        if six != amount:
            raise ValidationError("at most 6 decimals", field=field, code="INVALID")
        amount = six
    if exponent > 0:  # type: ignore[operator]
        amount = amount.quantize(Decimal(1))  # "1E+3" is stored and shown as 1000
    return amount.copy_abs()  # "-0" is zero


#: The most a price may be, in minor units of its currency: 1,000,000 EUR, 100,000,000
#: JPY, KRW or CLP, 1,000,000 IDR, 10,000 CLF. One bound in major units (10,000 of any
#: currency) refused everyday fees where a unit is worth little (QA s25: a 15,000 CLP
#: idle-fee cap, a 20,000 KRW session fee), of currencies the tariffs take. A cost stays
#: within the stores' 64-bit integers for any energy a register may report
#: (``MAX_READING``): 10,000 CLF, which the old bound allowed, is this many units too.
MAX_PRICE_MINOR = 10**8


def price(value: Decimal | str | float, field: str, currency: str | None) -> Decimal:
    """``money`` of at most ``MAX_PRICE_MINOR`` minor units of ``currency`` (with two
    digits, the most common, for one not known: its own field tells that)."""
    digits = MINOR_DIGITS.get(currency or "", 2)
    return money(value, field, max_value=Decimal(MAX_PRICE_MINOR // 10**digits))


def whole(value: int, field: str, *, max_value: int) -> int:
    """A whole number within 0..``max_value`` (a count of minutes, say)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("a whole number", field=field)
    if not 0 <= value <= max_value:
        raise ValidationError(f"must be within 0..{max_value}", field=field,
                              code="OUT_OF_RANGE")
    return value


#: The longest heartbeat interval a charger is told (seconds): the global setting's bound
#: (``CHARGEGRAPH_HEARTBEAT_INTERVAL``) and a station's own (``Station.heartbeat_interval``).
MAX_HEARTBEAT_S = 24 * 60 * 60


def digits_value(value: str, bound: int) -> int | None:
    """The number ``value`` writes in ASCII digits alone, ``None`` when it is anything
    else: chargers parse " 90" or "9e2" their own ways. Digits alone are a number however
    many ("0000000060" is 60); too many to be within ``bound`` read as ``bound + 1``:
    out of range, not "not a number" (QA s18: "99999999999")."""
    if not (value.isascii() and value.isdigit()):
        return None
    significant = value.lstrip("0") or "0"
    return int(significant) if len(significant) <= len(str(bound)) else bound + 1


def heartbeat_interval(value: int | str, field: str) -> int:
    """A heartbeat interval a boot may be answered with: whole seconds, 1 s to a day, as
    the global one. Text (a ChangeConfiguration's value, CiString500) must be its digits
    alone (``digits_value``)."""
    if isinstance(value, str):
        number = digits_value(value, MAX_HEARTBEAT_S)
        if number is None:
            raise ValidationError("a HeartbeatInterval is whole seconds, digits only",
                                  field=field, code="INVALID")
        value = number
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("a whole number of seconds", field=field)
    if not 1 <= value <= MAX_HEARTBEAT_S:
        raise ValidationError(f"must be within 1..{MAX_HEARTBEAT_S} seconds", field=field,
                              code="OUT_OF_RANGE")
    return value


#: OCPP 1.6 §9's standard configuration keys (folded, as ``command_rules.folded_key``)
#: by the type the spec gives their value: a ChangeConfiguration of one is checked by it
#: (``configuration_value``) before it is sent, since a charger that accepts it has it
#: stored as its ``valueInForce`` and the product reads some of them
#: (``SendLocalListMaxLength`` judges lists; QA s33: "abc" was sent and stored). Read-only
#: keys are here too: a charger that wrongly accepts a change of one has it in force.
#: ``HeartbeatInterval``, an integer, is not here: its own, stricter check
#: (``heartbeat_interval``) judges it alone. Vendor keys are free-form (CiString500,
#: checked by the command's schema).
_INTEGER_KEYS = (
    "BlinkRepeat", "ClockAlignedDataInterval", "ConnectionTimeOut",
    "ConnectorPhaseRotationMaxLength", "GetConfigurationMaxKeys",
    "MaxEnergyOnInvalidId", "MeterValuesAlignedDataMaxLength",
    "MeterValuesSampledDataMaxLength", "MeterValueSampleInterval", "MinimumStatusDuration",
    "NumberOfConnectors", "ResetRetries", "StopTxnAlignedDataMaxLength",
    "StopTxnSampledDataMaxLength", "SupportedFeatureProfilesMaxLength",
    "TransactionMessageAttempts", "TransactionMessageRetryInterval", "WebSocketPingInterval",
    "LocalAuthListMaxLength", "SendLocalListMaxLength", "ChargeProfileMaxStackLevel",
    "ChargingScheduleMaxPeriods", "MaxChargingProfilesInstalled")
_BOOLEAN_KEYS = (
    "AllowOfflineTxForUnknownId", "AuthorizationCacheEnabled", "AuthorizeRemoteTxRequests",
    "LocalAuthorizeOffline", "LocalPreAuthorize", "StopTransactionOnEVSideDisconnect",
    "StopTransactionOnInvalidId", "UnlockConnectorOnEVSideDisconnect",
    "LocalAuthListEnabled", "ReserveConnectorZeroSupported",
    "ConnectorSwitch3to1PhaseSupported")
_MEASURAND_KEYS = ("MeterValuesAlignedData", "MeterValuesSampledData",
                   "StopTxnAlignedData", "StopTxnSampledData")
#: OCPP 1.6's Measurand values, each also combined with a phase (§9: "Where
#: applicable, the Measurand is combined with the optional phase; for instance:
#: Voltage.L1"; review r33-d: those were refused).
MEASURANDS = frozenset(Measurand)
_PHASED_MEASURANDS = MEASURANDS | {f"{m}.{p}" for m in Measurand for p in Phase}
#: Named lists of the spec's other CSL keys; names compared ignoring case, as
#: ``commands.units_named`` reads the units a charger takes.
_NAMED_LISTS: dict[str, frozenset[str]] = {
    "supportedfeatureprofiles": frozenset({
        "Core", "FirmwareManagement", "LocalAuthListManagement", "Reservation",
        "SmartCharging", "RemoteTrigger"}),
    "chargingscheduleallowedchargingrateunit": frozenset({"Current", "Power"}),
}
#: The most an integer key's value may be: OCPP's integers are 32-bit.
MAX_CONFIG_INTEGER = 2**31 - 1
#: Per folded key, the check of its value.
CONFIGURATION_KINDS: dict[str, str] = {
    **{key.lower(): "integer" for key in _INTEGER_KEYS},
    **{key.lower(): "boolean" for key in _BOOLEAN_KEYS},
    **{key.lower(): "measurands" for key in _MEASURAND_KEYS},
    **{key: "named" for key in _NAMED_LISTS},
    "lightintensity": "percent",
}


def configuration_value(key: str, value: str, field: str = "value") -> str:
    """``value`` as OCPP 1.6 §9 types standard key ``key`` (folded): an integer is its
    ASCII digits alone (as ``heartbeat_interval`` reads them: chargers parse " 90" or
    "9e2" their own ways), a boolean ``true`` or ``false``, a CSL its known names
    separated by commas (empty: none; an empty name between commas, a trailing comma's,
    is none too, as chargers split the list), a measurand with or without its phase
    (``Voltage.L1``). Booleans and the names of the other CSLs are compared ignoring
    case, as chargers report them (``True``, ``TRUE``) and the product reads them
    (``commands.units_named``). A key the spec does not name is not checked."""
    kind = CONFIGURATION_KINDS.get(key)
    if kind in ("integer", "percent"):
        bound = 100 if kind == "percent" else MAX_CONFIG_INTEGER
        number = digits_value(value, bound)
        if number is None:
            raise ValidationError("a whole number, digits only", field=field, code="INVALID")
        if number > bound:
            raise ValidationError(f"must be within 0..{bound}", field=field,
                                  code="OUT_OF_RANGE")
    elif kind == "boolean" and value.lower() not in ("true", "false"):
        raise ValidationError('"true" or "false"', field=field, code="INVALID")
    elif kind in ("measurands", "named"):
        measurands = kind == "measurands"
        known = _PHASED_MEASURANDS if measurands else _NAMED_LISTS[key]
        folded = known if measurands else {name.lower() for name in known}
        unknown = [name for name in value.split(",") if name.strip()
                   and (name.strip() if measurands else name.strip().lower()) not in folded]
        if unknown:
            named = (f"measurands ({', '.join(sorted(MEASURANDS))}), each with or without "
                     f"a phase ({', '.join(Phase)}), such as Voltage.L1"
                     if measurands else f"names ({', '.join(sorted(known))})")
            raise ValidationError(
                f"a comma-separated list of {named}; not one: {unknown[0][:40]!r}",
                field=field, code="INVALID")
    return value


def currency(value: str | None, field: str = "currency") -> str:
    cleaned = _given(value, field).strip().upper()
    if cleaned not in MINOR_DIGITS:
        raise ValidationError("an ISO 4217 currency in circulation, such as EUR",
                              field=field)
    return cleaned


def rate(value: Decimal | str | float, field: str) -> Decimal:
    amount = money(value, field, max_value=Decimal(1))
    return amount


def instant(value: datetime, field: str) -> datetime:
    """A zoned instant within ``EARLIEST`` .. ``LATEST``, in UTC as every domain time
    is: one given at +05:00 was answered and audited as given, and read back in UTC (QA
    s17: one instant, two strings in a client's cache)."""
    if value.tzinfo is None:
        raise ValidationError("needs a time zone offset", field=field)
    if not EARLIEST <= value < LATEST:
        raise ValidationError(f"must be within {EARLIEST.year}..{LATEST.year - 1}",
                              field=field, code="OUT_OF_RANGE")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def meter_register(value: int, field: str) -> int:
    """A meter register in Wh (OCPP meterStart / meterStop): never negative."""
    if not 0 <= value <= MAX_READING:
        raise ValidationError(f"must be within 0..{MAX_READING}", field=field,
                              code="OUT_OF_RANGE")
    return value


#: A plain ASCII decimal, as OCPP's "Raw" sampled values are written. Python's ``float``
#: also reads ``1_000`` and other scripts' digits, which no meter sends: such a value is
#: refused rather than counted as energy.
_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: What may surround a sampled value's plain decimal: ASCII blanks, as firmware pads a
#: number to a width (" 12"). Read as the number they surround, as every other reader
#: of the value (a CSV export, a spreadsheet) reads it; refused, that value alone cost
#: the charger its whole frame while "abc" beside it was let through (QA).
_PADDING = " \t\r\n"


def sampled_number(text: str, field: str) -> float | None:
    """The number a sampled value's text writes (checked by ``reading``), ASCII blanks
    around it left out, or ``None`` for a value that is no number at all (SignedData and
    other formats are not counted)."""
    if _DECIMAL_RE.fullmatch(text.strip(_PADDING)) is not None:
        return reading(float(text), field)
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return reading(value, field)  # NaN and infinities: refused as out of range
    raise ValidationError("must be a plain decimal number", field=field, code="INVALID")


def reading(value: float, field: str) -> float:
    """A sampled meter value: finite (no NaN, no infinity) and within ±``MAX_READING``.
    Negative values are real (power exported to the grid)."""
    if not -MAX_READING <= value <= MAX_READING:  # False for NaN too
        raise ValidationError(f"must be a finite number within ±{MAX_READING}",
                              field=field, code="OUT_OF_RANGE")
    return value


def aware(value: datetime | None, field: str) -> datetime | None:
    return None if value is None else instant(value, field)
