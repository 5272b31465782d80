"""Home: what is due, my open cases, edits waiting, the last sync, and the way to everything else."""

from __future__ import annotations

from kivy.metrics import dp
from kivy.uix.gridlayout import GridLayout

from client.i18n import tr
from client.services.home import home_summary
from client.services.sync_runner import SyncOutcome
from client.services.words import clock_notice, outcome_text
from client.ui.widgets import MUTED, PRIMARY, WARNING, BigButton, BigLabel, Page

MAX_LISTED = 5


class HomeScreen(Page):
    title_key = "home.title"
    back_to = None

    def __init__(self, app, **kwargs):
        super().__init__(app, **kwargs)
        self.greeting = BigLabel("", size_sp=22)
        self.body.add_widget(self.greeting)
        # Holds the wrong-clock warning, or nothing: an empty label would still take a row.
        self.clock_box = GridLayout(cols=1, size_hint_y=None)
        self.clock_box.bind(minimum_height=self.clock_box.setter("height"))
        self.body.add_widget(self.clock_box)
        self.sync_label = BigLabel("", color=MUTED)
        self.pending_label = BigLabel("", bold=True)
        self.sync_button = BigButton(tr("home.sync_now"), primary=True)
        self.sync_button.bind(on_release=lambda *_: self.app.go("sync", start=True))
        self.body.add_widget(self.pending_label)
        self.body.add_widget(self.sync_label)
        self.body.add_widget(self.sync_button)
        menu = GridLayout(cols=2, spacing=dp(8), size_hint_y=None)
        menu.bind(minimum_height=menu.setter("height"))
        for key, screen in (
            ("home.households", "households"),
            ("home.patrol", "patrol"),
            ("home.diary", "diary"),
            ("home.cases", "cases"),
            ("home.sync", "sync"),
            ("home.settings", "settings"),
        ):
            button = BigButton(tr(key))
            button.bind(on_release=lambda _b, s=screen: self.app.go(s))
            menu.add_widget(button)
        self.body.add_widget(menu)
        self.due_box = GridLayout(cols=1, spacing=dp(6), size_hint_y=None)
        self.due_box.bind(minimum_height=self.due_box.setter("height"))
        self.body.add_widget(self.due_box)

    def refresh(self) -> None:
        session = self.app.session
        if session is None or session.closed:
            return
        summary = home_summary(session)
        self.greeting.text = tr("home.greeting", name=session.account.user_name)
        self.clock_box.clear_widgets()
        if summary.clock_off_by is not None:
            self.clock_box.add_widget(BigLabel(clock_notice(summary.clock_off_by), bold=True, color=WARNING))
        self.pending_label.text = tr("home.pending", count=summary.pending_edits)
        self.pending_label.color = WARNING if summary.pending_edits else MUTED
        last = SyncOutcome.from_dict(summary.last_sync) if summary.last_sync else None
        self.sync_label.text = outcome_text(last)
        self.due_box.clear_widgets()
        self.due_box.add_widget(BigLabel(tr("home.due_today", count=len(summary.due_today)), bold=True, color=PRIMARY))
        self._list_follow_ups(summary.due_today)
        self.due_box.add_widget(BigLabel(tr("home.overdue", count=len(summary.overdue)), bold=True, color=WARNING))
        self._list_follow_ups(summary.overdue)
        self.due_box.add_widget(BigLabel(tr("home.open_cases", count=len(summary.open_cases)), bold=True,
                                         color=PRIMARY))
        for case in summary.open_cases[:MAX_LISTED]:
            button = BigButton(f"{case.title} · {tr('case.status.' + case.status)}")
            button.bind(on_release=lambda _b, cid=case.id: self.app.go("cases", focus=cid))
            self.due_box.add_widget(button)

    def _list_follow_ups(self, items) -> None:
        index = self.app.session.households
        for item in items[:MAX_LISTED]:
            row = index.get(item.household_id)
            label = f"{row.place} {row.head_name}" if row else item.household_id[:8]
            if item.overdue_days:
                label += " · " + tr("home.days_late", days=item.overdue_days)
            button = BigButton(label)
            button.bind(on_release=lambda _b, hid=item.household_id: self.app.go("household", household_id=hid))
            self.due_box.add_widget(button)
