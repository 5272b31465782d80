"""The Kivy App: wires services to screens and runs sync off the UI thread."""

from __future__ import annotations

import importlib
import platform as host_platform
import threading
import time
from pathlib import Path
from typing import Any, Callable

from kivy.app import App
from kivy.clock import Clock
from kivy.core.window import Window
from kivy.graphics import Color, RoundedRectangle
from kivy.metrics import dp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.filechooser import FileChooserListView
from kivy.uix.label import Label
from kivy.uix.popup import Popup
from kivy.uix.screenmanager import NoTransition, ScreenManager

from client.fonts import register_cjk_default_font
from client.i18n import DEFAULT_LANGUAGE, set_language, tr
from client.phone.camera import Camera, default_camera
from client.phone.permissions import request_runtime_permissions
from client.phone.location import LocationProvider, default_location_provider
from client.services.patrols import PatrolRecorder
from client.services.session import Session
from client.services.setup import DataDir, DeviceSetup, PendingEnrollment, read_settings, write_settings
from client.services.sync_runner import BackgroundSync, SyncOutcome, SyncState
from client.ui.field import CasesScreen, DiaryScreen, PatrolScreen
from client.ui.forms import CaseFormScreen, VisitScreen
from client.ui.home import HomeScreen
from client.ui.households import HouseholdScreen, HouseholdsScreen
from client.ui.start import FirstRunScreen, NoticeScreen, PinScreen
from client.ui.sync_settings import SettingsScreen, SyncScreen
from client.ui.widgets import BACKGROUND, on_ui_thread

SCREENS = {
    "first_run": FirstRunScreen,
    "pin": PinScreen,
    "home": HomeScreen,
    "households": HouseholdsScreen,
    "household": HouseholdScreen,
    "visit": VisitScreen,
    "patrol": PatrolScreen,
    "diary": DiaryScreen,
    "cases": CasesScreen,
    "case_form": CaseFormScreen,
    "sync": SyncScreen,
    "settings": SettingsScreen,
    "notice": NoticeScreen,
}
# Back in the app after this long in the background: ask for the PIN again (a phone left on a bench).
RELOCK_AFTER_SECONDS = 300.0
PHOTO_PATTERNS = ["*.jpg", "*.jpeg", "*.png", "*.JPG", "*.JPEG", "*.PNG", "*.webp", "*.heic"]
AUTO_SYNC_SECONDS = 120.0


def _make_engine_quietly(session: Session) -> None:
    from sync.errors import SyncError

    try:
        session.engine
    except SyncError:
        pass  # the session was closed (signed out, app stopped) before the engine was needed


class FieldLoopApp(App):
    """The field app.

    Args:
        data_dir: the installation's folder.
        transport_factory / vault_factory: passed to DeviceSetup (tests point them at a live server).
        camera / location: the phone's, or fakes in tests.
        auto_sync: try syncing in the background every few minutes.
    """

    title = "FieldLoop"

    def __init__(self, data_dir: Path, *, transport_factory: Callable | None = None,
                 vault_factory: Callable | None = None,
                 camera: Camera | None = None, location: LocationProvider | None = None, auto_sync: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.data = DataDir(data_dir)
        setup_kwargs: dict[str, Any] = {}
        if transport_factory is not None:
            setup_kwargs["transport_factory"] = transport_factory
        if vault_factory is not None:
            setup_kwargs["vault_factory"] = vault_factory
        self.setup = DeviceSetup(self.data, **setup_kwargs)
        self._camera = camera
        self._location = location
        self.auto_sync = auto_sync
        self.session: Session | None = None
        self.sync: BackgroundSync | None = None
        self.patrols: PatrolRecorder | None = None
        self.pending_enrollment: PendingEnrollment | None = None
        self.settings = read_settings(self.data)
        self.language = self.settings.get("language", DEFAULT_LANGUAGE)
        self.device_label = f"FieldLoop {host_platform.node()}"[:100]
        self.manager: ScreenManager | None = None
        self.last_toast = ""

    # ---- building -------------------------------------------------------------------

    def build(self):
        register_cjk_default_font()
        # Import the sync stack (the HTTP client is the slow part) while the user types the PIN.
        threading.Thread(target=importlib.import_module, args=("sync.client",), name="fieldloop-warmup",
                         daemon=True).start()
        request_runtime_permissions()
        set_language(self.language)
        Window.clearcolor = BACKGROUND
        self.camera = self._camera or default_camera()
        self.location = self._location or default_location_provider()
        Window.bind(on_keyboard=self._on_key)
        self.manager = ScreenManager(transition=NoTransition())
        self._add_screens()
        self.go("pin" if self.setup.is_set_up() else "first_run", mode="unlock")
        return self.manager

    def _add_screens(self) -> None:
        for name, cls in SCREENS.items():
            self.manager.add_widget(cls(self, name=name))

    def screen(self, name: str):
        return self.manager.get_screen(name)

    def go(self, name: str, **attrs: Any) -> None:
        """Show a screen, first setting the attributes it reads in ``refresh`` (ids, modes)."""
        target = self.screen(name)
        for key, value in attrs.items():
            setattr(target, key, value)
        if self.manager.current == name:
            target.refresh()
        else:
            self.manager.current = name

    # ---- the session -----------------------------------------------------------------

    def open_session(self, session: Session) -> None:
        self.session = session
        self.sync = BackgroundSync(session, wipe_device=self._wipe_device, deliver=on_ui_thread,
                                   on_progress=self._sync_progress, on_done=self._sync_done)
        self.patrols = PatrolRecorder(session, self.location)
        self.go("home")
        # Make the engine (and import the HTTP stack) off the UI thread, while the user reads the home screen.
        threading.Thread(target=_make_engine_quietly, args=(session,), name="fieldloop-engine", daemon=True).start()
        if self.auto_sync:
            self.sync.start()
            self.sync.start_auto(AUTO_SYNC_SECONDS)

    def after_edit(self) -> None:
        """An edit was saved: send it now if the server is reachable (it waits safely if not)."""
        if self.auto_sync and self.sync is not None:
            self.sync.start()

    def start_sync(self) -> bool:
        if self.sync is None:
            return False
        started = self.sync.start()
        if started:
            self.screen("sync").outcome_label.text = tr("sync.running")
            self.screen("sync").sync_button.disabled = True
        return started

    def _sync_progress(self, view) -> None:
        self.screen("sync").show_progress(view)

    def _sync_done(self, outcome: SyncOutcome) -> None:
        if outcome.state is SyncState.WIPED:
            self._end_session()
            self.show_notice("notice.wiped")
            return
        if outcome.state is SyncState.RETIRED:
            self.show_notice("notice.retired")
            return
        current = self.manager.current
        if current == "sync":
            self.screen("sync").show_done(outcome)
        elif current in ("home", "households"):
            self.screen(current).refresh()

    def _wipe_device(self) -> None:
        # Called on the sync thread when the server says the phone was lost: erase everything now.
        if self.sync is not None:
            self.sync.stop_auto()
        self.setup.erase(self.session.store if self.session is not None else None)

    def _end_session(self) -> None:
        if self.sync is not None:
            self.sync.stop_auto()
        if self.session is not None:
            self.session.close()
        self.session = None
        self.sync = None
        self.patrols = None

    def show_notice(self, key: str) -> None:
        notice = self.screen("notice")
        notice.key = key
        self.go("notice")

    def after_notice(self) -> None:
        if self.session is None:
            self.go("first_run")
        else:
            self.go("home")

    def sign_out(self, force: bool = False) -> None:
        """Erase this device (raises UnsyncedEdits unless forced while edits wait)."""
        self.setup.sign_out(self.session, force=force)
        self._end_session()
        self.go("first_run")

    def enroll_again(self) -> None:
        """Forgot the PIN: erase this phone as a remote wipe does, then enroll with the same server.

        Raises SetupError when the erase failed; the PIN screen stays and says so.
        """
        self._end_session()
        self.pending_enrollment = None
        server = self.setup.erase_to_enroll_again()
        first = self.screen("first_run")
        first.server_input.text = server
        first.code_input.text = ""
        first.error_label.text = ""
        self.go("first_run")

    def change_server(self, url: str) -> None:
        self.settings = write_settings(self.data, server_url=url)
        if self.session is not None:
            self.session.change_server(url)

    def set_language(self, language: str) -> None:
        """Switch language and rebuild the screens, whose words are set when they are built.

        The form on screen is kept as a draft first, and every rebuilt screen is given back the
        record it showed, so the form comes back as it was, in the new language.
        """
        self.keep_draft()
        set_language(language)
        self.language = language
        self.settings = write_settings(self.data, language=language)
        current = self.manager.current
        shown = {name: {attr: getattr(self.screen(name), attr) for attr in cls.shows} for name, cls in SCREENS.items()}
        self.manager.clear_widgets()
        self._add_screens()
        for name, attrs in shown.items():
            for attr, value in attrs.items():
                setattr(self.screen(name), attr, value)
        self.go(current)

    def keep_draft(self) -> None:
        """Keep the unsaved input of the screen shown (the app is leaving it without a tap on Back)."""
        if self.manager is not None and self.manager.current_screen is not None:
            self.manager.current_screen.keep_draft()

    # ---- photos and messages -----------------------------------------------------------

    def pick_photo(self, on_photo: Callable[[bytes], None]) -> None:
        """The camera where there is one; on a desktop, a file chooser."""
        if self.camera.available:
            self.camera.take(lambda data: on_ui_thread(lambda: on_photo(data)))
            return
        chooser = FileChooserListView(path=str(Path.home()), filters=PHOTO_PATTERNS)
        box = BoxLayout(orientation="vertical")
        box.add_widget(chooser)
        popup = Popup(title=tr("photo.choose"), content=box, size_hint=(0.95, 0.95))

        def chosen(_chooser, selection, _touch):
            if selection:
                popup.dismiss()
                try:
                    data = Path(selection[0]).read_bytes()
                except OSError:  # moved or deleted since the list was shown, or not readable
                    self.toast(tr("photo.file_gone"), seconds=4.0)
                    return
                on_photo(data)

        chooser.bind(on_submit=chosen)
        popup.open()

    def toast(self, text: str, seconds: float = 2.0) -> None:
        """A short confirmation at the bottom; it takes no touches, so the next tap is never lost."""
        label = Label(text=text, font_size=dp(22), size_hint=(None, None), color=(1, 1, 1, 1))
        label.texture_update()
        label.size = (label.texture_size[0] + dp(32), label.texture_size[1] + dp(20))
        label.pos = ((Window.width - label.width) / 2, dp(40))
        with label.canvas.before:
            Color(0.15, 0.15, 0.15, 0.9)
            RoundedRectangle(pos=label.pos, size=label.size, radius=[dp(10)])
        self.last_toast = text
        Window.add_widget(label)
        Clock.schedule_once(lambda _dt: Window.remove_widget(label), seconds)

    def _on_key(self, _window, key: int, *_args) -> bool:
        # Android's back button (and Escape on a desktop) goes back a screen instead of closing the app.
        if key == 27 and self.manager is not None:
            screen = self.manager.current_screen
            if getattr(screen, "back_to", None):
                screen.go_back()
            return True
        return False

    def on_pause(self) -> bool:
        # Android may kill a paused app without another word: what the form holds is kept now.
        self.keep_draft()
        self._paused_at = time.monotonic()
        return True

    def on_resume(self) -> None:
        paused_for = time.monotonic() - getattr(self, "_paused_at", time.monotonic())
        if self.session is not None and paused_for > RELOCK_AFTER_SECONDS:
            if self.patrols is not None and self.patrols.current is not None:
                return  # a patrol is recording its track: keep it open
            self._end_session()
            self.go("pin", mode="unlock")

    def on_stop(self) -> None:
        self.keep_draft()
        if self.patrols is not None and self.patrols.current is not None:
            self.patrols.stop()
        self._end_session()
