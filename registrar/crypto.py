"""Secrets Regis must be able to read back: trunk passwords.

Digest needs the password itself on the client side (the realm and algorithm are only
known from the server's challenge), so it cannot be stored as a hash. It is encrypted
with Fernet (AES-128-CBC + HMAC-SHA256, from the cryptography package) under a key
derived from SECRET_KEY, or from TRUNK_SECRET_KEY when set so that the two can be
rotated apart. A database dump alone does not reveal it.
"""
import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class UnreadableSecret(Exception):
    """The stored secret was encrypted under another key."""


def _fernet() -> Fernet:
    material = getattr(settings, "TRUNK_SECRET_KEY", "") or settings.SECRET_KEY
    key = hashlib.sha256(b"regis trunk passwords\x00" + material.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except (InvalidToken, ValueError) as error:
        raise UnreadableSecret("the stored password was encrypted under another key") from error
