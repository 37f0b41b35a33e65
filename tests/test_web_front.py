"""The web front: security headers, login throttling, error pages, favicon."""

from datetime import timedelta

import pytest
import time_machine
from django.test import override_settings
from django.utils import timezone

from accounts.models import LoginFailure

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("maya", password="pw-maya-123")


def login(client, username, password, path="/login/"):
    return client.post(path, {"username": username, "password": password})


def test_csp_on_every_page(client, user):
    for path in ["/login/", "/admin/login/", "/no-such-page/", "/healthz", "/magicache/config"]:
        csp = client.get(path).headers.get("Content-Security-Policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp


def test_five_failures_lock_the_name_even_with_the_right_password(client, user, settings):
    settings.LOGIN_FAILURES_ALLOWED = 5
    settings.LOGIN_FAILURE_WINDOW = 900
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(5):
            assert login(client, "maya", "wrong").status_code == 200
        refused = login(client, "Maya", "pw-maya-123")
        assert refused.status_code == 200 and "Too many failed logins" in refused.content.decode()
        assert "_auth_user_id" not in client.session
        # The admin's login is throttled too.
        assert "Too many failed logins" in login(client, "maya", "pw-maya-123", "/admin/login/").content.decode()
        # Another user is not locked out by maya's failures.
        from django.contrib.auth import get_user_model

        get_user_model().objects.create_user("zed", password="pw-zed-12345")
        assert login(client, "zed", "pw-zed-12345").status_code == 302
        client.logout()
        clock.shift(timedelta(seconds=901))
        assert login(client, "maya", "pw-maya-123").status_code == 302
        # Old failures are pruned at the next failure.
        client.logout()
        login(client, "maya", "wrong")
        assert LoginFailure.objects.count() == 2
        assert not LoginFailure.objects.filter(at__lt=timezone.now() - timedelta(seconds=900)).exists()


def test_one_address_is_throttled_across_names(client, django_user_model, settings):
    settings.LOGIN_FAILURES_ALLOWED = 2
    django_user_model.objects.create_user("zed", password="pw-zed-12345")
    for n in range(10):  # 2 x 5 failures, each for a different name
        login(client, f"nobody{n}", "x")
    assert "Too many failed logins" in login(client, "zed", "pw-zed-12345").content.decode()


@override_settings(DEBUG=False)
def test_styled_error_pages(client, operators):
    page = client.get("/no-such-page/")
    assert page.status_code == 404
    html = page.content.decode()
    assert "cacheweb.css" in html and "Not found" in html
    # An outsider's view of another organization's page is the same 404.
    client.force_login(operators["outsider"])
    assert "Not found" in client.get("/orgs/acme/").content.decode()


def test_403_and_500_templates_render():
    from django.template.loader import render_to_string

    assert "Forbidden" in render_to_string("403.html")
    html = render_to_string("500.html")
    assert "Server error" in html and "cacheweb.css" in html


def test_favicon(client):
    page = client.get("/login/").content.decode()
    assert 'rel="icon"' in page
    response = client.get("/favicon.ico")
    assert response.status_code in (301, 302) and response["Location"].endswith(".svg")


@override_settings(SESSION_COOKIE_SECURE=True, CSRF_COOKIE_SECURE=True, SECURE_HSTS_SECONDS=31536000,
                   SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
def test_behind_a_tls_proxy_cookies_are_secure_and_hsts_is_sent(client, user):
    over_tls = client.get("/login/", HTTP_X_FORWARDED_PROTO="https")
    assert over_tls["Strict-Transport-Security"].startswith("max-age=31536000")
    response = client.post("/login/", {"username": "maya", "password": "pw-maya-123"}, HTTP_X_FORWARDED_PROTO="https")
    assert response.cookies["sessionid"]["secure"]
    assert "Strict-Transport-Security" not in client.get("/login/")  # plain HTTP: no HSTS


def test_check_deploy_with_a_production_environment(tmp_path):
    """Only the warnings the README explains remain (W005, W008, W021), and the TLS
    settings follow from an https public URL."""
    import re
    import secrets
    import subprocess
    import sys

    from tests.support import ROOT

    env = {
        "PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "cacheweb.settings",
        "CACHEWEB_DATA_DIR": str(tmp_path), "CACHEWEB_SECRET_KEY": secrets.token_urlsafe(60),
        "CACHEWEB_PUBLIC_URL": "https://cache.example.com", "CACHEWEB_BEHIND_PROXY": "1",
        "CACHEWEB_ALLOWED_HOSTS": "cache.example.com",
    }
    run = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert set(re.findall(r"security\.W\d+", run.stdout + run.stderr)) == {
        "security.W005", "security.W008", "security.W021"
    }, run.stdout + run.stderr
    probe = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings as s; "
         "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert probe.stdout.split() == ["True", "True", "31536000"], probe.stderr
