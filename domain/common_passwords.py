"""Passwords of eight characters or more that lists of leaked passwords show most often:
the first ones an attacker tries, so no account may take one (NIST SP 800-63B, 5.1.1.2:
check new passwords against commonly used ones, and impose no composition rules).

Kept short on purpose: a guesser who throttled sign-in lets through a few hundred tries
an hour per address starts here. Compared without regard to case."""

from __future__ import annotations

COMMON_PASSWORDS: frozenset[str] = frozenset("""
12345678 123456789 1234567890 12345678910 123123123 123321123 987654321 0987654321
11111111 111111111 1111111111 00000000 000000000 0000000000 22222222 88888888 99999999
12341234 11223344 12121212 13131313 147258369 159753159 123454321 1q2w3e4r 1q2w3e4r5t
1qaz2wsx zaq12wsx 1qazxsw2 qazwsxedc q1w2e3r4 q1w2e3r4t5 qwertyui qwertyuiop qwerty12
qwerty123 qwerty1234 asdfghjk asdfghjkl zxcvbnm1 asdf1234 abcd1234 abc12345 abc123456
a1b2c3d4 aa123456 password password1 password12 password123 password1234 passw0rd
p@ssw0rd p@ssword pass1234 passwort passwort1 motdepasse contrasena iloveyou iloveyou1
princess sunshine football baseball basketball superman batman123 starwars trustno1
welcome1 welcome123 letmein1 letmein123 whatever computer internet michelle jennifer
charlie1 master123 monkey123 dragon123 shadow123 liverpool chelsea1 arsenal1 1234qwer
admin123 administrator changeme changeme1 secret123 default1 test1234 testtest
chargegraph
""".split())  # noqa: SIM905 (a word list reads best as words)
