"""Drafts: a form left unsaved is kept (sealed, on the phone only) until it is saved or discarded."""

from __future__ import annotations

import datetime

import pytest

from client.services import cases, visits
from client.services.drafts import DIARY_KEY, case_key, drop_draft, keep_draft, restore_draft, visit_key
from client.services.diary import DiaryForm
from client.services.setup import UnsyncedEdits
from tests.client.conftest import PIN, photo_bytes
from tests.client.test_forgot_pin import files_left
from tests.client.test_services_flow import add_household, enrolled, sync


def visit_left_halfway(session, household_id, photo_colour=(10, 200, 30)):
    """A new visit with a method, a topic, notes, a photo and a follow-up chosen, then Back pressed."""
    opened = visits.new_visit(household_id)
    form = restore_draft(session, visit_key(None, household_id), opened).form
    form.method = "sit"
    form.topics.append("health")
    form.notes = "老人说楼上漏水，电话13700002222"
    sha = visits.attach_photo(session, form, photo_bytes(1200, 900, color=photo_colour))
    form.follow_up_on = session.today() + datetime.timedelta(days=7)
    keep_draft(session, visit_key(None, household_id), form, opened)
    return form, sha


def reopen_visit(session, household_id):
    return restore_draft(session, visit_key(None, household_id), visits.new_visit(household_id))


def test_a_visit_left_unsaved_comes_back_as_it_was_when_the_form_is_opened_again(tmp_path, office):
    _, session = enrolled(tmp_path, office, "草稿一")
    household = add_household(session, office.grid_id)
    left, sha = visit_left_halfway(session, household)

    reopened = reopen_visit(session, household)
    assert reopened.form == left and reopened.form is not left
    assert reopened.kept_at is not None
    assert session.cached_photo(sha)[:2] == b"\xff\xd8"
    # Another household's new visit, and the same household's case form, have drafts of their own.
    assert reopen_visit(session, add_household(session, office.grid_id, room="402")).kept_at is None
    assert restore_draft(session, case_key(household), cases.CaseDraft(household_id=household)).kept_at is None


def test_a_draft_survives_an_app_restart_once_the_pin_unlocks_it(tmp_path, office):
    setup, session = enrolled(tmp_path, office, "草稿二")
    household = add_household(session, office.grid_id)
    left, sha = visit_left_halfway(session, household)
    session.close()  # Android killed the app in the background

    again = setup.unlock(PIN)
    reopened = reopen_visit(again, household)
    assert reopened.form == left
    assert again.cached_photo(sha)[:2] == b"\xff\xd8"
    again.close()


def test_a_form_left_untouched_or_put_back_as_it_was_keeps_no_draft(tmp_path, office):
    _, session = enrolled(tmp_path, office, "草稿三")
    opened = DiaryForm()
    keep_draft(session, DIARY_KEY, DiaryForm(), opened)
    assert restore_draft(session, DIARY_KEY, opened).kept_at is None
    keep_draft(session, DIARY_KEY, DiaryForm(text="顾阿姨说"), opened)
    assert restore_draft(session, DIARY_KEY, opened).form.text == "顾阿姨说"
    keep_draft(session, DIARY_KEY, DiaryForm(), opened)  # the user deleted what they typed
    assert restore_draft(session, DIARY_KEY, opened).kept_at is None


def test_a_draft_is_never_sent_and_saving_sends_the_visit_with_its_photo_and_drops_the_draft(tmp_path, office):
    _, session = enrolled(tmp_path, office, "草稿四")
    household = add_household(session, office.grid_id)
    assert sync(session).pushed == 1  # the household
    left, sha = visit_left_halfway(session, household)

    assert session.pending_count() == 0 and session.store.blobs_to_upload() == []
    outcome = sync(session)
    assert (outcome.pushed, outcome.photos_up) == (0, 0)

    visits.save_visit(session, left)
    drop_draft(session, visit_key(None, household))
    assert reopen_visit(session, household).kept_at is None
    outcome = sync(session)
    assert (outcome.pushed, outcome.photos_up) == (1, 1)
    [visit] = session.records("visit")
    assert visit.fields["photos"] == [sha] and visit.fields["notes"] == left.notes
    assert session.cached_photo(sha) is not None


def test_discarding_a_draft_erases_it_and_the_photos_only_it_held(tmp_path, office):
    _, session = enrolled(tmp_path, office, "草稿五")
    household = add_household(session, office.grid_id)
    _, sha = visit_left_halfway(session, household)
    # A case form holds the same photo (picked twice from the gallery): it must keep it.
    opened_case = cases.CaseDraft(household_id=household)
    case = restore_draft(session, case_key(household), opened_case).form
    shared = cases.attach_photo(session, case, photo_bytes(1200, 900, color=(10, 200, 30)))
    only_case = cases.attach_photo(session, case, photo_bytes(1200, 900, color=(90, 90, 90)))
    assert shared == sha
    keep_draft(session, case_key(household), case, opened_case)

    drop_draft(session, visit_key(None, household))
    assert reopen_visit(session, household).kept_at is None
    assert session.cached_photo(sha) is not None  # the case's draft still names it

    drop_draft(session, case_key(household))
    assert restore_draft(session, case_key(household), opened_case).kept_at is None
    assert session.cached_photo(sha) is None and session.cached_photo(only_case) is None
    assert not (session.store.blob_dir / sha).exists()
    assert session.store.blob_state(sha) is None and sync(session).photos_up == 0


def test_an_edited_visit_keeps_only_what_the_user_changed_so_a_sync_in_between_is_not_undone(tmp_path, office):
    _, session = enrolled(tmp_path, office, "草稿六")
    household = add_household(session, office.grid_id)
    visit_id = visits.save_visit(session, visits.new_visit(household))
    key = visit_key(visit_id, household)
    opened = visits.load_visit(session, visit_id)
    form = restore_draft(session, key, opened).form
    form.notes = "复诊：血压正常了"
    keep_draft(session, key, form, opened)

    session.edit("visit", visit_id, {"topics": ["health"]})  # as a pulled change would land
    reopened = restore_draft(session, key, visits.load_visit(session, visit_id)).form
    assert reopened.notes == "复诊：血压正常了" and reopened.topics == ["health"]


@pytest.mark.parametrize("erase", ["sign_out", "forgot_pin", "remote_wipe"])
def test_signing_out_forgetting_the_pin_and_a_remote_wipe_erase_drafts(tmp_path, office, erase):
    name = {"sign_out": "草稿七", "forgot_pin": "草稿八", "remote_wipe": "草稿九"}[erase]
    setup, session = enrolled(tmp_path, office, name)
    household = add_household(session, office.grid_id)
    visit_left_halfway(session, household)
    if erase == "sign_out":
        with pytest.raises(UnsyncedEdits) as asked:
            setup.sign_out(session)  # asks first: the household waits to sync, the visit is a draft
        assert (asked.value.count, asked.value.drafts) == (1, 1) and setup.is_set_up()
        setup.sign_out(session, force=True)
    elif erase == "forgot_pin":
        session.close()
        setup.erase_to_enroll_again()
    else:
        sync(session)
        office.revoke(session.account.device_id, wipe=True)

        def wipe():
            session.store.wipe()
            setup.erase()

        sync(session, wipe=wipe)
    assert files_left(setup.data_dir.root) == ["settings.json"]  # the store, its photos and the key went
