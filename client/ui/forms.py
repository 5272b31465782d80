"""The visit form and the case form."""

from __future__ import annotations

import datetime

from kivy.metrics import dp
from kivy.uix.gridlayout import GridLayout
from kivy.uix.spinner import Spinner

from client.i18n import tr
from client.services import cases as case_service
from client.services import visits as visit_service
from client.services.drafts import case_key, visit_key
from client.services.field_limits import FormInvalid
from client.services.words import conflict_notices
from client.ui.draft_form import DraftForm
from client.ui.widgets import (
    MUTED,
    PRIMARY,
    TEXT_SP,
    WARNING,
    BigButton,
    BigInput,
    BigLabel,
    BigToggle,
    PhotoStrip,
    photo_refusal,
)

FOLLOW_UP_CHOICES = (0, 3, 7, 30)  # days from today; 0 means none


def _grid(cols: int) -> GridLayout:
    grid = GridLayout(cols=cols, spacing=dp(6), size_hint_y=None)
    grid.bind(minimum_height=grid.setter("height"))
    return grid


class VisitScreen(DraftForm):
    title_key = "visit.title"
    back_to = "household"
    shows = ("household_id", "visit_id")

    def __init__(self, app, **kwargs):
        super().__init__(app, **kwargs)
        self.household_id = ""
        self.visit_id = ""
        self.draft: visit_service.VisitDraft | None = None

    def refresh(self) -> None:
        session = self.app.session
        if self.visit_id:
            opened = visit_service.load_visit(session, self.visit_id)
            self.household_id = opened.household_id
        else:
            opened = visit_service.new_visit(self.household_id)
        self.open_form(visit_key(opened.visit_id, opened.household_id), opened)
        self.app.screen("household").household_id = self.household_id
        self._build()

    def _build(self) -> None:
        draft, session = self.draft, self.app.session
        self.body.clear_widgets()
        row = session.households.get(draft.household_id)
        if row is not None:
            self.body.add_widget(BigLabel(f"{row.address} {row.place} {row.head_name}", bold=True, size_sp=22))
        self.add_restored_notice()
        if draft.review:
            verdict = tr("review." + str(draft.review.get("verdict", "")))
            self.body.add_widget(BigLabel(tr("visit.review", verdict=verdict, comment=draft.review.get("comment", "")),
                                          color=PRIMARY))
        if draft.visit_id:
            mine = {f"conflict:{c.cid}" for c in session.store.conflicts(entity="visit", id=draft.visit_id)}
            for notice in conflict_notices(session):
                if notice.key in mine:
                    self.body.add_widget(BigLabel(f"{notice.title}\n{notice.body}", color=WARNING))
        self.body.add_widget(BigLabel(tr("visit.method"), bold=True))
        methods = _grid(1)
        self.method_buttons = {}
        for method in visit_service.VISIT_METHODS:
            button = BigToggle(tr("method." + method), group="visit-method", allow_no_selection=False,
                               state="down" if method == draft.method else "normal")
            button.bind(on_release=lambda _b, m=method: setattr(self.draft, "method", m))
            self.method_buttons[method] = button
            methods.add_widget(button)
        self.body.add_widget(methods)
        self.body.add_widget(BigLabel(tr("visit.topics"), bold=True))
        topics = _grid(2)
        self.topic_buttons = {}
        for topic in visit_service.COMMON_TOPICS:
            button = BigToggle(tr("topic." + topic), state="down" if topic in draft.topics else "normal")
            button.bind(on_release=lambda b, t=topic: self._toggle_topic(t, b.state == "down"))
            self.topic_buttons[topic] = button
            topics.add_widget(button)
        self.body.add_widget(topics)
        self.body.add_widget(BigLabel(tr("visit.notes"), bold=True))
        self.notes_input = BigInput(multiline=True, lines=4, text=draft.notes)
        self.body.add_widget(self.notes_input)
        self.photo_label = BigLabel("", color=MUTED)
        self.body.add_widget(self.photo_label)
        self.photo_strip = PhotoStrip()
        self.body.add_widget(self.photo_strip)
        self.photo_button = BigButton(tr("photo.add"))
        self.photo_button.bind(on_release=lambda *_: self.app.pick_photo(self.add_photo))
        self.body.add_widget(self.photo_button)
        self.body.add_widget(BigLabel(tr("visit.follow_up"), bold=True))
        follow = _grid(4)
        today = session.today()
        self.follow_buttons = {}
        for days in FOLLOW_UP_CHOICES:
            chosen = (draft.follow_up_on is None and days == 0) or (
                draft.follow_up_on is not None and days and draft.follow_up_on == today + datetime.timedelta(days=days))
            button = BigToggle(tr("visit.follow_none") if days == 0 else tr("visit.follow_days", days=days),
                               group="follow-up", state="down" if chosen else "normal")
            button.bind(on_release=lambda _b, d=days: self._set_follow_up(d))
            self.follow_buttons[days] = button
            follow.add_widget(button)
        self.body.add_widget(follow)
        self.follow_label = BigLabel("", color=MUTED)
        self.body.add_widget(self.follow_label)
        self.save_button = BigButton(tr("common.save"), primary=True)
        self.save_button.bind(on_release=lambda *_: self.save())
        self.body.add_widget(self.save_button)
        self.error_label = BigLabel("", color=WARNING)
        self.body.add_widget(self.error_label)
        self.add_discard_button()
        self._show_state()

    def read_widgets(self) -> None:
        self.draft.notes = self.notes_input.text

    def _toggle_topic(self, topic: str, on: bool) -> None:
        if on and topic not in self.draft.topics:
            self.draft.topics.append(topic)
        elif not on and topic in self.draft.topics:
            self.draft.topics.remove(topic)

    def _set_follow_up(self, days: int) -> None:
        self.draft.follow_up_on = self.app.session.today() + datetime.timedelta(days=days) if days else None
        self._show_state()

    def _show_state(self) -> None:
        self.photo_label.text = tr("photo.count", count=len(self.draft.photos))
        self.photo_strip.show(self.draft.photos, self.app.session.cached_photo)
        self.follow_label.text = (tr("visit.follow_on", day=self.draft.follow_up_on.isoformat())
                                  if self.draft.follow_up_on else "")

    def add_photo(self, data: bytes) -> None:
        try:
            visit_service.attach_photo(self.app.session, self.draft, data)
        except ValueError as exc:
            self.error_label.text = photo_refusal(exc)
            return
        self.error_label.text = ""
        self.keep_draft()  # a photo is the hardest thing to take again: kept at once, not only on leaving
        self._show_state()

    def save(self) -> None:
        self.read_widgets()
        try:
            visit_id = visit_service.save_visit(self.app.session, self.draft)
        except FormInvalid as exc:
            self.error_label.text = exc.text()
            return
        self.form_saved()
        self.app.toast(tr("visit.saved"))
        self.app.after_edit()
        self.visit_id = ""
        self.app.go("household", household_id=self.household_id, saved_visit=visit_id)


class CaseFormScreen(DraftForm):
    title_key = "case.new_title"
    back_to = "cases"
    shows = ("household_id",)

    def __init__(self, app, **kwargs):
        super().__init__(app, **kwargs)
        self.household_id = ""
        self.draft: case_service.CaseDraft | None = None

    def refresh(self) -> None:
        self.open_form(case_key(self.household_id), case_service.CaseDraft(household_id=self.household_id or None))
        draft = self.draft
        self.body.clear_widgets()
        session = self.app.session
        row = session.households.get(self.household_id) if self.household_id else None
        if row is not None:
            self.body.add_widget(BigLabel(tr("case.for_household", where=f"{row.address} {row.place}"), bold=True))
        self.add_restored_notice()
        self.body.add_widget(BigLabel(tr("case.category"), bold=True))
        self._categories = {tr("category." + c): c for c in case_service.CASE_CATEGORIES}
        self.category_spinner = Spinner(text=tr("category." + draft.category), values=list(self._categories),
                                        size_hint_y=None, height=dp(60), font_size=f"{TEXT_SP}sp")
        self.body.add_widget(self.category_spinner)
        self.body.add_widget(BigLabel(tr("case.title_field"), bold=True))
        self.title_input = BigInput(text=draft.title)
        self.body.add_widget(self.title_input)
        self.body.add_widget(BigLabel(tr("case.description"), bold=True))
        self.description_input = BigInput(multiline=True, lines=4, text=draft.description)
        self.body.add_widget(self.description_input)
        self.photo_label = BigLabel(tr("photo.count", count=len(draft.photos)), color=MUTED)
        self.body.add_widget(self.photo_label)
        photo = BigButton(tr("photo.add"))
        photo.bind(on_release=lambda *_: self.app.pick_photo(self.add_photo))
        self.body.add_widget(photo)
        self.save_button = BigButton(tr("case.report"), primary=True)
        self.save_button.bind(on_release=lambda *_: self.save())
        self.body.add_widget(self.save_button)
        self.error_label = BigLabel("", color=WARNING)
        self.body.add_widget(self.error_label)
        self.add_discard_button()
        self.back_to = "household" if self.household_id else "cases"

    def read_widgets(self) -> None:
        self.draft.category = self._categories.get(self.category_spinner.text, "other")
        self.draft.title = self.title_input.text
        self.draft.description = self.description_input.text

    def add_photo(self, data: bytes) -> None:
        try:
            case_service.attach_photo(self.app.session, self.draft, data)
        except ValueError as exc:
            self.error_label.text = photo_refusal(exc)
            return
        self.error_label.text = ""
        self.keep_draft()  # as on the visit form: a photo is kept at once
        self.photo_label.text = tr("photo.count", count=len(self.draft.photos))

    def save(self) -> None:
        self.read_widgets()
        try:
            case_service.report_case(self.app.session, self.draft)
        except FormInvalid as exc:
            self.error_label.text = exc.text()
            return
        self.form_saved()
        self.app.toast(tr("case.reported"))
        self.app.after_edit()
        self.app.go("cases")

