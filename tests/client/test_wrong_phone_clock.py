"""A phone whose clock is wrong records the server's time once it has heard it, and says so on the home screen."""

from __future__ import annotations

import datetime

import pytest

from client.i18n import set_language
from client.services import diary, home, visits
from client.services.session import Session, utc_now
from client.services.setup import account_from_enroll_reply
from client.services.words import clock_notice
from sync.client import AesGcmCipher, DeviceIdentity, HttpTransport, LocalStore, SyncEngine
from sync.client.boot_clock import BootReading, read_boot_clock
from sync.client.store import META_CLOCK_OFFSET
from tests.client.test_services_flow import add_household

HOUR = datetime.timedelta(hours=1)
YEARS_26 = datetime.timedelta(days=round(26 * 365.25))
# The server runs on this machine: its time is the real time, give or take the test's own run.
CLOSE_ENOUGH = datetime.timedelta(minutes=1)
EPOCH_2000_MS = 946_684_800_000


def phone_behind(tmp_path, office, name: str, behind: datetime.timedelta, boot_clock=None) -> Session:
    """A phone enrolled with the live server whose one wall clock (the engine's and the app's) is ``behind``.

    Its boot clock follows whatever wall clock the test gives the session (time passes, nobody
    sets the clock by hand) unless ``boot_clock`` is given."""

    def wall() -> datetime.datetime:
        return utc_now() - behind

    def boot_follows_the_wall() -> BootReading:
        return BootReading("boot-1", int(session.clock().timestamp() * 1000) - EPOCH_2000_MS)

    office.add_user(name)
    store = LocalStore(tmp_path / f"{name}.sqlite", AesGcmCipher(AesGcmCipher.generate_key()))
    boot = boot_clock or boot_follows_the_wall
    engine = SyncEngine(store, HttpTransport(office.server.url), DeviceIdentity(store),
                        wall=lambda: int(wall().timestamp() * 1000), boot_clock=lambda: boot())
    session = Session(store, engine, None, clock=wall, boot_clock=boot)
    reply = engine.enroll(office.code(name), label=name)  # the server's time arrives here first
    session.account = account_from_enroll_reply(reply, office.server.url)
    return session


def assert_server_time(iso: str) -> None:
    assert abs(datetime.datetime.fromisoformat(iso) - utc_now()) < CLOSE_ENOUGH, iso


@pytest.mark.parametrize(("behind", "words"), [(3 * HOUR, "慢了约3小时"), (YEARS_26, "慢了约26年"),
                                               (-2 * 24 * HOUR, "快了约2天")])
def test_a_visit_a_diary_and_today_follow_the_server_time_after_enrollment(tmp_path, office, behind, words):
    session = phone_behind(tmp_path, office, f"钟不准{words}", behind)
    household = add_household(session, office.grid_id)
    visit_id = visits.save_visit(session, visits.new_visit(household))
    diary_id = diary.write_diary(session, "手机时间不准也要记对")

    assert_server_time(session.get("visit", visit_id).fields["visited_at"])
    assert_server_time(session.get("diary", diary_id).fields["written_at"])
    day_before, today, day_after = utc_now().astimezone().date(), session.today(), utc_now().astimezone().date()
    assert today in (day_before, day_after)  # the test may run across midnight
    summary = home.home_summary(session)
    assert abs(summary.clock_off_by - behind) < CLOSE_ENOUGH
    assert words in clock_notice(summary.clock_off_by)
    session.close()


def test_a_follow_up_is_due_on_the_server_day_not_the_phone_day(tmp_path, office):
    session = phone_behind(tmp_path, office, "红管家钟慢", YEARS_26)
    household = add_household(session, office.grid_id)
    draft = visits.new_visit(household)
    draft.follow_up_on = utc_now().astimezone().date() - datetime.timedelta(days=2)
    session.clock, slow_clock = (lambda: utc_now() - 3 * 24 * HOUR), session.clock  # written down 3 days ago
    session.store.set_meta(META_CLOCK_OFFSET, "0")  # ... when the phone's clock was right
    visits.save_visit(session, draft)
    session.clock = slow_clock  # then the battery ran flat, and the clock went back to the year 2000
    session.store.set_meta(META_CLOCK_OFFSET, str(int(YEARS_26.total_seconds() * 1000)))
    due, late = home.follow_ups(session)
    # By the phone's clock (the year 2000) it would not be due for 26 years.
    assert due == [] and [(f.household_id, f.overdue_days) for f in late] == [(household, 2)]
    session.close()


def test_before_the_phone_has_heard_the_server_it_records_by_its_own_clock(tmp_path, office):
    session = phone_behind(tmp_path, office, "未同步", 3 * HOUR)
    session.store.set_meta(META_CLOCK_OFFSET, None)  # a store that never heard the server's time
    pinned = datetime.datetime(2026, 11, 25, 1, 30, tzinfo=datetime.UTC)
    session.clock = lambda: pinned
    diary_id = diary.write_diary(session, "还没同步过")
    assert datetime.datetime.fromisoformat(session.get("diary", diary_id).fields["written_at"]) == pinned
    assert session.now() == pinned and session.today() == datetime.date(2026, 11, 25)
    assert home.home_summary(session).clock_off_by is None
    session.close()


def test_the_notice_shows_only_past_five_minutes_and_goes_when_the_clock_is_right(tmp_path, office):
    session = phone_behind(tmp_path, office, "五分钟", datetime.timedelta(0))
    assert home.home_summary(session).clock_off_by is None  # enrolled with a right clock
    minute_ms = 60_000
    session.store.set_meta(META_CLOCK_OFFSET, str(5 * minute_ms))
    assert home.home_summary(session).clock_off_by is None
    session.store.set_meta(META_CLOCK_OFFSET, str(-6 * minute_ms))  # a sync found the phone 6 minutes fast
    off_by = home.home_summary(session).clock_off_by
    assert off_by == datetime.timedelta(minutes=-6) and "快了约6分钟" in clock_notice(off_by)
    session.store.set_meta(META_CLOCK_OFFSET, "0")  # the next sync, after the user set the clock right
    assert home.home_summary(session).clock_off_by is None
    session.close()


class BootClock:
    """A phone's boot clock: real time since a boot, which the test can restart."""

    def __init__(self):
        self.boot_id, self.booted = "boot-1", utc_now()

    def __call__(self) -> BootReading:
        return BootReading(self.boot_id, int((utc_now() - self.booted).total_seconds() * 1000))

    def reboot(self) -> None:
        self.boot_id, self.booted = "boot-2", utc_now()


def test_a_clock_put_right_offline_after_the_notice_is_followed_at_once(tmp_path, office):
    boot = BootClock()
    session = phone_behind(tmp_path, office, "地下室里校时", 3 * HOUR, boot_clock=boot)
    assert abs(session.wrong_clock_offset() - 3 * HOUR) < CLOSE_ENOUGH
    # In the basement, offline (nothing below asks the server until the sync at the end):
    session.clock = utc_now  # the user set the phone's clock right, as the notice asked
    assert session.wrong_clock_offset() is None
    assert abs(session.now() - utc_now()) < CLOSE_ENOUGH  # not 3 hours ahead by the stale offset
    diary_id = diary.write_diary(session, "校时以后写的")
    assert_server_time(session.get("diary", diary_id).fields["written_at"])

    session.clock = lambda: utc_now() - 5 * HOUR  # and later moved it wrong again, by hand
    assert abs(session.now() - utc_now()) < CLOSE_ENOUGH
    assert abs(session.wrong_clock_offset() - 5 * HOUR) < CLOSE_ENOUGH

    # After a reboot nothing tells a moved clock from time passing: the last sync's offset stands.
    boot.reboot()
    assert abs(session.now() - (utc_now() - 2 * HOUR)) < CLOSE_ENOUGH
    session.engine.sync()  # ... until the next sync learns the offset again
    assert abs(session.now() - utc_now()) < CLOSE_ENOUGH
    session.close()


def test_this_machine_has_a_boot_clock():
    # Linux (and so Android) names each boot and counts time since it, sleep included.
    first, second = read_boot_clock(), read_boot_clock()
    assert first is not None and first.boot_id == second.boot_id and second.since_boot_ms >= first.since_boot_ms


def test_the_size_of_the_difference_in_words():
    assert clock_notice(datetime.timedelta(hours=3, minutes=10)) == (
        "手机时间不准（慢了约3小时）。记录的时间已按服务器时间校正，请在手机“设置”里校正时间。")
    assert "慢了约59分钟" in clock_notice(datetime.timedelta(minutes=59))
    assert "慢了约1小时" in clock_notice(datetime.timedelta(minutes=60))
    assert "慢了约2小时" in clock_notice(datetime.timedelta(minutes=90))
    assert "快了约35小时" in clock_notice(-datetime.timedelta(hours=35))
    assert "慢了约2天" in clock_notice(datetime.timedelta(hours=36))
    assert "慢了约364天" in clock_notice(datetime.timedelta(days=364))
    assert "慢了约1年" in clock_notice(datetime.timedelta(days=365))
    set_language("en")
    try:
        assert clock_notice(datetime.timedelta(hours=1)) == (
            "The phone's clock is wrong (about 1 hour slow). Times are recorded by the server's clock; "
            "please set the time in the phone's Settings.")
        assert "about 26 years fast" in clock_notice(-YEARS_26)
    finally:
        set_language("zh_CN")
