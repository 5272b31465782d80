"""First run (server and enrollment code), the PIN, and the end-of-life notice."""

from __future__ import annotations

import threading

from kivy.logger import Logger
from kivy.metrics import dp

from client.i18n import tr
from client.services.setup import SetupError, lock_wait
from client.ui.widgets import PRIMARY, WARNING, BigButton, BigInput, BigLabel, Page, Question, on_ui_thread
from client.vault import VaultLocked, WrongPin


class FirstRunScreen(Page):
    title_key = "setup.title"
    back_to = None

    def __init__(self, app, **kwargs):
        super().__init__(app, **kwargs)
        self.body.add_widget(BigLabel(tr("setup.intro")))
        self.body.add_widget(BigLabel(tr("setup.server")))
        self.server_input = BigInput(hint_text=tr("setup.server_hint"))
        self.body.add_widget(self.server_input)
        self.body.add_widget(BigLabel(tr("setup.code")))
        self.code_input = BigInput(multiline=True, lines=2, hint_text=tr("setup.code_hint"))
        self.body.add_widget(self.code_input)
        self.enroll_button = BigButton(tr("setup.enroll"), primary=True)
        self.enroll_button.bind(on_release=lambda *_: self.enroll())
        self.body.add_widget(self.enroll_button)
        self.error_label = BigLabel("", color=WARNING)
        self.body.add_widget(self.error_label)

    def refresh(self) -> None:
        self.server_input.text = self.server_input.text or self.app.settings.get("server_url", "")

    def enroll(self) -> None:
        """Enroll on a worker thread: a slow or absent network must not freeze the screen."""
        if self.enroll_button.disabled:
            return
        self.error_label.text = tr("setup.enrolling")
        self.enroll_button.disabled = True
        server, code = self.server_input.text, self.code_input.text

        def work() -> None:
            try:
                pending = self.app.setup.enroll(server, code, label=self.app.device_label)
            except SetupError as exc:
                failure = exc
                on_ui_thread(lambda: self._failed(failure))
                return
            except Exception:  # noqa: BLE001 - whatever it was, the screen must not wait forever
                Logger.exception("FieldLoop: enrollment failed")
                on_ui_thread(lambda: self._failed(SetupError("setup.error.unexpected")))
                return
            on_ui_thread(lambda: self._enrolled(pending))

        threading.Thread(target=work, name="fieldloop-enroll", daemon=True).start()

    def _failed(self, exc: SetupError) -> None:
        self.enroll_button.disabled = False
        self.error_label.text = tr(exc.reason, **exc.values)

    def _enrolled(self, pending) -> None:
        self.enroll_button.disabled = False
        self.error_label.text = ""
        self.app.pending_enrollment = pending
        self.app.go("pin", mode="set")


class PinScreen(Page):
    title_key = "pin.title"
    back_to = None

    def __init__(self, app, **kwargs):
        super().__init__(app, **kwargs)
        self.mode = "unlock"
        self.prompt = BigLabel("", size_sp=22)
        self.body.add_widget(self.prompt)
        # input_type "number": Android shows the big digit keypad, not the full keyboard.
        self.pin_input = BigInput(password=True, input_filter="int", input_type="number", hint_text=tr("pin.hint"))
        self.body.add_widget(self.pin_input)
        self.again_label = BigLabel(tr("pin.again"))
        self.again_input = BigInput(password=True, input_filter="int", input_type="number")
        self.body.add_widget(self.again_label)
        self.body.add_widget(self.again_input)
        self.ok_button = BigButton(tr("common.ok"), primary=True)
        self.ok_button.bind(on_release=lambda *_: self.submit())
        self.body.add_widget(self.ok_button)
        self.error_label = BigLabel("", color=WARNING)
        self.body.add_widget(self.error_label)
        # Secondary on purpose: plain, below the message, wrapped over two lines.
        self.forgot_button = BigButton(tr("pin.forgot"), height=dp(88), halign="center", valign="middle")
        self.forgot_button.bind(width=lambda b, w: setattr(b, "text_size", (w - dp(16), None)))
        self.forgot_button.bind(on_release=lambda *_: self.confirm_erase())
        self.body.add_widget(self.forgot_button)
        self.popup: Question | None = None

    def refresh(self) -> None:
        setting = self.mode == "set"
        self.forgot_button.opacity = 0 if setting else 1
        self.forgot_button.disabled = setting
        self.prompt.text = tr("pin.set_prompt") if setting else tr("pin.unlock_prompt")
        self.again_label.opacity = self.again_input.opacity = 1 if setting else 0
        self.again_input.disabled = not setting
        self.again_label.height = self.again_input.height = dp(56) if setting else 0
        self.pin_input.text = self.again_input.text = ""
        self.error_label.text = ""

    def submit(self) -> None:
        """Check the PIN on a worker thread: scrypt takes most of a second on a cheap phone."""
        if self.ok_button.disabled:
            return
        pin, again, mode = self.pin_input.text, self.again_input.text, self.mode
        self.ok_button.disabled = True

        def work() -> None:
            try:
                if mode == "set":
                    session = self.app.setup.set_pin(self.app.pending_enrollment, pin, again)
                else:
                    session = self.app.setup.unlock(pin)
            except (SetupError, WrongPin, VaultLocked) as exc:
                failure = exc
                on_ui_thread(lambda: self._refused(failure))
                return
            except Exception:  # noqa: BLE001 - whatever it was, the screen must not wait forever
                Logger.exception("FieldLoop: PIN check failed")
                on_ui_thread(lambda: self._refused(SetupError("setup.error.damaged")))
                return
            on_ui_thread(lambda: self._opened(session))

        threading.Thread(target=work, name="fieldloop-pin", daemon=True).start()

    def _refused(self, exc: Exception) -> None:
        self.ok_button.disabled = False
        if isinstance(exc, SetupError):
            self.error_label.text = tr(exc.reason, **exc.values)
        elif isinstance(exc, WrongPin):
            self.pin_input.text = ""
            if exc.locked_for:
                key, values = lock_wait(exc.locked_for)
                self.error_label.text = tr(key, **values)
            else:
                self.error_label.text = tr("pin.wrong", left=exc.attempts_left)
        elif isinstance(exc, VaultLocked):
            key, values = lock_wait(exc.seconds)
            self.error_label.text = tr(key, **values)

    def confirm_erase(self) -> None:
        """Say plainly what erasing costs; keeping the data is the first and highlighted choice."""
        if self.ok_button.disabled:  # a PIN is being checked: let it finish first
            return
        self.popup = Question(tr("pin.forgot.title"), tr("pin.forgot.warning"), tr("pin.forgot.keep"),
                              tr("pin.forgot.erase"), on_go=self.erase)
        self.keep_button, self.erase_button = self.popup.keep_button, self.popup.go_button
        self.popup.open()

    def erase(self) -> None:
        try:
            self.app.enroll_again()
        except SetupError as exc:
            self.error_label.text = tr(exc.reason, **exc.values)

    def _opened(self, session) -> None:
        self.ok_button.disabled = False
        if self.mode == "set":
            self.app.pending_enrollment = None
        self.app.open_session(session)


class NoticeScreen(Page):
    """Said once, plainly: the device was erased, or retired."""

    title_key = "notice.title"
    back_to = None

    def __init__(self, app, **kwargs):
        super().__init__(app, **kwargs)
        self.text_label = BigLabel("", size_sp=24, color=PRIMARY)
        self.body.add_widget(self.text_label)
        self.next_button = BigButton(tr("common.ok"), primary=True)
        self.next_button.bind(on_release=lambda *_: self.app.after_notice())
        self.body.add_widget(self.next_button)
        self.key = "notice.wiped"

    def refresh(self) -> None:
        self.text_label.text = tr(self.key)
