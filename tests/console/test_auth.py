"""Signing in, sessions, CSRF and roles: who reaches which console page."""

from __future__ import annotations

import pytest

from server.console.auth import SESSION_COOKIE
from tests.console.conftest import PASSWORD

SUPERVISOR_PAGES = [
    "/console/",
    "/console/sync-log",
    "/console/households",
    "/console/visits",
    "/console/conflicts",
    "/console/conflicts?state=resolved",
    "/console/cases",
    "/console/cases?status=reported",
]
ADMIN_PAGES = [
    "/console/admin/users",
    "/console/admin/grids",
    "/console/admin/import",
    "/console/admin/enrollment",
    "/console/admin/devices",
]


def test_the_login_page_is_chinese_first_and_english_on_request(site):
    page = site.browser.get("/console/login")
    assert page.status_code == 200 and "登录管理台" in page.text and 'lang="zh-CN"' in page.text
    switched = site.browser.get("/console/lang/en?next=/console/login")
    assert switched.status_code == 303 and switched.headers["location"] == "/console/login"
    assert "Sign in to the console" in site.browser.get("/console/login").text


def test_a_language_switch_never_redirects_off_the_console(site):
    for target in ("https://evil.example/", "//evil.example/x", "/v1/sync/pull", "/console\\..\\x"):
        reply = site.browser.get("/console/lang/en", params={"next": target})
        assert reply.headers["location"] == "/console/"


def test_a_right_password_signs_in_with_an_httponly_samesite_cookie(site):
    reply = site.browser.login("sup_a")
    assert reply.status_code == 303 and reply.headers["location"] == "/console/"
    cookie = next(h for h in reply.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)).lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/console" in cookie
    assert site.browser.get("/console/").status_code == 200


@pytest.mark.parametrize(
    "name, password, status",
    [
        ("sup_a", "wrong-password", 401),
        ("nobody", PASSWORD, 401),
        ("wang", PASSWORD, 401),  # a grid worker has no console access
        ("", "", 400),
    ],
)
def test_a_wrong_login_is_refused_and_says_so(site, name, password, status):
    reply = site.browser.login(name, password)
    assert reply.status_code == status
    assert SESSION_COOKIE not in reply.cookies
    assert site.browser.get("/console/").status_code == 303


def test_without_a_session_every_page_redirects_to_the_login_with_the_way_back(site):
    for path in SUPERVISOR_PAGES + ADMIN_PAGES:
        reply = site.browser.get(path)
        assert reply.status_code == 303, path
        assert reply.headers["location"].startswith("/console/login?next=")


def test_a_forged_or_tampered_session_cookie_is_no_session(site):
    site.browser.login("sup_a")
    token = site.browser.client.cookies.get(SESSION_COOKIE)
    user_id, issued, fingerprint, mac = token.split(".")
    for forged in (
        f"{user_id}.{issued}.{fingerprint}.AAAA",
        f"{user_id}.{int(issued) - 13 * 3600}.{fingerprint}.{mac}",
        "garbage",
    ):
        site.browser.client.cookies.set(SESSION_COOKIE, forged, path="/console")
        assert site.browser.get("/console/").status_code == 303


def test_a_password_reset_ends_the_open_sessions(site):
    from server.accounts.service import set_password

    site.browser.login("sup_a")
    assert site.browser.get("/console/").status_code == 200
    site.call(set_password, site.sessionmaker, "sup_a", "another-password-1")
    assert site.browser.get("/console/").status_code == 303
    assert site.browser.login("sup_a", "another-password-1").status_code == 303


def test_a_form_without_the_csrf_token_is_refused(site):
    site.browser.login("sup_a")
    reply = site.browser.post("/console/logout", csrf=False)
    assert reply.status_code == 403
    reply = site.browser.post("/console/logout", {"_csrf": "not-the-token"}, csrf=False)
    assert reply.status_code == 403
    assert site.browser.get("/console/").status_code == 200  # still signed in


def test_the_login_form_itself_needs_the_csrf_token(site):
    site.browser.client.cookies.clear()
    reply = site.browser.post("/console/login", {"name": "sup_a", "password": PASSWORD}, csrf=False)
    assert reply.status_code == 403


def test_logout_ends_the_session(site):
    site.browser.login("sup_a")
    reply = site.browser.post("/console/logout")
    assert reply.status_code == 303 and reply.headers["location"] == "/console/login"
    assert site.browser.get("/console/").status_code == 303


def test_a_supervisor_sees_every_supervisor_page_and_no_admin_page(site):
    site.browser.login("sup_a")
    for path in SUPERVISOR_PAGES:
        assert site.browser.get(path).status_code == 200, path
    for path in ADMIN_PAGES:
        reply = site.browser.get(path)
        assert reply.status_code == 403, path
        assert "没有权限" in reply.text
    assert site.browser.post("/console/admin/grids", {"name": "x", "community": "y"}).status_code == 403
    assert site.browser.post("/console/admin/users", {"name": "x", "role": "admin"}).status_code == 403


def test_an_administrator_sees_every_page(site):
    site.browser.login("admin")
    for path in SUPERVISOR_PAGES + ADMIN_PAGES:
        reply = site.browser.get(path)
        assert reply.status_code == 200, path
        assert reply.headers["cache-control"] == "no-store"


def test_an_unknown_console_page_is_a_404_page(site):
    site.browser.login("admin")
    assert site.browser.get("/console/visits/not-a-record").status_code == 404
    assert site.browser.get("/console/conflicts/999999").status_code == 404


def test_repeated_wrong_passwords_are_slowed_down_for_that_name(site):
    for _ in range(5):
        assert site.browser.login("sup_a", "wrong-password").status_code == 401
    throttled = site.browser.login("sup_a", PASSWORD)
    assert throttled.status_code == 429 and "分钟后再试" in throttled.text
    assert site.browser.login("sup_b").status_code == 303  # another name is not held up


def test_a_fullwidth_spelling_of_a_name_signs_in_and_counts_against_the_same_name(site):
    assert site.browser.login("ｓｕｐ＿ａ").status_code == 303  # typed in an input method's fullwidth mode
    for spelling in ("sup_a", "ｓｕｐ＿ａ", " sup_a", "ｓｕｐ_a", "sup_a"):
        assert site.browser.login(spelling, "wrong-password").status_code == 401
    assert site.browser.login("ｓｕｐ＿ａ", PASSWORD).status_code == 429


def test_the_throttle_forgets_old_failures_and_a_success_clears_it():
    from server.console.auth import LoginThrottle

    throttle = LoginThrottle(limit=3, window_s=60)
    for t in (0, 1, 2):
        throttle.failed("Zhou", "10.0.0.1", now=t)
    assert throttle.wait_s("zhou", "10.0.0.1", now=3) == pytest.approx(57)
    assert throttle.wait_s("zhou", "10.0.0.2", now=3) == 0
    assert throttle.wait_s("zhou", "10.0.0.1", now=61) == 0
    throttle.failed("zhou", "10.0.0.1", now=62)
    throttle.succeeded("zhou", "10.0.0.1")
    assert throttle.wait_s("zhou", "10.0.0.1", now=63) == 0


def test_pages_forbid_inline_scripts_and_framing(site):
    page = site.browser.get("/console/login")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
