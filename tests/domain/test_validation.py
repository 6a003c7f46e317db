from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from domain import validation as v
from domain.errors import ValidationError, ValidationErrors, each


def test_email_is_case_folded_and_checked() -> None:
    assert v.email("  Ada@Example.COM ") == "ada@example.com"
    # One address however the accent was typed (composed, or e + combining acute).
    assert v.email("Ren\u00e9@example.com") == v.email("rene\u0301@example.com")
    # QA (s16): the same mailbox, or one that reads as it, opened a second account.
    for same in ("mia@demo.example.dev.", "\uff4dia@demo.example.dev",
                 "MIA@DEMO.EXAMPLE.DEV"):
        assert v.email(same) == "mia@demo.example.dev", same
    for bad in ("", "no-at", "a@b", "a b@c.de", "a@@b.de", "a\x00@b.de", "a\ud800@b.de",
                '"mia"@demo.example.dev', "mia@."):
        with pytest.raises(ValidationError) as err:
            v.email(bad)
        assert err.value.field == "email"


@pytest.mark.parametrize(("raw", "plate", "key"), [
    ("b-ab 123", "B-AB 123", "BAB123"), ("  M XY-42 ", "M XY-42", "MXY42"),
    ("B-MI \t 2024", "B-MI 2024", "BMI2024"), ("bmi2024", "BMI2024", "BMI2024"),
    ("lö-ab 1", "LÖ-AB 1", "LÖAB1")])
def test_plates_keep_their_separators_and_compare_by_their_key(raw: str, plate: str,
                                                               key: str) -> None:
    """As entered (trimmed, whitespace one space, upper case), and its letters and
    digits as the key a plate is compared by."""
    assert v.license_plate(raw) == plate
    assert v.plate_key(plate) == v.plate_key(raw) == key


@pytest.mark.parametrize(("name", "key"), [
    ("Ärztehaus", "arztehaus"), ("aachen lowercase", "aachen lowercase"), ("Zoo", "zoo"),
    ("Ärzteha\u0308us", "arztehaus"),  # a combining mark as typed
    ("Straße", "strasse"), ("İstanbul", "istanbul"), ("ℌotel", "hotel"),
    ("\uff3aoo", "zoo"), ("Café  de\tla Gare ", "cafe de la gare")])
def test_a_name_s_sort_key_ignores_case_accents_and_spacing(name: str, key: str) -> None:
    """What NAME order sorts by (QA: lowercase and accented names went after "Z")."""
    assert v.name_key(name) == key


def test_names_sort_by_their_keys_as_people_read_them() -> None:
    names = ["Zoo", "aachen lowercase", "Ärztehaus", "Urban Tech Republic", "ärzte 2"]
    assert sorted(names, key=v.name_key) == [
        "aachen lowercase", "ärzte 2", "Ärztehaus", "Urban Tech Republic", "Zoo"]


@pytest.mark.parametrize(("bad", "code"), [
    ("", "REQUIRED"), (" - ", "REQUIRED"), (None, "REQUIRED"), ("AB$12", "INVALID"),
    ("B_MI", "INVALID"), ("X" * 17, "INVALID"), ("X-" * 16 + "X", "INVALID"),
    ("B-" + "-" * 22 + "1", "TOO_LONG")])
def test_bad_plates(bad: str | None, code: str) -> None:
    """At most 16 letters and digits, as before plates kept their separators; the
    separators do not make a plate longer than 24 characters."""
    with pytest.raises(ValidationError) as err:
        v.license_plate(bad)
    assert (err.value.field, err.value.code) == ("licensePlate", code)


def test_a_plate_of_16_letters_and_digits_may_have_its_separators() -> None:
    assert v.license_plate("AB-CD 1234-EFGH 5678") == "AB-CD 1234-EFGH 5678"


def test_cp_id_charset_and_length() -> None:
    assert v.cp_id("CP-001_a.b~c*d+e|f@g") == "CP-001_a.b~c*d+e|f@g"
    assert [v.cp_id(ok) for ok in ("...", "ocpp1", ".a", "-")] == ["...", "ocpp1", ".a", "-"]
    # QA (s16): "AB:1" was a station whose Basic auth (user "AB", as RFC 7617 reads the
    # first colon) could never succeed.
    for bad, code in (("", "REQUIRED"), ("a" * 49, "TOO_LONG"), ("a/b", "INVALID"),
                      ("AB:1", "INVALID"),
                      ("a b", "INVALID"), ("ä", "INVALID"),
                      # A dot segment URL clients rewrite; the OCPP base path itself.
                      (".", "INVALID"), ("..", "INVALID"), ("ocpp", "INVALID"),
                      ("OCPP", "INVALID"), ("OcPp", "INVALID")):
        with pytest.raises(ValidationError) as err:
            v.cp_id(bad)
        assert err.value.code == code


def test_id_tag_rules() -> None:
    assert v.id_tag(" rfid-1 ") == "RFID-1"
    with pytest.raises(ValidationError) as err:
        v.id_tag("x" * 21)
    assert err.value.code == "TOO_LONG"


def test_connector_ids_start_at_one() -> None:
    assert v.connector_id(1) == 1
    with pytest.raises(ValidationError):
        v.connector_id(0)


@pytest.mark.parametrize(("lat", "lon", "field"), [(91, 0, "location.lat"),
                                                   (0, -181, "location.lon"),
                                                   (1, None, "location")])
def test_coordinates(lat, lon, field) -> None:
    with pytest.raises(ValidationError) as err:
        v.coordinates(lat, lon)
    assert err.value.field == field


def test_money_is_exact() -> None:
    assert v.money("0.3450", "p") == Decimal("0.3450")
    assert v.money(0.1, "p") == Decimal("0.1")
    for bad in ("-1", "NaN", "abc", "0.1234567"):
        with pytest.raises(ValidationError):
            v.money(bad, "p")
    assert v.currency(" eur ") == "EUR"


def test_names_refuse_controls_surrogates_and_bidi_overrides_but_keep_joiners() -> None:
    for bad in ("Dee\x00", "Esc\x1b[31m", "half\ud800", "evil\u202eexe.txt",
                "Ad\u200bmin", "\ufeffAdmin", "Ad\u00admin", "Admin\U000e0001"):
        with pytest.raises(ValidationError) as err:
            v.name(bad)
        assert err.value.code == "INVALID", bad
    for good in ("Family \U0001f468\u200d\U0001f469\u200d\U0001f467",
                 "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "Zoë Ångström"):
        assert v.name(good) == good
    assert v.optional_text("Street 1\n10115 Berlin", "address") == "Street 1\n10115 Berlin"


def test_names_that_read_like_another_or_like_nothing() -> None:
    """QA s21: a company made beside "Spree Charging GmbH" with a ZWNJ at its end, a
    Hangul filler, a braille blank or a combining grapheme joiner; names showing nothing
    at all ("\u200d", "\u3164", a lone accent) were accepted too."""
    for joined in ("Spree Charging GmbH\u200c", "\u200dSpree Charging GmbH",
                   "Spree \u200cCharging\u200d GmbH"):
        assert v.name(joined) == "Spree Charging GmbH", repr(joined)
    for blank in ("Spree Charging GmbH\u3164", "Spree\u2800Charging GmbH",
                  "Spree Charging GmbH\u034f", "\uffa0Spree", "\u3164", "\u0301", "\u0301\u0302"):
        with pytest.raises(ValidationError) as err:
            v.name(blank)
        assert err.value.code == "INVALID", repr(blank)
    with pytest.raises(ValidationError) as err:
        v.name("\u200d \u200c")
    assert err.value.code == "REQUIRED"
    assert v.name("Caf\u00e9 \u0301x") == "Caf\u00e9 \u0301x"  # a mark beside a letter
    # Review s21: inside plain words, or characters every renderer shows as nothing.
    for hidden in ("Spree Charg\u200cing GmbH", "Spree Charging Gm\u200dbH",
                   "Spree Charging GmbH\u2062", "Spree Charging GmbH\u2063",
                   "Spree Charging GmbH\ufe00", "Spree Charging GmbH\ufe0f",
                   "Spree Charging GmbH\u180b", "Spree Charging GmbH\U0001d173"):
        with pytest.raises(ValidationError) as err:
            v.name(hidden)
        assert err.value.code == "INVALID", repr(hidden)
    assert v.name("I \u2764\ufe0f EVs") == "I \u2764\ufe0f EVs"  # a red heart
    for keycap in ("Ladepark 1\ufe0f\u20e3", "Halle #\ufe0f\u20e3"):  # 1️⃣, #️⃣
        assert v.name(keycap) == keycap
    # Verify s21: real names that need modifiers (a flag's tags, a Japanese name's
    # ideographic variant, Mongolian selectors, a Malayalam chillu) are kept as written.
    for real in ("\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
                 " Power Ltd", "\u6e21\u9089\U000e0102 \u592a\u90ce",
                 "\u182c\u1820\u1837\u1820\u180e\u1820", "\u182d\u1820\u180b\u1835",
                 "\u0d05\u0d35\u0d28\u0d4d\u200d EV"):
        assert v.name(real) == real, repr(real)
    for stray in ("x\U000e0067", "Admin\U000e0001"):  # a tag outside a flag
        with pytest.raises(ValidationError):
            v.name(stray)
    # Review s21 (rev-e): selectors and joiners beside letters no joiner or selector
    # changes (an accented Latin letter, Cyrillic), runs of them, unterminated tags.
    for alike in ("M\u00fc\ufe0fller Laden GmbH", "M\u00fc\U000e0100ller",
                  "K\u00f6\u180bln", "Caf\u00e9\ufe0f\ufe0f Strom", "Jos\u00e9\u200d\u00c9",
                  "\u0410\U000e0100dmin", "\U0001f3f4\U000e0061\U000e0064 Pirates",
                  "\U0001f3f4\U000e0061\U000e007f Pirates",  # a flag no emoji shows
                  "\u6e21\ufe0f\u8fba", "\uff2d\u200d\uff35\uff2c\uff2c\uff25\uff32"):
        with pytest.raises(ValidationError):
            v.name(alike)
    for emoji in ("\U0001f3f3\ufe0f\u200d\U0001f308 Pride",  # 🏳️‍🌈
                  "\U0001f469\U0001f3fd\u200d\U0001f527 Werkstatt",  # 👩🏽‍🔧
                  "\u0dc1\u0dca\u200d\u0dbb\u0dd3 \u0dbd\u0d82\u0d9a\u0dcf",  # Sinhala
                  "Info \u2139\ufe0f Punkt", "Achtung \u203c\ufe0f", "Welle \u3030\ufe0f"):
        assert v.name(emoji) == emoji, repr(emoji)
    with pytest.raises(ValidationError):
        v.name("Ladepark 1\ufe0f")  # no keycap after it: shows nothing
    assert v.shown_text("Model \u3164\u2800X") == "Model X"


def test_coordinates_out_of_range_are_reported_together() -> None:
    with pytest.raises(ValidationErrors) as err:
        v.coordinates(91, 200)
    assert [(e.field, e.code) for e in each(err.value)] == [
        ("location.lat", "OUT_OF_RANGE"), ("location.lon", "OUT_OF_RANGE")]


def test_charger_text_keeps_what_can_be_shown() -> None:
    assert v.shown_text("RCD tripped – ünïcode") == "RCD tripped – ünïcode"
    assert v.shown_text("\x1b[2J\x00evil\u202e") == "[2Jevil"
    assert v.shown_text("two\nlines") == "two lines"
    assert v.shown_text("\x00") is None
    assert v.shown_text(None) is None


def test_amounts_are_stored_in_plain_notation() -> None:
    assert str(v.money("1E+3", "price")) == "1000"
    assert str(v.money(Decimal("-0"), "price")) == "0"
    assert str(v.money("0.390", "price")) == "0.390"
    # Zeros past the sixth decimal write no fraction (QA s24: "0.4000000" was refused).
    assert str(v.money("0.4000000", "price")) == "0.400000"
    assert str(v.money("1.2345670000", "price")) == "1.234567"


def test_sampled_numbers_are_plain_decimals() -> None:
    for text, number in (("1", 1.0), ("-2.5", -2.5), ("+3", 3.0), ("1e3", 1000.0),
                         (".5", 0.5), ("5.", 5.0), ("7E-1", 0.7),
                         # Padded with ASCII blanks: the number they surround (QA).
                         (" 12", 12.0), ("12 ", 12.0), ("\t-1.5\r\n", -1.5)):
        assert v.sampled_number(text, "value") == number
    for text in ("", " ", "1 2", "abc", "0xDEADBEEF", "SIGNED:ab12"):  # not numbers: not counted
        assert v.sampled_number(text, "value") is None
    for text, code in (("1_000", "INVALID"), ("\u00a05", "INVALID"),
                       ("\u0661\u0662", "INVALID"),
                       ("NaN", "OUT_OF_RANGE"), ("-inf", "OUT_OF_RANGE"),
                       ("1e13", "OUT_OF_RANGE")):
        with pytest.raises(ValidationError) as caught:
            v.sampled_number(text, "value")
        assert caught.value.code == code and caught.value.field == "value", text


def test_an_instant_with_an_offset_is_kept_in_utc() -> None:
    """QA (s17): an instant given at +05:00 was answered and audited as given, then read
    back in UTC: one instant, two strings in a client's cache."""
    given = datetime(2027, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    kept = v.instant(given, "expiresAt")
    assert kept == given and kept.tzinfo is UTC and kept.hour == 19
    with pytest.raises(ValidationError):
        v.instant(datetime(2027, 1, 1), "expiresAt")


def test_checks_report_every_failure_in_the_order_checked() -> None:
    """``Checks`` runs each field's check, keeps each failure and raises them together:
    a form is told every invalid field at once."""
    checks = v.Checks()
    assert checks(v.name, " Ada  Lovelace ") == "Ada Lovelace"  # a value that passes
    checks(v.email, "no-at")
    checks(v.password, "short")
    checks(v.coordinates, 91.0, 0.0)
    assert checks.failed("location") and checks.failed("password")
    assert not checks.failed("name") and not checks.failed("loc")
    with pytest.raises(ValidationErrors) as raised:
        checks.done()
    assert [(e.field, e.code) for e in each(raised.value)] == [
        ("email", "INVALID"), ("password", "TOO_SHORT"), ("location.lat", "OUT_OF_RANGE")]
    # Read as one error (an OCPP reply, a log line), it is the first.
    assert (raised.value.field, raised.value.code) == ("email", "INVALID")


def test_checks_raise_a_single_failure_as_it_was_and_nothing_when_all_pass() -> None:
    checks = v.Checks()
    checks(v.name, "fine")
    checks.done()  # nothing failed
    checks(v.id_tag, "x" * 21)
    with pytest.raises(ValidationError) as raised:
        checks.done()
    assert type(raised.value) is ValidationError and raised.value.code == "TOO_LONG"
    # A check that collects its own (a nested input) adds each of its failures.
    nested = v.Checks()
    outer = v.Checks()
    nested(v.name, "")
    nested(v.password, "")
    outer(nested.done)
    assert [e.field for e in outer.errors] == ["name", "password"]


def test_a_heartbeat_interval_is_read_from_its_digits_however_many() -> None:
    """Digits alone are a number: leading zeros read as what they are, too many digits
    are out of range (QA s18: "99999999999" was told "digits only"); anything else is
    not a number."""
    assert v.heartbeat_interval("0000000060", "value") == 60
    assert v.heartbeat_interval(300, "value") == 300
    for text, code in (("99999999999", "OUT_OF_RANGE"), ("0", "OUT_OF_RANGE"),
                       ("9e2", "INVALID"), (" 90", "INVALID"), ("", "INVALID"),
                       ("٣٠٠", "INVALID")):
        with pytest.raises(ValidationError) as caught:
            v.heartbeat_interval(text, "value")
        assert caught.value.code == code, text


def test_standard_configuration_keys_are_checked_by_their_spec_type() -> None:
    """OCPP 1.6 §9's keys by type (QA s33: "abc" was sent as SendLocalListMaxLength);
    a vendor's key is not checked here (its length is, by the command's schema)."""
    for key, good in (("meterValueSampleInterval", "0"), ("sendlocallistmaxlength", "0100"),
                      ("localauthorizeoffline", "false"), ("lightintensity", "100"),
                      ("metervaluessampleddata", "Energy.Active.Import.Register,SoC"),
                      ("stoptxnaligneddata", ""), ("vendorthing", "a,b;\"c\"\né☃"),
                      ("supportedfeatureprofiles", "Core,SmartCharging")):
        assert v.configuration_value(key, good) == good
    for key, bad, code in (("metervaluesampleinterval", "a,b", "INVALID"),
                           ("metervaluesampleinterval", " 60", "INVALID"),
                           ("metervaluesampleinterval", "2147483648", "OUT_OF_RANGE"),
                           ("sendlocallistmaxlength", "", "INVALID"),
                           ("localauthorizeoffline", "1", "INVALID"),
                           ("lightintensity", "101", "OUT_OF_RANGE"),
                           ("metervaluessampleddata", "Voltage,X", "INVALID"),
                           ("chargingscheduleallowedchargingrateunit", "Amps", "INVALID")):
        with pytest.raises(ValidationError) as caught:
            v.configuration_value(key, bad)
        assert (caught.value.field, caught.value.code) == ("value", code), (key, bad)


@pytest.mark.parametrize(("key", "value", "taken"), [
    # §9: "the Measurand is combined with the optional phase; for instance: Voltage.L1",
    # on all four measurand keys, with each of OCPP's phases (review r33-d).
    ("metervaluessampleddata", "Voltage.L1", True),
    ("metervaluessampleddata", "Current.Import.L1,Energy.Active.Import.Register", True),
    ("metervaluesaligneddata", "Voltage.L1-N,Voltage.L2-N,Voltage.L3-N", True),
    ("stoptxnsampleddata", "Current.Import.N", True),
    ("stoptxnaligneddata", "Voltage.L1-L2,Voltage.L2-L3,Voltage.L3-L1,Power.Active.Import.L3",
     True),
    ("metervaluessampleddata", "Voltage.L4", False),
    ("metervaluessampleddata", "Voltage.l1", False),
    ("metervaluessampleddata", "Voltage.", False),
    ("metervaluessampleddata", "L1", False),
    ("metervaluessampleddata", "Voltage.L1.L2", False),
    # Booleans as chargers report them, in any case.
    ("localauthorizeoffline", "True", True),
    ("authorizeremotetxrequests", "TRUE", True),
    ("stoptransactiononinvalidid", "False", True),
    ("localauthorizeoffline", "yes", False),
    ("localauthorizeoffline", "", False),
    # A CSL: an empty name, a trailing comma's or between two, names nothing, as the
    # empty list does (chargers split the list so).
    ("metervaluessampleddata", "", True),
    ("metervaluessampleddata", "Energy.Active.Import.Register,", True),
    ("metervaluessampleddata", "Voltage,,SoC", True),
    ("supportedfeatureprofiles", "Core,", True),
    # The other CSLs' names in any case, as the product reads the units a charger takes
    # (``commands.units_named``; review s33: "current" was refused, read as Current).
    ("supportedfeatureprofiles", "core,SMARTCHARGING, Reservation", True),
    ("chargingscheduleallowedchargingrateunit", "current,POWER", True),
    ("chargingscheduleallowedchargingrateunit", " Power", True),
    ("chargingscheduleallowedchargingrateunit", "Amps", False),
    ("supportedfeatureprofiles", "Core,magic", False),
    ("metervaluessampleddata", "Energy.Active.Import.Register,Bogus", False),
])
def test_ocpp_values_chargers_use_are_taken(key: str, value: str, taken: bool) -> None:
    if taken:
        assert v.configuration_value(key, value) == value
        return
    with pytest.raises(ValidationError) as caught:
        v.configuration_value(key, value)
    assert (caught.value.field, caught.value.code) == ("value", "INVALID")


@pytest.mark.parametrize(("typed", "code"), [
    ("¼¼¼", "TOO_SHORT"),          # three keystrokes ("1⁄41⁄41⁄4", 9 long, once normalized)
    ("㍍" * 8, "TOO_WEAK"),         # one key pressed eight times ("メートル" x 8 normalized)
    ("\ufdfa", "TOO_SHORT"),        # a single character (18 once normalized)
    ("\ufdfa" * 2, "TOO_SHORT"),
], ids=["fractions", "one-key-repeated", "one-ligature", "two-ligatures"])
def test_a_password_that_grows_only_when_normalized_is_judged_as_typed_too(
        typed: str, code: str) -> None:
    """Review s26: the rules saw only the NFKC form, so a password of one key, or one
    key pressed three times, passed (its guess space is that of "aaaaaaaa"). Each rule
    holds for the text typed and for its normalized form alike."""
    assert len(v.password_form(typed)) >= v.MIN_PASSWORD
    with pytest.raises(ValidationError) as refused:
        v.password(typed)
    assert (refused.value.field, refused.value.code) == ("password", code)
    # Still refused for the normalized form alone (review s25), and fine when both hold.
    with pytest.raises(ValidationError):
        v.password("ｐａｓｓｗｏｒｄ")
    assert v.password("Grüße aus Köln") == "Grüße aus Köln"


def test_numbers_in_messages_are_written_out() -> None:
    """A bound in a message reads as written (QA s30: ``:g`` gave "1e+07")."""
    assert [v.number(x) for x in (1e7, 230.0, 6.5, 6 * 230 * 3 / 1000, 100_000.0)] == \
        ["10000000", "230", "6.5", "4.14", "100000"]
