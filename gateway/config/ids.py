"""String shapes several config tables share: ids, host names, MQTT topic prefixes."""

from __future__ import annotations

from typing import Final

from gateway.config.kinds import Str

# Ids end up as MQTT topic segments (P/G/reads/{meter}) and in file names, so no '/', '+',
# '#', spaces or a leading '$' (topics starting with '$' are reserved by brokers).
ID_PATTERN: Final = "[A-Za-z0-9][A-Za-z0-9._-]*"
ID_HINT: Final = (
    "an id of letters, digits, '.', '_' or '-' starting with a letter or digit "
    "(at most 64 characters; it is used in MQTT topics)"
)
IDENT: Final = Str(pattern=ID_PATTERN, hint=ID_HINT, max_length=64)
# Topic prefix: one or more '/'-separated levels, none empty, no wildcards.
TOPIC_PREFIX_PATTERN: Final = "[^/#+\\s]+(/[^/#+\\s]+)*"
HOST: Final = Str(pattern="[^\\s/]+", hint="a host name or IP address")
# Largest value of a 32-bit unsigned MQTT property (session expiry interval).
MAX_U32: Final = 2**32 - 1
