"""The sync screen (progress, what happened, conflicts and rejections) and settings."""

from __future__ import annotations

from kivy.metrics import dp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.progressbar import ProgressBar

from client.i18n import LANGUAGES, tr
from client.services.setup import SetupError, UnsyncedEdits, normalise_server_url
from client.services.words import conflict_notices, dismiss, outcome_text, rejection_notices, set_aside_notices
from client.ui.widgets import MUTED, PRIMARY, WARNING, BigButton, BigInput, BigLabel, BigToggle, Page, Question, plain


class SyncScreen(Page):
    title_key = "sync.title"

    def __init__(self, app, **kwargs):
        super().__init__(app, **kwargs)
        self.start = False
        self.progress_bar = ProgressBar(max=1.0, value=0, size_hint_y=None, height=dp(28))
        self.phase_label = BigLabel("", color=MUTED)
        self.outcome_label = BigLabel("", size_sp=22)
        self.pending_label = BigLabel("", bold=True)
        self.sync_button = BigButton(tr("sync.now"), primary=True)
        self.sync_button.bind(on_release=lambda *_: self.app.start_sync())
        self.notices_box = BoxLayout(orientation="vertical", spacing=dp(8), size_hint_y=None)
        self.notices_box.bind(minimum_height=self.notices_box.setter("height"))
        for widget in (self.progress_bar, self.phase_label, self.outcome_label, self.pending_label, self.sync_button,
                       self.notices_box):
            self.body.add_widget(widget)

    def refresh(self) -> None:
        session = self.app.session
        if session is None or session.closed:
            return
        runner = self.app.sync
        self.sync_button.disabled = runner.running or runner.retired()
        self.outcome_label.text = tr("sync.running") if runner.running else outcome_text(runner.last or self._stored())
        self.pending_label.text = tr("home.pending", count=session.pending_count())
        self.notices_box.clear_widgets()
        notices = set_aside_notices(session) + conflict_notices(session, unseen_only=True) + rejection_notices(session)
        if notices:
            self.notices_box.add_widget(BigLabel(tr("sync.notices"), bold=True, color=PRIMARY))
        for notice in notices:
            self.notices_box.add_widget(BigLabel(f"[b]{plain(notice.title)}[/b]\n{plain(notice.body)}", markup=True,
                                                 color=WARNING))
            seen = BigButton(tr("sync.understood"), height=dp(52))
            seen.bind(on_release=lambda _b, n=notice: self._dismiss(n))
            self.notices_box.add_widget(seen)
        if self.start:
            self.start = False
            self.app.start_sync()

    def _stored(self):
        from client.services.sync_runner import SyncOutcome

        raw = self.app.session.last_sync()
        return SyncOutcome.from_dict(raw) if raw else None

    def _dismiss(self, notice) -> None:
        dismiss(self.app.session, notice)
        self.refresh()

    def show_progress(self, view) -> None:
        self.progress_bar.value = view.fraction
        self.phase_label.text = tr("sync.phase." + view.phase) if view.phase else ""
        self.outcome_label.text = tr("sync.running")
        self.sync_button.disabled = True

    def show_done(self, outcome) -> None:
        self.progress_bar.value = 1.0 if outcome.state.value == "done" else 0
        self.phase_label.text = ""
        self.refresh()


class SettingsScreen(Page):
    title_key = "settings.title"

    def refresh(self) -> None:
        self.body.clear_widgets()
        session = self.app.session
        account = session.account
        self.body.add_widget(BigLabel(tr("settings.user", name=account.user_name, role=tr("role." + account.role))))
        grids = tr("common.list_separator").join(g.get("name", "") for g in account.grids)
        self.body.add_widget(BigLabel(tr("settings.grids", grids=grids), color=MUTED))
        self.body.add_widget(BigLabel(tr("settings.language"), bold=True))
        row = BoxLayout(size_hint_y=None, height=dp(60), spacing=dp(8))
        for language in LANGUAGES:
            button = BigToggle(tr("language." + language), group="language",
                               state="down" if language == self.app.language else "normal")
            button.bind(on_release=lambda _b, lang=language: self.app.set_language(lang))
            row.add_widget(button)
        self.body.add_widget(row)
        self.body.add_widget(BigLabel(tr("settings.server"), bold=True))
        self.server_input = BigInput(text=self.app.settings.get("server_url", account.server_url))
        self.body.add_widget(self.server_input)
        save = BigButton(tr("settings.save_server"))
        save.bind(on_release=lambda *_: self.save_server())
        self.body.add_widget(save)
        self.info_label = BigLabel("", color=WARNING)
        self.body.add_widget(self.info_label)
        sign_out = BigButton(tr("settings.sign_out"))
        sign_out.bind(on_release=lambda *_: self.sign_out())
        self.body.add_widget(sign_out)

    def save_server(self) -> None:
        try:
            url = normalise_server_url(self.server_input.text)
        except SetupError as exc:
            self.info_label.text = tr(exc.reason)
            return
        self.app.change_server(url)
        self.info_label.text = tr("settings.server_saved")

    def sign_out(self, force: bool = False) -> None:
        try:
            self.app.sign_out(force=force)
        except UnsyncedEdits as exc:
            self._confirm(exc)

    def _confirm(self, unsynced: UnsyncedEdits) -> None:
        warnings = [tr("settings.unsynced_warning", count=unsynced.count)] if unsynced.count else []
        if unsynced.drafts:
            warnings.append(tr("settings.drafts_warning", count=unsynced.drafts))
        self.popup = Question(tr("settings.sign_out"), "\n".join(warnings), tr("settings.keep"),
                              tr("settings.erase_anyway"), on_go=lambda: self.sign_out(force=True))
        self.popup.open()
