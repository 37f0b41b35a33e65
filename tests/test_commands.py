"""createtoken, revoketoken, listtokens and bootstrap."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from accounts.models import EngineToken, Organization


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
class TestCreateToken:
    def test_creates_org_and_prints_token_last(self):
        out = run("createtoken", "newco", "--label", "ci runners")
        value = out.strip().splitlines()[-1]
        token = EngineToken.objects.find(value)
        assert token is not None
        assert token.organization.slug == "newco"
        assert token.label == "ci runners"
        assert token.read_only is False

    def test_read_only(self, org):
        value = run("createtoken", "acme", "--read-only").strip().splitlines()[-1]
        assert EngineToken.objects.find(value).read_only is True
        assert Organization.objects.filter(slug="acme").count() == 1

    def test_bad_slug(self):
        with pytest.raises(CommandError):
            run("createtoken", "Not A Slug")
        assert not Organization.objects.exists()


@pytest.mark.django_db
class TestRevokeAndList:
    def test_revoke_by_value(self, org):
        row, value = EngineToken.issue(org)
        run("revoketoken", value)
        assert EngineToken.objects.find(value) is None
        row.refresh_from_db()
        assert row.revoked

    def test_revoke_by_prefix(self, org):
        row, value = EngineToken.issue(org)
        run("revoketoken", row.prefix)
        assert EngineToken.objects.find(value) is None

    def test_revoke_unknown(self, org):
        with pytest.raises(CommandError):
            run("revoketoken", "cwt_nothere1")

    def test_list_hides_revoked_unless_all(self, org):
        kept, _ = EngineToken.issue(org, label="kept")
        gone, _ = EngineToken.issue(org, label="gone", read_only=True)
        gone.revoke()
        out = run("listtokens")
        assert kept.prefix in out and gone.prefix not in out
        out = run("listtokens", "--all")
        assert gone.prefix in out and "revoked" in out and "read-only" in out

    def test_list_never_prints_values(self, org):
        _, value = EngineToken.issue(org)
        assert value not in run("listtokens", "--all")


@pytest.mark.django_db
class TestBootstrap:
    def test_first_run_creates_admin_org_and_token(self, monkeypatch):
        monkeypatch.setenv("CACHEWEB_BIND", "127.0.0.1:9999")
        out = run("bootstrap")
        assert get_user_model().objects.filter(is_superuser=True, username="admin").exists()
        assert "password:" in out
        assert Organization.objects.filter(slug="default").exists()
        lines = [line.strip() for line in out.splitlines()]
        assert "_EXPERIMENTAL_DAGGER_CACHESERVICE_URL=http://127.0.0.1:9999/magicache" in lines
        value = next(line.split("=", 1)[1] for line in lines if line.startswith("_EXPERIMENTAL_DAGGER_CACHESERVICE_TOKEN="))
        assert EngineToken.objects.find(value).organization.slug == "default"

    def test_second_run_keeps_admin_and_issues_new_token(self):
        run("bootstrap")
        out = run("bootstrap")
        assert get_user_model().objects.count() == 1
        assert "password:" not in out
        assert EngineToken.objects.count() == 2

    def test_admin_password_from_environment(self, monkeypatch):
        monkeypatch.setenv("CACHEWEB_ADMIN_PASSWORD", "s3cret-Passw0rd")
        run("bootstrap", "--no-token")
        assert get_user_model().objects.get().check_password("s3cret-Passw0rd")
        assert not EngineToken.objects.exists()
