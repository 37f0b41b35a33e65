"""Login throttling, shared by every process through the database.

Each failed login leaves a row keyed by a hash of the user name and one by the client
address. While a user name has LOGIN_FAILURES_ALLOWED failures within
LOGIN_FAILURE_WINDOW seconds (or an address five times as many), logins for it are
refused before the password is checked, whether the password is right or not.
"""

import hashlib
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.utils import timezone

from accounts.models import LoginFailure

ADDRESS_FACTOR = 5


def _keys(request, username):
    name = "user:" + hashlib.sha256((username or "").strip().lower().encode()).hexdigest()
    address = "addr:" + ((request.META.get("REMOTE_ADDR") if request else "") or "-")
    return name, address


def is_throttled(request, username, now=None):
    now = now or timezone.now()
    since = now - timedelta(seconds=settings.LOGIN_FAILURE_WINDOW)
    name, address = _keys(request, username)
    recent = LoginFailure.objects.filter(at__gt=since)
    return (
        recent.filter(key=name).count() >= settings.LOGIN_FAILURES_ALLOWED
        or recent.filter(key=address).count() >= settings.LOGIN_FAILURES_ALLOWED * ADDRESS_FACTOR
    )


def record_failure(request, username, now=None):
    now = now or timezone.now()
    LoginFailure.objects.bulk_create([LoginFailure(key=k, at=now) for k in _keys(request, username)])
    LoginFailure.objects.filter(at__lt=now - timedelta(seconds=settings.LOGIN_FAILURE_WINDOW)).delete()


class ThrottledMixin:
    throttled_message = "Too many failed logins; try again later."
    throttled = False  # for the template

    def clean(self):
        username = self.cleaned_data.get("username")
        if is_throttled(self.request, username):
            self.throttled = True
            raise forms.ValidationError(self.throttled_message, code="throttled")
        try:
            return super().clean()
        except forms.ValidationError:
            record_failure(self.request, username)
            raise


class ThrottledAuthenticationForm(ThrottledMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledMixin, AdminAuthenticationForm):
    pass
