"""Patrol, diary, and my cases."""

from __future__ import annotations

from kivy.metrics import dp
from kivy.uix.gridlayout import GridLayout

from client.i18n import tr
from client.services import cases as case_service
from client.services.diary import DiaryForm, diary_entries, write_diary
from client.services.drafts import DIARY_KEY
from client.services.field_limits import FormInvalid
from client.services.patrols import COMMON_HAZARDS
from client.ui.draft_form import DraftForm
from client.ui.widgets import (
    MUTED,
    PRIMARY,
    WARNING,
    BigButton,
    BigInput,
    BigLabel,
    BigToggle,
    Page,
    photo_refusal,
    plain,
)


MAX_CASES_SHOWN = 50


def _grid(cols: int) -> GridLayout:
    grid = GridLayout(cols=cols, spacing=dp(6), size_hint_y=None)
    grid.bind(minimum_height=grid.setter("height"))
    return grid


class PatrolScreen(Page):
    title_key = "patrol.title"

    def __init__(self, app, **kwargs):
        super().__init__(app, **kwargs)
        self.refused_notes: str | None = None

    def refresh(self) -> None:
        self.body.clear_widgets()
        recorder = self.app.patrols
        running = recorder.current is not None
        self.state_label = BigLabel(tr("patrol.running") if running else tr("patrol.idle"), size_sp=22,
                                    color=PRIMARY if running else MUTED)
        self.body.add_widget(self.state_label)
        if not recorder.has_gps:
            self.body.add_widget(BigLabel(tr("patrol.no_gps"), color=MUTED))
        self.toggle_button = BigButton(tr("patrol.stop") if running else tr("patrol.start"), primary=True)
        self.toggle_button.bind(on_release=lambda *_: self.toggle())
        self.body.add_widget(self.toggle_button)
        self.error_label = BigLabel("", color=WARNING)  # beside the button: a refused stop says why here
        self.body.add_widget(self.error_label)
        if not running:
            return
        state = recorder.current
        self.body.add_widget(BigLabel(tr("patrol.hazards"), bold=True))
        hazards = _grid(2)
        for hazard in COMMON_HAZARDS:
            button = BigToggle(tr("hazard." + hazard), state="down" if hazard in state.hazards else "normal")
            button.bind(on_release=lambda b, h=hazard: self._hazard(h, b))
            hazards.add_widget(button)
        self.body.add_widget(hazards)
        notes = self.refused_notes if self.refused_notes is not None else state.notes
        self.notes_input = BigInput(multiline=True, lines=3, text=notes, hint_text=tr("patrol.notes"))
        self.body.add_widget(self.notes_input)
        self.info_label = BigLabel("", color=MUTED)
        self.body.add_widget(self.info_label)
        photo = BigButton(tr("photo.add"))
        photo.bind(on_release=lambda *_: self.app.pick_photo(self.add_photo))
        self.body.add_widget(photo)
        self._show_info()

    def keep_draft(self) -> None:
        # A patrol is a record saved at every step: its notes too are saved when the user
        # leaves the screen (or the app goes to the background), not kept as a draft.
        recorder = self.app.patrols
        notes_input = getattr(self, "notes_input", None)
        if recorder is None or recorder.current is None or notes_input is None or self.app.session.store.closed:
            return
        try:
            recorder.set_notes(notes_input.text)
            self.refused_notes = None
        except FormInvalid:
            self.refused_notes = notes_input.text  # too long to store: shown again, and stopping says why

    def _show_info(self) -> None:
        state = self.app.patrols.current
        if state is not None:
            self.info_label.text = tr("patrol.info", photos=len(state.photos), points=len(state.track))

    def _hazard(self, hazard: str, button) -> None:
        if button.state == "down":
            try:
                self.app.patrols.add_hazard(hazard)
            except FormInvalid as exc:
                button.state = "normal"
                self.error_label.text = exc.text()
        else:
            button.state = "down"  # a hazard once noted stays noted (it is a union field)

    def add_photo(self, data: bytes) -> None:
        try:
            self.app.patrols.add_photo(data)
        except ValueError as exc:
            self.error_label.text = photo_refusal(exc)
            return
        self.error_label.text = ""
        self._show_info()

    def toggle(self) -> None:
        recorder = self.app.patrols
        if recorder.current is None:
            try:
                recorder.start()
            except FormInvalid as exc:
                self.error_label.text = exc.text()
                return
        else:
            try:
                recorder.stop(notes=self.notes_input.text)
            except FormInvalid as exc:
                self.error_label.text = exc.text()  # the patrol goes on, the notes stay in the field
                return
            self.refused_notes = None
            self.app.toast(tr("patrol.saved"))
            self.app.after_edit()
        self.refresh()
        self.to_top()


class DiaryScreen(DraftForm):
    title_key = "diary.title"

    def refresh(self) -> None:
        self.open_form(DIARY_KEY, DiaryForm())
        self.body.clear_widgets()
        self.add_restored_notice()
        self.body.add_widget(BigLabel(tr("diary.prompt")))
        self.text_input = BigInput(multiline=True, lines=5, text=self.draft.text)
        self.body.add_widget(self.text_input)
        self.save_button = BigButton(tr("common.save"), primary=True)
        self.save_button.bind(on_release=lambda *_: self.save())
        self.body.add_widget(self.save_button)
        self.error_label = BigLabel("", color=WARNING)
        self.body.add_widget(self.error_label)
        self.add_discard_button()
        for entry in diary_entries(self.app.session, limit=30):
            when = str(entry.fields.get("written_at", ""))[:16].replace("T", " ")
            text = plain(entry.fields.get("text", ""))
            self.body.add_widget(BigLabel(f"[b]{plain(when)}[/b]  {text}", markup=True))

    def read_widgets(self) -> None:
        self.draft.text = self.text_input.text

    def save(self) -> None:
        self.read_widgets()
        try:
            write_diary(self.app.session, self.draft.text)
        except FormInvalid as exc:
            self.error_label.text = exc.text()
            return
        self.form_saved()
        self.app.toast(tr("diary.saved"))
        self.app.after_edit()
        self.refresh()


class CasesScreen(Page):
    title_key = "cases.title"

    def __init__(self, app, **kwargs):
        super().__init__(app, **kwargs)
        self.focus = ""

    def refresh(self) -> None:
        self.body.clear_widgets()
        new = BigButton(tr("cases.report_new"), primary=True)
        new.bind(on_release=lambda *_: self.app.go("case_form", household_id=""))
        self.body.add_widget(new)
        self.error_label = BigLabel("", color=WARNING)
        self.body.add_widget(self.error_label)
        self.feedback_inputs = {}
        rows = case_service.my_cases(self.app.session)
        if not rows:
            self.body.add_widget(BigLabel(tr("cases.none"), color=MUTED))
        if len(rows) > MAX_CASES_SHOWN:
            # Those waiting on the user come first; a cheap phone should not build hundreds of rows.
            self.body.add_widget(BigLabel(tr("cases.more", shown=MAX_CASES_SHOWN, total=len(rows)), color=MUTED))
            rows = rows[:MAX_CASES_SHOWN]
        for case in rows:
            text = (f"[b]{plain(case.title)}[/b]\n"
                    f"{tr('category.' + case.category)} · {tr('case.status.' + case.status)}")
            if case.department:
                text += " · " + tr("case.department", department=plain(case.department))
            if case.due_at:
                text += " · " + tr("case.due", due=plain(str(case.due_at)[:10]))
            if case.feedback:
                text += "\n" + tr("case.feedback_shown", feedback=plain(case.feedback))
            self.body.add_widget(BigLabel(text, markup=True,
                                          color=WARNING if case.status == "overdue" else (0.1, 0.1, 0.1, 1)))
            if case.can_resolve:
                feedback = BigInput(multiline=True, lines=2, hint_text=tr("case.feedback_hint"))
                self.feedback_inputs[case.id] = feedback
                self.body.add_widget(feedback)
                resolve = BigButton(tr("case.resolve"))
                resolve.bind(on_release=lambda _b, cid=case.id: self.resolve(cid))
                self.body.add_widget(resolve)

    def resolve(self, case_id: str) -> None:
        try:
            case_service.resolve_case(self.app.session, case_id, self.feedback_inputs[case_id].text)
        except FormInvalid as exc:
            self.error_label.text = exc.text()
            return
        self.app.toast(tr("case.resolved"))
        self.app.after_edit()
        self.refresh()
