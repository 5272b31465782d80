"""From a new phone to an unlocked app: enroll with the server, set a PIN, unlock, sign out.

The order the user sees is server and code first, then the PIN. The data key is made before
enrollment (the device's signing key lives in the encrypted store) and held in memory until
the PIN wraps it; a first run interrupted before the PIN leaves a store nobody can open,
which the next start erases and begins again.
"""

from __future__ import annotations

import json
import math
import unicodedata
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from client.i18n import DEFAULT_LANGUAGE, LANGUAGES
from client.services.drafts import draft_count
from client.services.session import Account, Session, load_account, save_account
from client.vault import PinRejected, Vault, VaultDamaged, check_new_pin

APP_VERSION = "0.1.0"
ENROLL_SCHEME = "fieldloop"
MAX_CODE_LENGTH = 64  # what the server reads (shared_schema.messages.EnrollRequest)


class SetupError(Exception):
    """A step of set-up failed; ``reason`` is a catalog key the screen shows."""

    def __init__(self, reason: str, **values: Any):
        super().__init__(reason)
        self.reason = reason
        self.values = values


class UnsyncedEdits(Exception):
    """Signing out would lose edits that never reached the server (``count``), or forms left
    unsaved (``drafts``)."""

    def __init__(self, count: int, drafts: int = 0):
        super().__init__(f"{count} edits not yet synced, {drafts} drafts not saved")
        self.count = count
        self.drafts = drafts


@dataclass(frozen=True)
class EnrollmentText:
    server_url: str | None
    code: str


_IDEOGRAPHIC_FULL_STOP_AS_DOT = {0x3002: "."}


def _typed(text: str) -> str:
    """What a Chinese keyboard may have typed, as ASCII where it meant ASCII.

    Fullwidth letters, digits, colons and ampersands become their ASCII forms (NFKC), and the
    ideographic full stop 。 a dot (as IDNA reads it in host names).
    """
    return unicodedata.normalize("NFKC", text).translate(_IDEOGRAPHIC_FULL_STOP_AS_DOT)


def parse_enrollment_text(text: str) -> EnrollmentText:
    """Read what the user typed or the console's QR code held.

    Accepts ``fieldloop://enroll?server=URL&code=CODE`` (also inside a scanner's longer text)
    and a bare code; raises SetupError for a QR text that repeats a parameter with another value.
    """
    text = _typed(text).strip()
    start = text.lower().find(f"{ENROLL_SCHEME}://")
    if start >= 0:
        parsed = urllib.parse.urlsplit(text[start:])
        query = urllib.parse.parse_qs(parsed.query)
        codes, servers = set(query.get("code") or []), set(query.get("server") or [])
        if len(codes) > 1 or len(servers) > 1:
            raise SetupError("setup.error.bad_qr")
        server = next(iter(servers), None)
        return EnrollmentText(normalise_server_url(server) if server else None, clean_code(next(iter(codes), "")))
    return EnrollmentText(None, clean_code(text))


def clean_code(text: str) -> str:
    """An enrollment code as typed, without spaces; SetupError if it cannot be one."""
    code = "".join(_typed(text).split())
    if not code:
        raise SetupError("setup.error.no_code")
    if len(code) > MAX_CODE_LENGTH or not all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in code):
        raise SetupError("setup.error.code_format")
    return code


def normalise_server_url(url: str) -> str:
    """``192.168.1.5:8000`` becomes ``http://192.168.1.5:8000``; a trailing slash goes.

    Raises SetupError for what cannot be a server's address: no host, a port that is not
    1 to 65535, spaces inside, a query or fragment, another scheme.
    """
    url = _typed(url).strip()
    if not url:
        raise SetupError("setup.error.no_server")
    if "://" not in url:
        url = "http://" + url
    try:
        parsed = urllib.parse.urlsplit(url)
        port = parsed.port
    except ValueError:  # a port past 65535 or not a number, a bracket left open
        raise SetupError("setup.error.bad_server") from None
    if (parsed.scheme not in ("http", "https") or not parsed.hostname or port == 0 or parsed.query
            or parsed.fragment or len(url) > 2000 or any(ch.isspace() for ch in url)):
        raise SetupError("setup.error.bad_server")
    return url.rstrip("/")


class DataDir:
    """Where an installation keeps its files."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def vault(self) -> Path:
        return self.root / "vault.json"

    @property
    def store(self) -> Path:
        return self.root / "store.sqlite"

    @property
    def settings(self) -> Path:
        # Not secret: the language and the server address, needed before the PIN is typed.
        return self.root / "settings.json"


def read_settings(data_dir: DataDir) -> dict:
    """The settings file's values the app can use: an edited file must not stop the app.

    A file that is no JSON object reads as empty; a server address that is no text, or a
    language the app does not have, is left out (the app then starts as on a new phone).
    """
    try:
        settings = json.loads(data_dir.settings.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(settings, dict):
        return {}
    if not isinstance(settings.get("server_url", ""), str):
        del settings["server_url"]
    if settings.get("language", DEFAULT_LANGUAGE) not in LANGUAGES:
        del settings["language"]
    return settings


def write_settings(data_dir: DataDir, **changes: Any) -> dict:
    settings = read_settings(data_dir) | changes
    data_dir.root.mkdir(parents=True, exist_ok=True)
    data_dir.settings.write_text(json.dumps(settings, ensure_ascii=False), encoding="utf-8")
    return settings


@dataclass
class PendingEnrollment:
    """Enrolled with the server; waiting for the user to choose a PIN."""

    session: Session
    data_key: bytes


def _default_transport(server_url: str):
    from sync.client.transport import HttpTransport

    return HttpTransport(server_url)


class DeviceSetup:
    """The device's lifecycle before a session exists, and its end.

    Args:
        data_dir: the installation's folder.
        transport_factory: server URL -> a sync transport (tests pass one at a fake or live server).
        vault_factory: path -> Vault (tests pass a cheaper scrypt or a movable clock).
    """

    def __init__(
        self,
        data_dir: DataDir,
        transport_factory: Callable[[str], Any] = _default_transport,
        vault_factory: Callable[[Path], Vault] = Vault,
        session_clock: Callable | None = None,
    ):
        self.data_dir = data_dir
        self.vault = vault_factory(data_dir.vault)
        self._transport_factory = transport_factory
        self._session_clock = session_clock

    def is_set_up(self) -> bool:
        return self.vault.exists() and self.data_dir.store.exists()

    def _open(self, data_key: bytes, server_url: str) -> tuple[Any, Callable[[], Any]]:
        """The store, and a function making its engine (imported only when first needed)."""
        from sync.client.cipher import AesGcmCipher
        from sync.client.store import LocalStore

        store = LocalStore(self.data_dir.store, AesGcmCipher(data_key))

        def make_engine() -> Any:
            from sync.client.engine import SyncEngine
            from sync.client.identity import DeviceIdentity

            return SyncEngine(store, self._transport_factory(server_url), DeviceIdentity(store),
                              forget_key=self.vault.destroy)

        return store, make_engine

    def _session(self, store: Any, engine: Any, account: Account) -> Session:
        extra = {}
        if self._session_clock is not None:
            # A test's own clock, not the engine's wall: where the boot clock stood against the
            # engine's wall (sync.client.boot_clock) says nothing of how this one was moved.
            extra = {"clock": self._session_clock, "boot_clock": lambda: None}
        return Session(store, engine, account, transport_factory=self._transport_factory, **extra)

    def enroll(self, server_url: str, code_text: str, label: str = "") -> PendingEnrollment:
        """Enroll this device with a one-time code. Raises SetupError with a reason for the user."""
        from sync.client.cipher import AesGcmCipher
        from sync.errors import AuthError, ProtocolError, SyncError, TransportError, UpgradeRequired

        parsed = parse_enrollment_text(code_text)
        server = parsed.server_url or normalise_server_url(server_url)
        # A store without a vault is the remains of an interrupted first run: nobody can open it.
        self.erase()
        data_key = AesGcmCipher.generate_key()
        store, make_engine = self._open(data_key, server)
        engine = make_engine()
        try:
            reply = engine.enroll(parsed.code, label=label or "FieldLoop", app_version=APP_VERSION)
        except TransportError:
            store.wipe()
            raise SetupError("setup.error.unreachable", server=server) from None
        except AuthError:
            store.wipe()
            raise SetupError("setup.error.code_refused") from None
        except UpgradeRequired:
            store.wipe()
            raise SetupError("setup.error.upgrade") from None
        except ProtocolError as exc:
            store.wipe()
            if exc.status in (404, 405):  # something answers there, but not a FieldLoop server
                raise SetupError("setup.error.not_fieldloop", server=server) from None
            raise SetupError("setup.error.failed", detail=str(exc)) from None
        except SyncError as exc:
            store.wipe()
            raise SetupError("setup.error.failed", detail=str(exc)) from None
        account = account_from_enroll_reply(reply, server)
        save_account(store, account)
        write_settings(self.data_dir, server_url=server)
        return PendingEnrollment(self._session(store, engine, account), data_key)

    def set_pin(self, pending: PendingEnrollment, pin: str, pin_again: str) -> Session:
        """Choose the PIN that wraps the data key; the app is set up from here on."""
        from client.vault import PinRejected

        try:
            check_new_pin(pin)
        except PinRejected:
            raise SetupError("pin.error.format") from None
        if pin != pin_again:
            raise SetupError("pin.error.mismatch")
        self.vault.create(pin, pending.data_key)
        return pending.session

    def unlock(self, pin: str) -> Session:
        """Open the store with the PIN. Raises the vault's WrongPin or VaultLocked, or SetupError.

        A PIN that cannot be one (empty, letters, too short or long) is refused without counting
        as a wrong PIN: it can never open the vault, and a stray tap must not bring the lock nearer.
        """
        from sync.errors import StorageError

        pin = _typed(pin)
        try:
            check_new_pin(pin)
        except PinRejected:
            raise SetupError("pin.error.format") from None
        try:
            data_key = self.vault.unlock(pin)
        except VaultDamaged:
            raise SetupError("setup.error.damaged") from None
        server = read_settings(self.data_dir).get("server_url", "")
        try:
            store, make_engine = self._open(data_key, server)
            account = load_account(store)
        except StorageError:
            raise SetupError("setup.error.damaged") from None
        if account is None:
            store.close()
            raise SetupError("setup.error.damaged")
        return self._session(store, make_engine, account)

    def sign_out(self, session: Session | None, *, force: bool = False) -> None:
        """Erase this device's data, drafts included. Refuses (UnsyncedEdits) while edits wait
        or drafts are kept, unless forced."""
        if session is not None and not force:
            pending, drafts = session.pending_count(), draft_count(session)
            if pending or drafts:
                raise UnsyncedEdits(pending, drafts)
        if session is not None:
            session.closed = True
        self.erase(session.store if session is not None else None)

    def erase_to_enroll_again(self) -> str:
        """The way out for a forgotten PIN or a damaged store: erase this phone to enroll it again.

        The same erase as a remote wipe (``erase``): the store, its photos and the wrapped key go,
        and with them every edit not yet synced (without the PIN nobody can read them anyway).
        The settings stay; the saved server address is returned ("" if none) for the
        enrollment screen, where a new code from the administrator sets the phone up again.
        Raises SetupError when a file would not go (the phone's storage refused).
        """
        from sync.errors import StorageError

        try:
            self.erase()
        except (OSError, StorageError):
            raise SetupError("pin.forgot.failed") from None
        return read_settings(self.data_dir).get("server_url", "")

    def erase(self, open_store: Any = None) -> None:
        """Remove the wrapped key, the store and its blobs (the language setting stays).

        The key goes first: without it nothing left behind can be read, so a phone that dies
        halfway through (the store's wipe takes seconds on a cheap phone, the battery may be
        flat) leaks nothing even to someone who later guesses the PIN. ``open_store`` is a
        session's store, wiped through its own connection.
        """
        from sync.client.cipher import PlainCipher
        from sync.client.store import LocalStore, remove_store_files
        from sync.errors import StorageError

        self.vault.destroy()
        if open_store is not None and not open_store.closed:
            open_store.wipe()
        if self.data_dir.store.exists():
            # The key may be gone already: open it unencrypted only to wipe its files.
            try:
                LocalStore(self.data_dir.store, PlainCipher()).wipe()
            except StorageError:
                # A damaged file cannot be opened to be wiped; its files go all the same.
                remove_store_files(self.data_dir.store)
        blob_dir = self.data_dir.store.with_name(self.data_dir.store.name + ".blobs")
        if blob_dir.exists():
            import shutil

            shutil.rmtree(blob_dir, ignore_errors=True)


SECONDS_SHOWN_BELOW = 60.0


def lock_wait(seconds: float) -> tuple[str, dict[str, int]]:
    """How long a PIN lock still lasts, as a catalog key and its values.

    Whole minutes (rounded up) from a minute on, so an hour reads "60 minutes", not "3600
    seconds"; whole seconds (rounded up, at least 1) below a minute.
    """
    whole = max(math.ceil(seconds), 1)
    if whole >= SECONDS_SHOWN_BELOW:
        return "pin.locked_minutes", {"minutes": math.ceil(whole / 60)}
    return "pin.locked", {"seconds": whole}


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def account_from_enroll_reply(reply: Any, server_url: str) -> Account:
    user = _get(reply, "user", {})
    grids = [
        {"id": _get(g, "id"), "name": _get(g, "name", ""), "community": _get(g, "community", "")}
        for g in (_get(reply, "grids", []) or [])
    ]
    return Account(
        device_id=_get(reply, "device_id", ""),
        user_id=_get(user, "id", ""),
        user_name=_get(user, "name", ""),
        role=_get(user, "role", ""),
        server_url=server_url,
        grids=grids,
    )
