"""The households of my grids (a RecycleView: thousands of rows, only the visible ones are widgets)
and one household's detail with its visits and cases."""

from __future__ import annotations

from kivy.clock import Clock
from kivy.metrics import dp, sp
from kivy.properties import StringProperty
from kivy.uix.button import Button
from kivy.uix.recycleboxlayout import RecycleBoxLayout
from kivy.uix.recycleview import RecycleView

from client.i18n import tr
from client.services.home import household_history
from client.services.words import show_value
from client.ui.widgets import MUTED, PRIMARY, TEXT_SP, BigButton, BigInput, BigLabel, Page, plain

ROW_HEIGHT = dp(72)


class HouseholdRowButton(Button):
    """One row of the list, recycled as the list scrolls."""

    household_id = StringProperty("")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.font_size = sp(TEXT_SP)
        self.halign = "left"
        self.valign = "middle"
        self.bind(size=lambda w, *_: setattr(w, "text_size", (w.width - dp(20), w.height)))

    def on_release(self):
        from kivy.app import App

        App.get_running_app().go("household", household_id=self.household_id)


class HouseholdList(RecycleView):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        layout = RecycleBoxLayout(default_size=(None, ROW_HEIGHT), default_size_hint=(1, None),
                                  size_hint_y=None, orientation="vertical", spacing=dp(4))
        layout.bind(minimum_height=layout.setter("height"))
        self.add_widget(layout)
        # The view class lives on the layout manager: set it once the manager exists.
        self.viewclass = HouseholdRowButton


class HouseholdsScreen(Page):
    title_key = "households.title"

    def __init__(self, app, **kwargs):
        super().__init__(app, **kwargs)
        # The list scrolls itself: take the page's scroll view out and give the list the space.
        outer = self.scroll.parent
        outer.remove_widget(self.scroll)
        self.search_input = BigInput(hint_text=tr("households.search_hint"))
        self.search_input.bind(text=lambda *_: self._schedule_search())
        outer.add_widget(self.search_input)
        self.count_label = BigLabel("", color=MUTED)
        outer.add_widget(self.count_label)
        self.list_view = HouseholdList()
        outer.add_widget(self.list_view)
        self._pending_search = None

    def refresh(self) -> None:
        self.search()

    def _schedule_search(self) -> None:
        # Typing fast on a slow phone: search once the finger rests, not at every character.
        if self._pending_search is not None:
            self._pending_search.cancel()
        self._pending_search = Clock.schedule_once(lambda dt: self.search(), 0.15)

    def search(self) -> None:
        session = self.app.session
        if session is None:
            return
        rows = session.households.search(self.search_input.text)
        self.count_label.text = tr("households.count", count=len(rows), total=len(session.households))
        self.list_view.data = [
            {
                "text": (f"[b]{plain(row.place or '-')}[/b]  {plain(row.head_name)}\n{plain(row.address)}"
                         + (f"  ({plain(', '.join(row.tags))})" if row.tags else "")),
                "markup": True,
                "household_id": row.id,
            }
            for row in rows
        ]


class HouseholdScreen(Page):
    title_key = "household.title"
    back_to = "households"
    shows = ("household_id",)

    def __init__(self, app, **kwargs):
        super().__init__(app, **kwargs)
        self.household_id = ""
        self.saved_visit = ""
        self.visit_buttons: dict[str, BigButton] = {}

    def refresh(self) -> None:
        self.body.clear_widgets()
        # The previous household's buttons go with its widgets: kept here, 50 histories opened
        # in a day would keep every one of their rows alive.
        self.visit_buttons = {}
        session = self.app.session
        if not self.household_id or session is None:
            return
        history = household_history(session, self.household_id)
        f = history.household.fields
        place = "-".join(str(f.get(k, "")) for k in ("building", "unit", "room") if f.get(k))
        self.body.add_widget(BigLabel(f"{f.get('address', '')} {place}", size_sp=24, bold=True))
        self.body.add_widget(BigLabel(tr("household.head", name=f.get("head_name", ""), phone=f.get("phone", ""),
                                         members=f.get("members", "?"))))
        if f.get("tags"):
            self.body.add_widget(BigLabel(tr("household.tags", tags=show_value(f["tags"])), color=PRIMARY))
        if f.get("notes"):
            self.body.add_widget(BigLabel(f["notes"], color=MUTED))
        self.new_visit_button = BigButton(tr("household.new_visit"), primary=True)
        self.new_visit_button.bind(
            on_release=lambda *_: self.app.go("visit", household_id=self.household_id, visit_id=""))
        self.body.add_widget(self.new_visit_button)
        new_case = BigButton(tr("household.new_case"))
        new_case.bind(on_release=lambda *_: self.app.go("case_form", household_id=self.household_id))
        self.body.add_widget(new_case)
        self.body.add_widget(BigLabel(tr("household.visits", count=len(history.visits)), bold=True, color=PRIMARY))
        for visit in history.visits:
            v = visit.fields
            when = str(v.get("visited_at", ""))[:10]
            text = f"{when} {tr('method.' + v.get('method', 'inquiry'))}"
            if visit.pending:
                text += " · " + tr("common.pending")
            if v.get("notes"):
                text += f"\n{show_value(v['notes'])}"
            button = BigButton(text, height=dp(88))
            button.halign = "left"
            button.bind(size=lambda w, *_: setattr(w, "text_size", (w.width - dp(20), None)))
            button.bind(on_release=lambda _b, vid=visit.id: self.app.go("visit", visit_id=vid))
            self.visit_buttons[visit.id] = button
            self.body.add_widget(button)
        self.body.add_widget(BigLabel(tr("household.cases", count=len(history.cases)), bold=True, color=PRIMARY))
        for case in history.cases:
            self.body.add_widget(BigLabel(f"{case.title} · {tr('case.status.' + case.status)}"))
