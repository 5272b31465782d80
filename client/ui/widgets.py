"""Big, plain widgets for older eyes and thick fingers: text at 20 sp and up, targets 64 dp high."""

from __future__ import annotations

import io
import unicodedata
from typing import Callable

from kivy.clock import Clock
from kivy.core.image import Image as CoreImage
from kivy.graphics import Color, Rectangle
from kivy.metrics import dp, sp
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.gridlayout import GridLayout
from kivy.uix.image import Image
from kivy.uix.label import Label
from kivy.uix.popup import Popup
from kivy.uix.screenmanager import Screen
from kivy.uix.scrollview import ScrollView
from kivy.uix.textinput import TextInput
from kivy.uix.togglebutton import ToggleButton
from kivy.utils import escape_markup

from client.i18n import tr
from client.services.field_limits import FormInvalid
from client.services.photos import thumbnail

TEXT_SP = 20
TITLE_SP = 26
ROW_DP = 64
# High contrast: dark text on light background reads best in sunlight on a cheap screen.
BACKGROUND = (0.97, 0.96, 0.93, 1)
INK = (0.1, 0.1, 0.1, 1)
PRIMARY = (0.72, 0.11, 0.11, 1)  # the red of the red stewards
WARNING = (0.75, 0.35, 0.0, 1)
MUTED = (0.35, 0.35, 0.35, 1)


def plain(value: object) -> str:
    """Text from a record, safe inside a markup label: a resident's "[font=x]" is shown, not obeyed.

    Kivy reads ``[b]``, ``[size=..]`` and ``[font=..]`` in a markup label's text; a font that
    does not exist raises in the middle of drawing, so one such note would crash every screen
    that lists it.
    """
    return escape_markup(str(value))


def photo_refusal(exc: ValueError) -> str:
    """Why a photo was not added: not an image (NotAPhoto), or the record or the phone is full."""
    return exc.text() if isinstance(exc, FormInvalid) else tr("photo.unreadable")


def on_ui_thread(fn) -> None:
    """Hand a callback from a worker thread to Kivy's main loop (Clock is safe to call from any thread)."""
    Clock.schedule_once(lambda _dt: fn(), 0)


class BigLabel(Label):
    """A label that wraps to its width and grows to its text's height."""

    def __init__(self, text: str = "", size_sp: float = TEXT_SP, color=INK, bold: bool = False, **kwargs):
        super().__init__(text=text, font_size=sp(size_sp), color=color, bold=bold, halign="left", valign="middle",
                         size_hint_y=None, **kwargs)
        self.bind(width=self._wrap, texture_size=self._grow)
        # An empty label never changes its texture size, so it would keep Kivy's default 100 px.
        self.height = dp(32)

    def _wrap(self, *_):
        self.text_size = (self.width, None)

    def _grow(self, *_):
        self.height = max(self.texture_size[1] + dp(8), dp(32))


class BigButton(Button):
    def __init__(self, text: str = "", primary: bool = False, **kwargs):
        kwargs.setdefault("size_hint_y", None)
        kwargs.setdefault("height", dp(ROW_DP))
        super().__init__(text=text, font_size=sp(TEXT_SP + 2), **kwargs)
        if primary:
            self.background_normal = ""
            self.background_color = PRIMARY


class BigToggle(ToggleButton):
    def __init__(self, text: str = "", **kwargs):
        kwargs.setdefault("size_hint_y", None)
        kwargs.setdefault("height", dp(ROW_DP - 8))
        super().__init__(text=text, font_size=sp(TEXT_SP), **kwargs)


class BigInput(TextInput):
    def __init__(self, multiline: bool = False, lines: int = 1, **kwargs):
        kwargs.setdefault("size_hint_y", None)
        kwargs.setdefault("height", dp(56) if lines == 1 else dp(40 * lines))
        super().__init__(multiline=multiline, font_size=sp(TEXT_SP), write_tab=False, **kwargs)

    def insert_text(self, substring, from_undo=False):
        # Pasted text can carry control characters: invisible here, and a NUL is refused by the
        # server, so they never enter a field (line breaks and tabs are text).
        cleaned = "".join(ch for ch in substring if ch in "\n\t" or unicodedata.category(ch) != "Cc")
        return super().insert_text(cleaned, from_undo=from_undo)


class PhotoStrip(GridLayout):
    """Previews of a record's photos, three to a row, each made once.

    A form holds up to 32 photos: rebuilding every preview for each photo added made adding
    the 32nd take as long as 32 previews and filled Kivy's texture cache, which keeps each
    texture it is given for a minute, whatever the strip still shows.
    """

    def __init__(self, **kwargs):
        super().__init__(cols=3, spacing=dp(6), size_hint_y=None, **kwargs)
        self.bind(minimum_height=self.setter("height"))
        self.previews: dict[str, Image] = {}  # by the photo's SHA-256

    def show(self, photos: list[str], read: Callable[[str], bytes | None]) -> None:
        """Show the photos named in ``photos``; ``read`` gives a photo's bytes, None when it is not on the phone.

        A photo not downloaded yet (no signal) is counted by the form but not shown; it is
        read again at the next call.
        """
        for sha in set(self.previews) - set(photos):
            self.remove_widget(self.previews.pop(sha))
        for sha in photos:
            if sha in self.previews:
                continue
            data = read(sha)
            if data is None:
                continue
            texture = CoreImage(io.BytesIO(thumbnail(data)), ext="jpg", nocache=True).texture
            self.previews[sha] = Image(texture=texture, size_hint_y=None, height=dp(110), fit_mode="contain")
            self.add_widget(self.previews[sha])


class Question(Popup):
    """A plain-words question before something that cannot be undone: keeping is the first,
    highlighted choice, so a hurried tap loses nothing.

    Args:
        title / question: what is asked, in the user's words.
        keep_text / go_text: the two answers.
        on_go: called after the popup closes when the user chose to go ahead.
    """

    def __init__(self, title: str, question: str, keep_text: str, go_text: str, on_go):
        box = BoxLayout(orientation="vertical", spacing=dp(8), padding=dp(8))
        box.add_widget(BigLabel(question, color=(1, 1, 1, 1)))
        self.keep_button = BigButton(keep_text, primary=True)
        self.go_button = BigButton(go_text)
        box.add_widget(self.keep_button)
        box.add_widget(self.go_button)
        super().__init__(title=title, title_size=sp(20), content=box, size_hint=(0.92, None), height=dp(360))
        # As tall as the words need (longer in English), plus the title bar.
        box.bind(minimum_height=lambda _box, height: setattr(self, "height", height + dp(80)))
        self.keep_button.bind(on_release=lambda *_: self.dismiss())
        self.go_button.bind(on_release=lambda *_: (self.dismiss(), on_go()))


class Page(Screen):
    """A screen with a title bar (back button, title) and a scrolling column below it."""

    title_key = ""
    back_to: str | None = "home"
    # The attributes that say which record the screen shows (set through ``App.go``): a
    # rebuilt screen (another language) is given them again.
    shows: tuple[str, ...] = ()

    def __init__(self, app, **kwargs):
        super().__init__(**kwargs)
        self.app = app
        with self.canvas.before:
            Color(*BACKGROUND)
            self._bg = Rectangle(pos=self.pos, size=self.size)
        self.bind(pos=lambda *_: setattr(self._bg, "pos", self.pos),
                  size=lambda *_: setattr(self._bg, "size", self.size))
        outer = BoxLayout(orientation="vertical", padding=dp(12), spacing=dp(8))
        bar = BoxLayout(size_hint_y=None, height=dp(ROW_DP), spacing=dp(8))
        if self.back_to:
            self.back_button = BigButton(tr("common.back"), size_hint_x=None, width=dp(110))
            self.back_button.bind(on_release=lambda *_: self.go_back())
            bar.add_widget(self.back_button)
        self.title_label = Label(text=tr(self.title_key) if self.title_key else "", font_size=sp(TITLE_SP), bold=True,
                                 color=PRIMARY, halign="left", valign="middle")
        self.title_label.bind(size=lambda w, *_: setattr(w, "text_size", w.size))
        bar.add_widget(self.title_label)
        outer.add_widget(bar)
        self.body = BoxLayout(orientation="vertical", spacing=dp(10), size_hint_y=None)
        self.body.bind(minimum_height=self.body.setter("height"))
        self.scroll = ScrollView(do_scroll_x=False)
        self.scroll.add_widget(self.body)
        outer.add_widget(self.scroll)
        self.add_widget(outer)

    def go_back(self) -> None:
        self.app.go(self.back_to)

    def on_pre_enter(self, *args):
        self.refresh()
        self.to_top()

    def on_pre_leave(self, *args):
        self.keep_draft()

    def to_top(self) -> None:
        # A column shorter than the screen sits at the top only while scroll_y is 1.
        self.scroll.scroll_y = 1

    def refresh(self) -> None:
        """Rebuild what the screen shows from the services; called each time it is entered."""

    def keep_draft(self) -> None:
        """Keep the screen's unsaved input (a form's draft); nothing to keep elsewhere."""

    def message(self, key: str, **values) -> BigLabel:
        return BigLabel(tr(key, **values))
