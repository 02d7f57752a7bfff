"""Typed reasons why a request was rejected or challenged again.

The wire answer stays uniform (an unknown user looks exactly like a wrong password);
these codes are what the admin sees, stored on every AuthAttempt and turned into a
sentence by :data:`EXPLANATIONS`.
"""

import enum


class Reason(enum.StrEnum):
    UNKNOWN_USER = "unknown_user"
    WRONG_PASSWORD = "wrong_password"
    REALM_MISMATCH = "realm_mismatch"
    AUTH_USER_MISMATCH = "auth_user_mismatch"
    STALE_NONCE = "stale_nonce"
    FORGED_NONCE = "forged_nonce"
    REPLAYED_NONCE = "replayed_nonce"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    MALFORMED_CREDENTIALS = "malformed_credentials"
    DISABLED_EXTENSION = "disabled_extension"
    INTERVAL_TOO_BRIEF = "interval_too_brief"
    TOO_MANY_CONTACTS = "too_many_contacts"
    OUT_OF_ORDER = "out_of_order"
    BAD_REQUEST = "bad_request"
    UA_POLICY = "ua_policy"
    BANNED_SOURCE = "banned_source"
    WATCH_NOT_ALLOWED = "watch_not_allowed"
    NOT_REGISTERED = "not_registered"
    TOKEN_INACTIVE = "token_inactive"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_INVALID = "token_invalid"
    TOKEN_USER_MISMATCH = "token_user_mismatch"
    TOKEN_SCOPE = "token_scope"
    AUTH_SERVER_FAILED = "auth_server_failed"
    BEARER_NOT_ALLOWED = "bearer_not_allowed"
    DIGEST_NOT_ALLOWED = "digest_not_allowed"


EXPLANATIONS = {
    Reason.UNKNOWN_USER: "No extension with this number exists.",
    Reason.WRONG_PASSWORD: "The password configured on the phone does not match the extension's password.",
    Reason.REALM_MISMATCH: "The phone answered the challenge for a different realm (domain) than this server's.",
    Reason.AUTH_USER_MISMATCH: "The authentication username differs from the extension the phone tried to register.",
    Reason.STALE_NONCE: "The phone reused a challenge that had expired; it was challenged again with stale=true.",
    Reason.FORGED_NONCE: "The phone answered a challenge this server never issued (forged or from another server).",
    Reason.REPLAYED_NONCE: "The same challenge answer was sent twice (nonce count replayed) — a replay or a broken client.",
    Reason.UNSUPPORTED_ALGORITHM: "The phone used a digest algorithm this server does not offer.",
    Reason.MALFORMED_CREDENTIALS: "The Authorization header could not be understood.",
    Reason.DISABLED_EXTENSION: "The extension exists but is disabled.",
    Reason.INTERVAL_TOO_BRIEF: "The phone asked for a registration interval shorter than the minimum allowed.",
    Reason.TOO_MANY_CONTACTS: "The extension already has as many registered devices as it allows.",
    Reason.OUT_OF_ORDER: "The REGISTER arrived out of order (its CSeq is not newer than the last one for this Call-ID).",
    Reason.BAD_REQUEST: "The REGISTER was malformed.",
    Reason.UA_POLICY: "The phone's User-Agent is not accepted by the third-party User-Agent policy.",
    Reason.BANNED_SOURCE: "The source address is banned.",
    Reason.WATCH_NOT_ALLOWED: "The extension subscribed to another extension's registrations without permission "
                              "(its may-watch list does not name it).",
    Reason.TOKEN_INACTIVE: "The OAuth authorization server says the bearer token is not active (revoked, or never issued).",
    Reason.TOKEN_EXPIRED: "The bearer token has expired.",
    Reason.TOKEN_INVALID: "The bearer token could not be verified (bad signature, wrong issuer or audience, unknown "
                          "key, not yet valid, or malformed).",
    Reason.TOKEN_USER_MISMATCH: "The bearer token belongs to another user than the address of record.",
    Reason.TOKEN_SCOPE: "The bearer token lacks the scope the OAuth server setting requires.",
    Reason.AUTH_SERVER_FAILED: "The OAuth authorization server could not be asked (timeout, HTTP error, refused); "
                               "the phone was told to retry (503).",
    Reason.BEARER_NOT_ALLOWED: "The phone sent an OAuth bearer token, but the extension takes digest passwords only.",
    Reason.DIGEST_NOT_ALLOWED: "The phone answered with a password (digest), but the extension takes OAuth bearer "
                               "tokens only.",
    Reason.NOT_REGISTERED: "The device subscribed to registration state without a live registration from its "
                           "address (its REGISTER failed or expired).",
}
