"""Every flow of the app's services, without a window, against a real server."""

from __future__ import annotations

import datetime
import io
import time

import pytest
from PIL import Image

from client.services import cases, diary, home, patrols, visits
from client.services.setup import SetupError, UnsyncedEdits, parse_enrollment_text
from client.services.sync_runner import BackgroundSync, SyncState
from client.services.words import conflict_notices, outcome_text, rejection_notices
from client.vault import VaultLocked, WrongPin
from tests.client.conftest import PIN, make_setup, photo_bytes


def enrolled(tmp_path, office, name, clock=None):
    """A new user in the office's grid and an app set up for them (enrolled, PIN set)."""
    office.add_user(name)
    setup = make_setup(tmp_path / name, clock)
    pending = setup.enroll(office.server.url, office.code(name), label=f"{name}的手机")
    session = setup.set_pin(pending, PIN, PIN)
    return setup, session


def sync(session, wipe=lambda: None):
    return BackgroundSync(session, wipe_device=wipe, attempts=1).run_now()


def add_household(session, grid_id, address="长兴路 12 号", building="3", unit="2", room="401", head="顾建国", **extra):
    return session.create(
        "household",
        {"grid_id": grid_id, "address": address, "building": building, "unit": unit, "room": room, "head_name": head,
         "phone": "13800001111", **extra},
    )


def test_enrollment_text_from_qr_and_typed_code():
    qr = parse_enrollment_text("fieldloop://enroll?server=192.168.1.5:8000&code=AB12-CD34")
    assert (qr.server_url, qr.code) == ("http://192.168.1.5:8000", "AB12-CD34")
    assert parse_enrollment_text("  AB12 CD34 ").code == "AB12CD34"
    with pytest.raises(SetupError) as err:
        parse_enrollment_text("fieldloop://enroll?server=x")
    assert err.value.reason == "setup.error.no_code"


def test_enroll_set_pin_unlock_and_account(tmp_path, office):
    setup, session = enrolled(tmp_path, office, "张大爷")
    assert session.account.user_name == "张大爷"
    assert session.account.role == "grid_worker"
    assert session.account.grid_ids == [office.grid_id]
    session.close()
    assert setup.is_set_up()
    with pytest.raises(WrongPin):
        setup.unlock("000000")
    again = setup.unlock(PIN)
    assert again.account.device_id == session.account.device_id
    again.close()


def test_spent_code_and_unreachable_server_say_why(tmp_path, office):
    office.add_user("朱长发")
    code = office.code("朱长发")
    setup = make_setup(tmp_path / "a")
    setup.set_pin(setup.enroll(office.server.url, code), PIN, PIN).close()
    with pytest.raises(SetupError) as spent:
        make_setup(tmp_path / "b").enroll(office.server.url, code)
    assert spent.value.reason == "setup.error.code_refused"
    with pytest.raises(SetupError) as down:
        make_setup(tmp_path / "c").enroll("127.0.0.1:9", "whatever")
    assert down.value.reason == "setup.error.unreachable"
    assert not make_setup(tmp_path / "c").is_set_up()


def test_pin_mismatch_and_format_are_refused_before_anything_is_written(tmp_path, office):
    office.add_user("李阿姨")
    setup = make_setup(tmp_path / "li")
    pending = setup.enroll(office.server.url, office.code("李阿姨"))
    with pytest.raises(SetupError) as mismatch:
        setup.set_pin(pending, "1234", "4321")
    assert mismatch.value.reason == "pin.error.mismatch"
    with pytest.raises(SetupError) as short:
        setup.set_pin(pending, "12", "12")
    assert short.value.reason == "pin.error.format"
    assert not setup.vault.exists()
    setup.set_pin(pending, "1234", "1234").close()
    assert setup.unlock("1234").account.user_name == "李阿姨"


def test_visit_offline_then_synced_with_photos_and_follow_up_on_home(tmp_path, office, fixed_now):
    setup, session = enrolled(tmp_path, office, "红管家甲", clock=fixed_now)
    household = add_household(session, office.grid_id)
    draft = visits.new_visit(household, method="inquiry")
    draft.topics = ["elderly_care", "drainage"]
    draft.notes = "独居老人，落水管漏水"
    visits.attach_photo(session, draft, photo_bytes(color=(10, 20, 30)))
    visits.attach_photo(session, draft, photo_bytes(color=(200, 20, 30)))
    draft.follow_up_on = session.today()
    visit_id = visits.save_visit(session, draft)

    stored = session.get("visit", visit_id)
    assert stored.pending and stored.fields["method"] == "inquiry" and len(stored.fields["photos"]) == 2
    # Photos are downscaled to at most 1600 px before they are stored.
    for sha in stored.fields["photos"]:
        assert max(Image.open(io.BytesIO(session.photo(sha))).size) == 1600
    summary = home.home_summary(session)
    assert [f.household_id for f in summary.due_today] == [household]
    assert summary.pending_edits == 2

    outcome = sync(session)
    assert outcome.state is SyncState.DONE, outcome.detail
    assert outcome.pushed == 2 and outcome.photos_up == 2
    assert session.pending_count() == 0
    assert "上传2条" in outcome_text(outcome)
    assert not session.get("visit", visit_id).pending


def test_follow_ups_overdue_and_settled_by_a_later_visit(tmp_path, office):
    now = [datetime.datetime(2026, 11, 20, 2, 0, tzinfo=datetime.timezone.utc)]
    setup, session = enrolled(tmp_path, office, "红管家乙", clock=lambda: now[0])
    a = add_household(session, office.grid_id, room="101")
    b = add_household(session, office.grid_id, room="102")
    for household in (a, b):
        draft = visits.new_visit(household)
        draft.follow_up_on = datetime.date(2026, 11, 22)
        visits.save_visit(session, draft)
    now[0] = datetime.datetime(2026, 11, 25, 2, 0, tzinfo=datetime.timezone.utc)
    due, late = home.follow_ups(session)
    assert due == [] and {f.household_id for f in late} == {a, b}
    assert all(f.overdue_days == 3 for f in late)
    assert len(home.home_summary(session).overdue) == 2
    visits.save_visit(session, visits.new_visit(a, method="followup"))
    _, late = home.follow_ups(session)
    assert [f.household_id for f in late] == [b]
    assert [f.household_id for f in home.home_summary(session).overdue] == [b]  # the cached view saw the edit
    session.close()
    # After a restart the follow-ups come from the kept copy, and a new edit still refreshes them.
    again = setup.unlock(PIN)
    again.clock = lambda: now[0]
    assert [f.household_id for f in home.stored_follow_ups(again)[1]] == [b]
    visits.save_visit(again, visits.new_visit(b, method="followup"))
    assert home.stored_follow_ups(again) == ([], [])


def test_visit_edit_sends_only_changed_fields_and_refuses_past_follow_up(tmp_path, office, fixed_now):
    setup, session = enrolled(tmp_path, office, "红管家丙", clock=fixed_now)
    household = add_household(session, office.grid_id)
    visit_id = visits.save_visit(session, visits.new_visit(household))
    assert sync(session).state is SyncState.DONE
    draft = visits.load_visit(session, visit_id)
    draft.notes = "补充：儿子周末回来"
    visits.save_visit(session, draft)
    pending = session.store.pending_mutations()
    assert [sorted(p.fields) for p in pending] == [["notes"]]
    draft.follow_up_on = session.today() - datetime.timedelta(days=1)
    with pytest.raises(visits.VisitInvalid) as err:
        visits.save_visit(session, draft)
    assert err.value.reason == "visit.error.follow_up_past"


def test_household_search_and_history(tmp_path, office, fixed_now):
    setup, session = enrolled(tmp_path, office, "网格员丁", clock=fixed_now)
    wang = add_household(session, office.grid_id, head="王秀英", building="5", unit="1", room="302", tags=["独居老人"])
    add_household(session, office.grid_id, head="顾建国", building="3", unit="2", room="401")
    index = session.households
    assert [r.id for r in index.search("王")] == [wang]
    assert [r.id for r in index.search("5-1-302")] == [wang]
    assert [r.id for r in index.search("独居 302")] == [wang]
    assert len(index.search("")) == 2
    visits.save_visit(session, visits.new_visit(wang))
    case_id = cases.report_case(session, cases.CaseDraft(category="drainage", title="落水管破裂", household_id=wang))
    history = home.household_history(session, wang)
    assert len(history.visits) == 1 and [c.id for c in history.cases] == [case_id]


def test_case_report_and_resolve_only_when_dispatched(tmp_path, office):
    setup, session = enrolled(tmp_path, office, "网格员戊")
    with pytest.raises(cases.CaseInvalid):
        cases.report_case(session, cases.CaseDraft(title="  "))
    draft = cases.CaseDraft(category="noise", title="空调噪音", description="楼下空调夜里响")
    cases.attach_photo(session, draft, photo_bytes(800, 600))
    case_id = cases.report_case(session, draft)
    [row] = cases.my_cases(session, open_only=True)
    assert row.status == "reported" and not row.can_resolve
    with pytest.raises(cases.CaseInvalid) as err:
        cases.resolve_case(session, case_id, "已协调")
    assert err.value.reason == "case.error.cannot_resolve"
    assert sync(session).state is SyncState.DONE
    # The office accepts and dispatches it (the console's moves), then the worker resolves it.
    _console_move(office, case_id, "accepted")
    _console_move(office, case_id, "dispatched")
    assert sync(session).state is SyncState.DONE
    [row] = cases.my_cases(session)
    assert row.status == "dispatched" and row.can_resolve
    with pytest.raises(cases.CaseInvalid):
        cases.resolve_case(session, case_id, " ")
    cases.resolve_case(session, case_id, "空调维修后已无噪音")
    assert sync(session).state is SyncState.DONE
    record = session.get("case", case_id)
    assert record.fields["status"] == "resolved" and record.fields["feedback"] == "空调维修后已无噪音"
    assert not record.pending


def _console_move(office, case_id, status):
    office.write("case", case_id, {"status": status})


class FakeGps:
    available = True

    def start(self, on_fix):
        self.on_fix = on_fix

    def stop(self):
        self.on_fix = None


def test_patrol_with_hazards_photo_and_track(tmp_path, office, fixed_now):
    gps = FakeGps()
    setup, session = enrolled(tmp_path, office, "巡查员", clock=fixed_now)
    recorder = patrols.PatrolRecorder(session, gps)
    patrol_id = recorder.start()
    for i in range(25):
        gps.on_fix((30.99 + i * 1e-4, 119.91, 1_790_000_000_000 + i * 5000))
    recorder.add_hazard("ebike_charging")
    recorder.add_photo(photo_bytes(1200, 900))
    recorder.stop(notes="3 幢楼道电瓶车充电")
    record = session.get("patrol", patrol_id)
    assert record.fields["hazards"] == ["ebike_charging"]
    assert len(record.fields["track"]) == 25 and len(record.fields["photos"]) == 1
    assert record.fields["ended_at"] and record.fields["notes"] == "3 幢楼道电瓶车充电"
    assert sync(session).state is SyncState.DONE


def test_a_patrol_cut_off_by_android_killing_the_app_is_picked_up_where_it_was(tmp_path, office, fixed_now):
    setup, session = enrolled(tmp_path, office, "被杀的巡查", clock=fixed_now)
    gps = FakeGps()
    recorder = patrols.PatrolRecorder(session, gps)
    patrol_id = recorder.start()
    recorder.add_hazard("gas")
    recorder.set_notes("三楼楼道")
    now_ms = int(fixed_now().timestamp() * 1000)
    for i in range(patrols.TRACK_FLUSH_POINTS):
        gps.on_fix((30.99, 119.91, now_ms + i * 1000))
    # Killed: no stop. The next start of the app makes a new recorder.
    again_gps = FakeGps()
    again = patrols.PatrolRecorder(session, again_gps)
    assert again.current is not None and again.current.patrol_id == patrol_id
    assert again.current.hazards == ["gas"] and again.current.notes == "三楼楼道"
    assert len(again.current.track) == patrols.TRACK_FLUSH_POINTS and again_gps.on_fix is not None
    again.stop()
    assert session.get("patrol", patrol_id).fields["ended_at"]
    assert patrols.PatrolRecorder(session, FakeGps()).current is None


def test_a_patrol_last_heard_of_long_ago_is_ended_at_that_moment_not_picked_up(tmp_path, office, fixed_now):
    setup, session = enrolled(tmp_path, office, "忘了结束", clock=fixed_now)
    patrol_id = patrols.PatrolRecorder(session, FakeGps()).start()
    started_at = session.get("patrol", patrol_id).fields["started_at"]
    session.clock = lambda: fixed_now() + datetime.timedelta(hours=13)
    assert patrols.PatrolRecorder(session, FakeGps()).current is None
    assert session.get("patrol", patrol_id).fields["ended_at"] == started_at
    assert patrols.PatrolRecorder(session, FakeGps()).current is None


def test_diary(tmp_path, office, fixed_now):
    setup, session = enrolled(tmp_path, office, "日记员", clock=fixed_now)
    with pytest.raises(diary.DiaryInvalid):
        diary.write_diary(session, "   ")
    diary.write_diary(session, "居民反映小区停车难", ["parking"])
    [entry] = diary.diary_entries(session)
    assert entry.fields["text"] == "居民反映小区停车难" and entry.fields["topics"] == ["parking"]


def test_sync_offline_keeps_edits_and_says_so(tmp_path, office, fixed_now):
    setup, session = enrolled(tmp_path, office, "楼道里", clock=fixed_now)
    session.change_server("http://127.0.0.1:9")
    diary.write_diary(session, "没有信号")
    outcome = sync(session)
    assert outcome.state is SyncState.OFFLINE and outcome.pending_after == 1
    assert "1条修改保存在手机上" in outcome_text(outcome)
    assert session.last_sync()["state"] == "offline"


def test_a_session_closes_its_connections_when_it_moves_server_and_when_it_closes(tmp_path, office, fixed_now):
    setup, session = enrolled(tmp_path, office, "关连接", clock=fixed_now)
    first = session.engine.transport
    closed = []
    first.close = lambda: closed.append("first")
    session.change_server(office.server.url)
    second = session.engine.transport
    second.close = lambda: closed.append("second")
    assert closed == ["first"]
    session.close()
    assert closed == ["first", "second"]


def test_background_sync_delivers_progress_and_result_through_deliver(tmp_path, office, fixed_now):
    setup, session = enrolled(tmp_path, office, "后台同步", clock=fixed_now)
    diary.write_diary(session, "后台")
    delivered, progress, done = [], [], []

    def deliver(fn):
        delivered.append(fn)

    runner = BackgroundSync(session, wipe_device=lambda: None, deliver=deliver, on_progress=progress.append,
                            on_done=done.append, attempts=1)
    assert runner.start()
    assert not runner.start()  # one at a time
    runner.wait(30)
    assert done == [] and delivered  # nothing ran on the worker thread: all waits for the UI thread
    for fn in delivered:
        fn()
    assert done[0].state is SyncState.DONE and progress and progress[-1].fraction == 1.0


def test_conflict_in_plain_words_shows_the_merged_result(tmp_path, office, fixed_now):
    _, mine = enrolled(tmp_path, office, "甲手机")
    _, other = enrolled(tmp_path, office, "乙手机")
    household = add_household(mine, office.grid_id)
    visit_id = visits.save_visit(mine, visits.new_visit(household))
    assert sync(mine).state is SyncState.DONE
    assert sync(other).state is SyncState.DONE
    draft = visits.load_visit(mine, visit_id)
    draft.notes = "我写的：老人身体不好"
    visits.save_visit(mine, draft)  # earlier, offline
    time.sleep(0.01)
    theirs = visits.load_visit(other, visit_id)
    theirs.notes = "乙写的：老人已住院"
    visits.save_visit(other, theirs)  # later, and synced first
    assert sync(other).state is SyncState.DONE
    outcome = sync(mine)
    assert outcome.state is SyncState.DONE and outcome.conflicts == 1
    assert mine.get("visit", visit_id).fields["notes"] == "乙写的：老人已住院"
    [notice] = conflict_notices(mine)
    assert "我写的：老人身体不好" in notice.body and "乙写的：老人已住院" in notice.body and "更晚" in notice.body


def test_rejection_in_plain_words(tmp_path, office):
    _, session = enrolled(tmp_path, office, "被退回")
    # A household in a grid that is not mine: the server refuses it (forbidden_scope).
    session.create("household", {"grid_id": "00000000-0000-7000-8000-000000000000", "address": "别的网格 1 号"})
    outcome = sync(session)
    assert outcome.state is SyncState.DONE and outcome.rejected == 1
    [notice] = rejection_notices(session)
    assert "不在您负责的网格里" in notice.body and "别的网格 1 号" in notice.body


def test_sign_out_warns_about_unsynced_edits_then_erases(tmp_path, office):
    setup, session = enrolled(tmp_path, office, "退出者")
    diary.write_diary(session, "还没同步")
    with pytest.raises(UnsyncedEdits) as err:
        setup.sign_out(session)
    assert err.value.count == 1 and setup.is_set_up()
    setup.sign_out(session, force=True)
    assert not setup.is_set_up() and not setup.data_dir.store.exists()


def test_revoked_with_wipe_erases_everything_and_retired_stops_syncing(tmp_path, office):
    setup, session = enrolled(tmp_path, office, "丢了手机")
    diary.write_diary(session, "手机上的秘密")
    assert sync(session).state is SyncState.DONE
    office.revoke(session.account.device_id, wipe=True)
    outcome = sync(session, wipe=setup.erase)
    assert outcome.state is SyncState.WIPED
    assert not setup.is_set_up() and not setup.data_dir.store.exists() and not setup.data_dir.vault.exists()

    setup2, kept = enrolled(tmp_path, office, "换了手机")
    diary.write_diary(kept, "留着")
    assert sync(kept).state is SyncState.DONE
    office.server.cli("device", "retire", kept.account.device_id)
    runner = BackgroundSync(kept, wipe_device=setup2.erase, attempts=1)
    assert runner.run_now().state is SyncState.RETIRED
    assert runner.retired() and not runner.start()
    assert "留着" in [e.fields["text"] for e in diary.diary_entries(kept)]  # kept, readable, after retirement


def test_wrong_pin_five_times_locks_even_across_restarts(tmp_path, office):
    now = [1_000_000.0]
    office.add_user("忘密码")
    from client.services.setup import DataDir, DeviceSetup
    from tests.client.conftest import fast_vault

    def setup_now():
        return DeviceSetup(DataDir(tmp_path / "pin"), vault_factory=lambda p: fast_vault(p, clock=lambda: now[0]))

    setup = setup_now()
    setup.set_pin(setup.enroll(office.server.url, office.code("忘密码")), PIN, PIN).close()
    for left in (4, 3, 2, 1):
        with pytest.raises(WrongPin) as err:
            setup_now().unlock("1111")
        assert err.value.attempts_left == left
    with pytest.raises(WrongPin) as fifth:
        setup_now().unlock("1111")
    assert fifth.value.locked_for == 30
    with pytest.raises(VaultLocked):
        setup_now().unlock(PIN)  # even the right PIN waits
    now[0] += 31
    with pytest.raises(WrongPin) as sixth:
        setup_now().unlock("1111")
    assert sixth.value.locked_for == 60
    now[0] += 61
    setup_now().unlock(PIN).close()
    assert setup_now().vault.failures() == 0


def test_conflict_where_my_later_edit_wins_says_so(tmp_path, office):
    _, mine = enrolled(tmp_path, office, "丙手机")
    _, other = enrolled(tmp_path, office, "丁手机")
    household = add_household(mine, office.grid_id, room="909")
    visit_id = visits.save_visit(mine, visits.new_visit(household))
    assert sync(mine).state is SyncState.DONE and sync(other).state is SyncState.DONE
    theirs = visits.load_visit(other, visit_id)
    theirs.notes = "丁先写的"
    visits.save_visit(other, theirs)
    time.sleep(0.01)
    draft = visits.load_visit(mine, visit_id)
    draft.notes = "丙后写的"
    visits.save_visit(mine, draft)  # later, but pushed second
    assert sync(other).state is SyncState.DONE
    outcome = sync(mine)
    assert outcome.conflicts == 1
    assert mine.get("visit", visit_id).fields["notes"] == "丙后写的"
    [notice] = conflict_notices(mine)
    assert "保留了您写的「丙后写的」" in notice.body and "「丁先写的」没有采用" in notice.body
