"""A form screen whose unsaved input survives leaving it (``client.services.drafts`` keeps it)."""

from __future__ import annotations

from typing import Any

from client.i18n import tr
from client.services.drafts import changed_fields, drop_draft, keep_draft, restore_draft
from client.ui.widgets import PRIMARY, BigButton, BigLabel, Page, Question


class DraftForm(Page):
    """A form kept as a draft whenever the user leaves it, until it is saved or discarded.

    A subclass calls ``open_form`` in ``refresh`` before building its widgets from ``self.draft``
    (the form's values: a service's form dataclass), copies its text fields into ``self.draft``
    in ``read_widgets``, and calls ``form_saved`` once its service saved the form. The app calls
    ``keep_draft`` before the app goes to the background, stops or is rebuilt in another language.
    """

    def __init__(self, app, **kwargs):
        super().__init__(app, **kwargs)
        self.draft: Any = None
        self.kept_at = None
        self.popup: Question | None = None
        self._opened: Any = None
        self._key = ""
        self._session = None

    def open_form(self, key: str, opened: Any) -> None:
        """Show the form ``opened`` (as loaded) with the draft ``key`` put back on top."""
        # Opened again while it shows (another visit chosen): what it holds is kept first.
        self.keep_draft()
        restored = restore_draft(self.app.session, key, opened)
        self._key, self._opened, self.draft, self.kept_at = key, opened, restored.form, restored.kept_at
        self._session = self.app.session

    def read_widgets(self) -> None:
        """Copy what only the widgets hold (typed text, a spinner's choice) into ``self.draft``."""

    def keep_draft(self) -> None:
        session = self.app.session
        if self.draft is None or session is None or session is not self._session or session.store.closed:
            # Saved, discarded, or opened in a session that has ended (re-lock: it was kept as
            # the app paused; sign-out or wipe: it must never reach the next account's store).
            return
        from sync.errors import StorageError

        self.read_widgets()
        try:
            keep_draft(session, self._key, self.draft, self._opened)
        except StorageError:
            # A full or broken disk: this may run as the app goes to the background, where an
            # exception would end it; the form still holds the input while the app lives.
            self.app.toast(tr("form.error.storage"), seconds=4.0)

    def form_saved(self) -> None:
        """The service saved the form: its draft goes (the saved record names its photos)."""
        drop_draft(self.app.session, self._key)
        self.draft = None

    def add_restored_notice(self) -> None:
        if self.kept_at is not None:
            # A no-break space: the day and the time stay on one line when the notice wraps.
            when = self.kept_at.astimezone().strftime("%m-%d\u00a0%H:%M")
            self.body.add_widget(BigLabel(tr("draft.restored", when=when), color=PRIMARY))

    def add_discard_button(self) -> None:
        self.discard_button = BigButton(tr("draft.discard"))
        self.discard_button.bind(on_release=lambda *_: self.ask_discard())
        self.body.add_widget(self.discard_button)

    def ask_discard(self) -> None:
        """Ask before throwing away typed words or photos; a form with nothing in it just closes."""
        self.read_widgets()
        if self.kept_at is None and not changed_fields(self.draft, self._opened):
            self.discard()
            return
        self.popup = Question(tr("draft.discard_title"), tr("draft.discard_question"), tr("draft.keep_editing"),
                              tr("draft.discard"), on_go=self.discard)
        self.popup.open()

    def discard(self) -> None:
        drop_draft(self.app.session, self._key)
        self.draft = None
        self.go_back()
