"""Which configuration keys are secrets (``command_rules.is_secret_key``) and what the wire
log withholds for them (``log_masking``): review s23 of the word rule."""

import pytest

from domain.command_rules import is_secret_key
from ocpp_bridge.log_masking import masked_line


@pytest.mark.parametrize("key", ["MqttPwd2", "ApiToken2", "WifiPsk2", "AccessTokenValue",
                                 "AuthTokenB64", "BasicAuthPwdHash", "WifiPskKey",
                                 "SimPinCode", "GsmPinCode", "CloudTokenEnc"])
def test_a_secret_followed_by_another_word_or_a_number_stays_hidden(key: str) -> None:
    """Matched as the key's last word only, a secret word followed by a digit or a
    qualifier (``MqttPwd2``, ``AccessTokenValue``) was shown and audited in clear."""
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["IdTokenType", "RfidTokenFormat", "TokenReaderEnabled",
                                 "TokenCaseInsensitive", "PwdComplexityEnabled",
                                 "CredentialsRequired", "LockPinTimeout",
                                 "WebSocketPingInterval", "UseHttpsKeepAlive", "MaxAmpsKw"])
def test_settings_about_secrets_and_words_across_them_are_shown(key: str) -> None:
    assert not is_secret_key(key)


def test_an_ordinary_status_line_naming_a_pin_is_logged() -> None:
    """A lone word of free text ("pin", "token") is no key: a Control Pilot pin fault's
    line was withheld whole."""
    for info in ("CP pin voltage out of range", "RFID token read error"):
        line = ('[2,"1","StatusNotification",{"connectorId":1,"errorCode":"OtherError",'
                f'"info":"{info}","status":"Faulted"}}]')
        assert masked_line(line) == line


def test_a_secret_key_in_a_line_is_still_masked_or_the_line_withheld() -> None:
    pair = '[2,"1","ChangeConfiguration",{"key":"MqttPwd2","value":"hunter2"}]'
    assert "hunter2" not in masked_line(pair) and "MqttPwd2" in masked_line(pair)
    echoed = '[4,"1","PropertyConstraintViolation","MqttPwd2 refused: hunter2",{}]'
    assert "hunter2" not in masked_line(echoed)
    lone = '[2,"1","ChangeConfiguration",{"key":"Pin","value":"1234"}]'
    assert "1234" not in masked_line(lone)
