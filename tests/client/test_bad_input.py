"""What a careless user can put into the services: each refused with a message naming what to
fix, before anything is stored, so nothing is half-written and no edit waits to be rejected."""

from __future__ import annotations

import json

import pytest

from client.services import cases, diary, patrols, visits
from client.services.field_limits import PHOTOS_MAX, TEXT_MAX, FormInvalid
from client.services.setup import SetupError, normalise_server_url, parse_enrollment_text
from client.services.sync_runner import BackgroundSync, SyncState
from client.vault import WrongPin
from tests.client.conftest import PIN, fast_vault, make_setup, photo_bytes
from tests.client.test_services_flow import add_household, enrolled

LONG = "长" * 10_000


def refused(call) -> FormInvalid:
    with pytest.raises(FormInvalid) as caught:
        call()
    return caught.value


def test_notes_past_the_limit_or_holding_a_nul_are_refused_by_name_and_nothing_is_stored(tmp_path, office):
    _, session = enrolled(tmp_path, office, "粗心甲")
    household = add_household(session, office.grid_id)
    before = session.pending_count()

    draft = visits.new_visit(household)
    draft.notes = LONG
    too_long = refused(lambda: visits.save_visit(session, draft))
    assert too_long.text() == f"「情况记录」太长了：最多{TEXT_MAX}字，现在10000字。请删减后再保存。"
    draft.notes = "漏水\x00"
    assert refused(lambda: visits.save_visit(session, draft)).reason == "form.error.control_char"
    assert draft.visit_id is None

    assert refused(lambda: diary.write_diary(session, LONG)).values["field"] == "内容"
    assert refused(lambda: diary.write_diary(session, "a\x00b")).reason == "form.error.control_char"
    title = refused(lambda: cases.report_case(session, cases.CaseDraft(title="题" * 201)))
    assert title.values == {"field": "标题", "limit": 200, "length": 201}
    description = refused(lambda: cases.report_case(session, cases.CaseDraft(title="漏水", description=LONG)))
    assert description.values["field"] == "详细情况"
    assert session.pending_count() == before and session.records("case") == [] and session.records("diary") == []

    # Exactly at the limit, emoji and rare characters included, is kept whole and syncs.
    draft.notes = "👵🏻𠀀" + "长" * (TEXT_MAX - 4)
    visit_id = visits.save_visit(session, draft)
    assert session.get("visit", visit_id).fields["notes"] == draft.notes
    outcome = BackgroundSync(session, wipe_device=lambda: None, attempts=1).run_now()
    assert outcome.state is SyncState.DONE and outcome.rejected == 0, outcome


def test_resolving_with_feedback_too_long_leaves_the_case_open(tmp_path, office):
    _, session = enrolled(tmp_path, office, "粗心乙")
    case_id = cases.report_case(session, cases.CaseDraft(title="落水管"))
    BackgroundSync(session, wipe_device=lambda: None, attempts=1).run_now()
    office.write("case", case_id, {"status": "accepted"})
    office.write("case", case_id, {"status": "dispatched", "department": "城建办"})
    BackgroundSync(session, wipe_device=lambda: None, attempts=1).run_now()
    assert refused(lambda: cases.resolve_case(session, case_id, LONG)).values["field"] == "反馈"
    assert session.get("case", case_id).fields["status"] == "dispatched"


def test_a_refused_patrol_stop_keeps_the_patrol_running_and_its_notes(tmp_path, office):
    _, session = enrolled(tmp_path, office, "粗心丙")
    recorder = patrols.PatrolRecorder(session)
    patrol_id = recorder.start()
    recorder.set_notes("3 幢楼道")
    assert refused(lambda: recorder.set_notes(LONG)).reason == "form.error.too_long"
    assert refused(lambda: recorder.stop(notes=LONG)).reason == "form.error.too_long"
    assert recorder.current is not None and recorder.current.notes == "3 幢楼道"
    assert session.get("patrol", patrol_id).fields["ended_at"] is None
    with pytest.raises(ValueError):
        recorder.add_photo(b"not a photo")
    assert recorder.current.photos == []
    recorder.stop(notes="3 幢楼道有电瓶车")
    assert session.get("patrol", patrol_id).fields["notes"] == "3 幢楼道有电瓶车"


def test_a_photo_past_the_limit_is_refused_before_it_is_stored(tmp_path, office):
    _, session = enrolled(tmp_path, office, "粗心丁")
    household = add_household(session, office.grid_id)
    draft = visits.new_visit(household)
    small = [photo_bytes(64, 64, color=(i, 2 * i, 3 * i)) for i in range(PHOTOS_MAX + 1)]
    for data in small[:PHOTOS_MAX]:
        visits.attach_photo(session, draft, data)
    full = refused(lambda: visits.attach_photo(session, draft, small[-1]))
    assert full.text() == f"最多{PHOTOS_MAX}张照片，不能再加了。"
    assert len(draft.photos) == PHOTOS_MAX
    assert len(session.get("visit", visits.save_visit(session, draft)).fields["photos"]) == PHOTOS_MAX
    case = cases.CaseDraft(title="x", photos=list(draft.photos))
    assert refused(lambda: cases.attach_photo(session, case, small[-1])).reason == "photo.too_many"


@pytest.mark.parametrize("typed, expected", [
    ("１９２.１６８.１.５：８０００", "http://192.168.1.5:8000"),  # a Chinese keyboard in fullwidth mode
    ("192。168。1。5:8000", "http://192.168.1.5:8000"),
    ("  192.168.1.5:8000/ \n", "http://192.168.1.5:8000"),
    ("[::1]:8000", "http://[::1]:8000"),
    ("https://fieldloop.example.org/", "https://fieldloop.example.org"),
])
def test_server_addresses_as_a_phone_keyboard_types_them(typed, expected):
    assert normalise_server_url(typed) == expected


@pytest.mark.parametrize("typed", ["http://", "192.168.1.5:99999", "192.168.1.5:0", "192.168.1.5:80a", "::1",
                                   "192.168.1.5 :8000", "ftp://192.168.1.5", "192.168.1.5:8000/?next=1",
                                   "[::1:8000", "a" * 3000])
def test_what_cannot_be_a_server_address_says_so_instead_of_no_signal(typed):
    with pytest.raises(SetupError) as caught:
        normalise_server_url(typed)
    assert caught.value.reason == "setup.error.bad_server"


def test_codes_and_qr_texts_as_people_paste_them():
    assert parse_enrollment_text("ｋ７ｑ２－ｍ９ｘｄ").code == "k7q2-m9xd"  # the server reads case itself
    assert parse_enrollment_text(" K7Q2 M9XD\n3HPA ").code == "K7Q2M9XD3HPA"
    scanned = parse_enrollment_text("扫描结果：fieldloop://enroll?server=192.168.1.5：8000＆code= K7Q2-M9XD ")
    assert (scanned.server_url, scanned.code) == ("http://192.168.1.5:8000", "K7Q2-M9XD")
    for text, reason in [("K7Q2\x00M9XD", "setup.error.code_format"), ("登记码", "setup.error.code_format"),
                         ("A" * 65, "setup.error.code_format"), ("   ", "setup.error.no_code"),
                         ("fieldloop://enroll?server=a:1&code=AAAA&code=BBBB", "setup.error.bad_qr"),
                         ("fieldloop://enroll?server=a:1&server=b:2&code=AAAA", "setup.error.bad_qr")]:
        with pytest.raises(SetupError) as caught:
            parse_enrollment_text(text)
        assert caught.value.reason == reason, text
    # The same value twice is no contradiction.
    assert parse_enrollment_text("fieldloop://enroll?code=AAAA&code=AAAA").code == "AAAA"


def test_an_address_with_a_path_where_no_fieldloop_answers_says_so(tmp_path, office):
    office.add_user("粗心戊")
    setup = make_setup(tmp_path / "wu")
    with pytest.raises(SetupError) as caught:
        setup.enroll(office.server.url + "/fieldloop", office.code("粗心戊"))
    assert caught.value.reason == "setup.error.not_fieldloop"
    assert not setup.data_dir.store.exists()


def test_a_pin_that_cannot_be_one_is_refused_without_bringing_the_lock_nearer(tmp_path, office):
    setup, session = enrolled(tmp_path, office, "粗心己")
    session.close()
    for typed in ("", "12", "abcd", "1" * 13):
        with pytest.raises(SetupError) as caught:
            setup.unlock(typed)
        assert caught.value.reason == "pin.error.format"
    assert setup.vault.failures() == 0
    setup.unlock("".join(chr(ord(d) + 0xFEE0) for d in PIN)).close()  # fullwidth digits are digits


def test_a_lock_set_while_the_clock_ran_years_ahead_ends_when_the_lock_would(tmp_path):
    now = [4_000_000_000.0]  # the year 2096
    vault = fast_vault(tmp_path / "vault.json", clock=lambda: now[0])
    vault.create(PIN)
    for _ in range(5):
        with pytest.raises(WrongPin):
            vault.unlock("000000")
    now[0] = 1_800_000_000.0  # the clock put right
    assert vault.locked_for() == 30.0
    now[0] += 31
    assert len(vault.unlock(PIN)) == 32


@pytest.mark.parametrize("damage", [
    lambda d: d.vault.write_bytes(d.vault.read_bytes()[:40]),
    lambda d: d.vault.write_text("[]"),
    lambda d: d.vault.write_bytes(bytes(range(256))),
    lambda d: d.vault.write_text(json.dumps(json.loads(d.vault.read_text()) | {"nonce": "!!"})),
    lambda d: d.vault.write_text(json.dumps(json.loads(d.vault.read_text()) | {"kdf": {"n": 2**40, "r": 8, "p": 1,
                                                                                        "salt": "AAAA"}})),
    lambda d: d.store.write_bytes(b"not a database" * 100),
    lambda d: d.store.write_bytes(d.store.read_bytes()[:100]),
])
def test_a_tampered_or_truncated_vault_or_store_says_damaged_not_a_traceback(tmp_path, office, damage):
    setup, session = enrolled(tmp_path, office, f"粗心庚{len(list(tmp_path.parent.iterdir()))}")
    session.close()
    damage(setup.data_dir)
    with pytest.raises(SetupError) as caught:
        make_setup(setup.data_dir.root).unlock(PIN)
    assert caught.value.reason == "setup.error.damaged"


def test_a_settings_file_edited_into_nonsense_is_read_as_none(tmp_path):
    from client.services.setup import DataDir, read_settings, write_settings

    data = DataDir(tmp_path)
    data.settings.write_text("[1, 2]")
    assert read_settings(data) == {}
    assert write_settings(data, language="en") == {"language": "en"}
