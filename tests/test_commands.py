"""createtoken, revoketoken, listtokens, seed_demo's refusals and bootstrap."""

import io
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from accounts.models import EngineToken, Organization
from tests.support import ROOT, child_env


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
class TestCreateToken:
    def test_unknown_org_is_refused_without_create_org(self):
        with pytest.raises(CommandError, match="no organization 'newco'.*--create-org"):
            run("createtoken", "newco")
        assert not Organization.objects.exists() and not EngineToken.objects.exists()

    def test_create_org_creates_it_and_prints_token_last(self):
        out = run("createtoken", "newco", "--create-org", "--label", "ci runners")
        assert "Created organization newco." in out
        value = out.strip().splitlines()[-1]
        token = EngineToken.objects.find(value)
        assert token is not None
        assert token.organization.slug == "newco"
        assert token.label == "ci runners"
        assert token.read_only is False

    def test_read_only_for_existing_org(self, org):
        out = run("createtoken", "acme", "--read-only")
        assert "Created organization" not in out
        assert EngineToken.objects.find(out.strip().splitlines()[-1]).read_only is True
        assert Organization.objects.filter(slug="acme").count() == 1

    def test_bad_slug(self):
        with pytest.raises(CommandError):
            run("createtoken", "Not A Slug", "--create-org")
        assert not Organization.objects.exists()


def issue_with_lookup(org, lookup, **kwargs):
    """A token whose listed prefix is cwt_<lookup> (values are random; tests need clashes)."""
    row, value = EngineToken.issue(org, **kwargs)
    EngineToken.objects.filter(pk=row.pk).update(lookup=lookup)
    row.refresh_from_db()
    return row


@pytest.mark.django_db
class TestRevokeAndList:
    def test_revoke_by_value(self, org):
        row, value = EngineToken.issue(org)
        run("revoketoken", value)
        assert EngineToken.objects.find(value) is None
        row.refresh_from_db()
        assert row.revoked

    def test_revoke_by_listed_prefix(self, org):
        row, value = EngineToken.issue(org)
        run("revoketoken", row.prefix)
        assert EngineToken.objects.find(value) is None

    def test_revoke_by_any_unambiguous_prefix(self, org):
        target = issue_with_lookup(org, "Eabc1234")
        other = issue_with_lookup(org, "Fabc1234")
        out = run("revoketoken", "cwt_E")
        assert out.strip() == "Revoked cwt_Eabc1234 (acme)."
        target.refresh_from_db()
        other.refresh_from_db()
        assert target.revoked and not other.revoked

    def test_prefix_is_case_sensitive(self, org):
        issue_with_lookup(org, "eabc1234")
        with pytest.raises(CommandError, match="no token starts with 'cwt_E'"):
            run("revoketoken", "cwt_E")
        assert not EngineToken.objects.filter(revoked_at__isnull=False).exists()

    def test_ambiguous_prefix_is_refused_and_revokes_nothing(self, org, other_org):
        issue_with_lookup(org, "Eabc1234")
        issue_with_lookup(other_org, "Exyz9876")
        with pytest.raises(CommandError, match="matches 2 tokens: cwt_Eabc1234 \\(acme\\), cwt_Exyz9876 \\(globex\\)"):
            run("revoketoken", "cwt_E")
        assert not EngineToken.objects.filter(revoked_at__isnull=False).exists()
        run("revoketoken", "cwt_Ex")
        assert EngineToken.objects.get(lookup="Exyz9876").revoked

    def test_a_revoked_token_does_not_make_a_prefix_ambiguous(self, org):
        old = issue_with_lookup(org, "Eold0000")
        old.revoke()
        live = issue_with_lookup(org, "Enew0000")
        run("revoketoken", "cwt_E")
        live.refresh_from_db()
        assert live.revoked

    def test_revoke_unknown(self, org):
        with pytest.raises(CommandError):
            run("revoketoken", "cwt_nothere1")
        with pytest.raises(CommandError):
            run("revoketoken", "cwt_")

    def test_longer_than_listed_prefix_must_be_the_whole_token(self, org):
        row, value = EngineToken.issue(org)
        with pytest.raises(CommandError, match="no token starts with"):
            run("revoketoken", value[:-1])
        row.refresh_from_db()
        assert not row.revoked

    def test_list_unknown_org_is_an_error(self, org):
        with pytest.raises(CommandError, match="no organization 'nosuch'"):
            run("listtokens", "--org", "nosuch")

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
def test_seed_demo_refuses_an_unknown_org():
    with pytest.raises(CommandError, match="no organization 'nosuch'"):
        run("seed_demo", "--org", "nosuch")
    assert not EngineToken.objects.exists()


def test_unknown_organization_exits_non_zero(transactional_db):
    done = subprocess.run([sys.executable, "manage.py", "listtokens", "--org", "nosuch"], cwd=ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "nosuch" in done.stderr and "Traceback" not in done.stderr


# manage.py turns a CommandError into exit status 1 and its message, without a traceback
# (the subprocess test above): every command refuses an unknown organization that way.
@pytest.mark.parametrize(
    "args",
    [
        ["gc", "--org", "nosuch"],
        ["gc", "--org", "nosuch", "--dry-run"],
        ["verifyblobs", "--org", "nosuch"],
        ["createtoken", "nosuch"],
        ["seed_demo", "--org", "nosuch"],
    ],
)
def test_every_command_refuses_an_unknown_organization(args, db):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="nosuch"):
        call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())
    assert not EngineToken.objects.exists()


def test_serve_refuses_a_busy_port_naming_cacheweb_bind(monkeypatch):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setenv("CACHEWEB_BIND", f"127.0.0.1:{port}")
        out = io.StringIO()
        with pytest.raises(CommandError, match=f"CACHEWEB_BIND=127.0.0.1:{port}"):
            call_command("serve", stdout=out)
    assert out.getvalue() == ""


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

    def test_second_run_keeps_admin_and_issues_no_token(self, monkeypatch):
        monkeypatch.setenv("CACHEWEB_BIND", "127.0.0.1:9999")
        run("bootstrap")
        out = run("bootstrap")
        assert get_user_model().objects.count() == 1
        assert "password:" not in out and "_EXPERIMENTAL_DAGGER_CACHESERVICE_TOKEN" not in out
        assert EngineToken.objects.count() == 1
        assert "Dashboard: http://127.0.0.1:9999/ " in out
        assert "1 active token(s) for 'default'" in out and "bin/run --new-token" in out

    def test_new_token_on_request(self):
        run("bootstrap")
        out = run("bootstrap", "--new-token")
        value = next(line.split("=", 1)[1] for line in out.split() if line.startswith("_EXPERIMENTAL_DAGGER_CACHESERVICE_TOKEN="))
        assert EngineToken.objects.find(value).organization.slug == "default"
        assert EngineToken.objects.count() == 2

    def test_admin_line_points_at_the_dashboard(self, monkeypatch):
        monkeypatch.setenv("CACHEWEB_BIND", "0.0.0.0:9998")
        out = run("bootstrap", "--no-token")
        assert "Log in to the dashboard at http://127.0.0.1:9998/ (Django admin: http://127.0.0.1:9998/admin/)" in out

    def test_admin_password_from_environment(self, monkeypatch):
        monkeypatch.setenv("CACHEWEB_ADMIN_PASSWORD", "s3cret-Passw0rd")
        run("bootstrap", "--no-token")
        assert get_user_model().objects.get().check_password("s3cret-Passw0rd")
        assert not EngineToken.objects.exists()
