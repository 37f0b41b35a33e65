"""The profile page where operators manage their own API tokens."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from api.forms import ApiTokenForm
from api.models import ApiToken

# The new value waits in the session for the one page view after the redirect.
NEW_TOKEN_KEY = "api_new_token"


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request):
    if request.method == "POST":
        form = ApiTokenForm(request.POST)
        if form.is_valid():
            row, value = ApiToken.issue(
                request.user,
                read_only=form.cleaned_data["read_only"],
                label=form.cleaned_data["label"],
                expires_days=form.cleaned_data["expires_days"],
                actor=request.user,
            )
            request.session[NEW_TOKEN_KEY] = value
            return redirect("profile-tokens")
    else:
        form = ApiTokenForm()
    new_token = request.session.pop(NEW_TOKEN_KEY, None)
    rows = request.user.api_tokens.order_by("revoked_at", "-created_at")
    return render(
        request,
        "api/profile_tokens.html",
        {"form": form, "tokens": rows, "new_token": new_token, "api_url": request.build_absolute_uri("/api/v1/")},
        status=400 if form.errors else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def revoke(request, pk):
    """GET: the confirmation. POST: revoke. Only the user's own tokens (others: 404)."""
    token = get_object_or_404(ApiToken, user=request.user, pk=pk)
    if request.method == "GET":
        return render(request, "api/profile_token_revoke.html", {"token": token})
    token.revoke(actor=request.user)
    messages.success(request, f"Revoked {token.prefix}…; requests with it now get 401.")
    return redirect(reverse("profile-tokens"))
