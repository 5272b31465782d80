"""The device's identity: an Ed25519 key pair, made on the device, and the id the server gave it.

The private key never leaves the device: it is kept in the store's meta, sealed by the store's
cipher like everything else, and used only to sign token requests (protocol section 3).
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared_schema.messages import token_message
from sync.client.store import META_DEVICE_ID, LocalStore
from sync.errors import NotEnrolled

META_PRIVATE_KEY = "identity.private_key"


class DeviceIdentity:
    """This device's key pair and server-assigned id, kept in the local store.

    The key pair is made the first time the identity is opened on a store and read back
    afterwards.

    Args:
        store: where the private key (sealed) and the device id live.
    """

    def __init__(self, store: LocalStore):
        self._store = store
        raw = store.get_meta(META_PRIVATE_KEY)
        if raw is None:
            key = Ed25519PrivateKey.generate()
            raw_bytes = key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            store.set_meta(META_PRIVATE_KEY, base64.b64encode(raw_bytes).decode())
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(raw))
        self._key = key

    @property
    def device_id(self) -> str | None:
        """The id the server gave this device at enrollment, or None before it."""
        return self._store.get_meta(META_DEVICE_ID)

    def set_device_id(self, device_id: str) -> None:
        """Remember the id the server gave this device."""
        self._store.set_meta(META_DEVICE_ID, device_id)

    def public_key_b64(self) -> str:
        """The raw 32-byte Ed25519 public key, base64 (what enrollment sends)."""
        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def sign_token_request(self, nonce: str) -> str:
        """Sign ``token_message(device_id, nonce)`` and return the signature, base64.

        Raises:
            NotEnrolled: the device has no id yet.
        """
        device_id = self.device_id
        if device_id is None:
            raise NotEnrolled("this device is not enrolled")
        return base64.b64encode(self._key.sign(token_message(device_id, nonce))).decode()
