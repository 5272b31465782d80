"""A copy of the app's data folder, without the PIN, gives away no name, phone, note or photo."""

from __future__ import annotations

import shutil

from client.services import cases, visits
from client.services.drafts import case_key, keep_draft, restore_draft
from client.services.sync_runner import BackgroundSync, SyncState
from tests.client.conftest import PIN, make_setup, photo_bytes

SECRETS = ["顾建国", "13912345678", "独居，儿子在杭州", "老人说夜里睡不着", "长兴路 88 号",
           "楼上漏水三天了", "13700002222"]  # the last two only in a case form left unsaved (a draft)


def _raw_files(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_copied_data_folder_reveals_no_household_visit_photo_or_draft(tmp_path, office):
    office.add_user("加密检查")
    setup = make_setup(tmp_path / "phone")
    session = setup.set_pin(setup.enroll(office.server.url, office.code("加密检查")), PIN, PIN)
    household = session.create("household", {"grid_id": office.grid_id, "address": "长兴路 88 号",
                                              "head_name": "顾建国",
                                              "phone": "13912345678", "notes": "独居，儿子在杭州"})
    draft = visits.new_visit(household)
    draft.notes = "老人说夜里睡不着"
    sha = visits.attach_photo(session, draft, photo_bytes(color=(1, 2, 3)))
    visits.save_visit(session, draft)
    stored_photo = session.photo(sha)
    assert BackgroundSync(session, wipe_device=lambda: None, attempts=1).run_now().state is SyncState.DONE
    # A case report left halfway, with a photo: kept as a draft, never synced.
    opened = cases.CaseDraft(household_id=household)
    case = restore_draft(session, case_key(household), opened).form
    case.title, case.description = "楼上漏水三天了", "住户电话 13700002222"
    draft_sha = cases.attach_photo(session, case, photo_bytes(color=(4, 5, 6)))
    keep_draft(session, case_key(household), case, opened)
    draft_photo = session.cached_photo(draft_sha)
    session.store.set_meta("probe", "x")  # one more write so the WAL holds recent pages too

    # A thief's copy, taken while the app runs (WAL and all), and another after it closed.
    live_copy = tmp_path / "live-copy"
    shutil.copytree(setup.data_dir.root, live_copy)
    session.close()
    closed_copy = tmp_path / "closed-copy"
    shutil.copytree(setup.data_dir.root, closed_copy)

    for folder in (live_copy, closed_copy):
        files = _raw_files(folder)
        assert any(p.suffix == ".sqlite" for p in files) and len(files) >= 3
        for path, raw in files.items():
            for secret in SECRETS:
                for encoding in ("utf-8", "utf-16-le"):
                    assert secret.encode(encoding) not in raw, (secret, path)
            assert b"\xff\xd8\xff" not in raw, path  # no JPEG starts anywhere
            assert stored_photo[1000:1064] not in raw, path
            assert draft_photo[1000:1064] not in raw, path
    # And with the PIN, everything is there.
    again = setup.unlock(PIN)
    assert again.get("household", household).fields["head_name"] == "顾建国"
    assert again.photo(sha) == stored_photo
    assert restore_draft(again, case_key(household), opened).form == case
    assert again.cached_photo(draft_sha) == draft_photo
    again.close()
