"""Dashboard pages for organizations, their engine tokens and engines."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods

from accounts.engines import (
    ACTIVITY_SORTS,
    DEFAULT_ENGINE_SORT,
    engine_detail,
    engine_listing,
    engine_sorts,
    with_activity,
)
from accounts.forms import OrganizationSettingsForm, TokenForm
from accounts.models import EngineToken
from accounts.scoping import can_maintain, organization_for, visible_organizations
from activity import charts
from activity.selectors import RANGES
from audit import services as audit
from audit.models import Action

RECENT_ENGINES = 10


@login_required
def home(request):
    organizations = list(visible_organizations(request.user))
    if len(organizations) == 1:
        return redirect("organization", slug=organizations[0].slug)
    return render(request, "accounts/organization_list.html", {"organizations": organizations})


def _context(request, organization, **extra):
    return {"org": organization, "maintainer": can_maintain(request.user, organization), **extra}


@login_required
def organization(request, slug):
    org = organization_for(request.user, slug)
    form = OrganizationSettingsForm(instance=org)
    if request.method == "POST":
        org = organization_for(request.user, slug, maintain=True)
        form = OrganizationSettingsForm(request.POST, instance=org)
        if form.is_valid():
            form.save()
            audit.record_form_changes(org, request.user, Action.SETTINGS_CHANGED, form)
            messages.success(request, "Settings saved. Engines pick them up at their next start.")
            return redirect("organization", slug=org.slug)
    return render(
        request,
        "accounts/organization.html",
        _context(
            request,
            org,
            tab="overview",
            form=form,
            engines=with_activity(org, engine_listing(org)[:RECENT_ENGINES]),
            engine_count=org.engines.count(),
            active_tokens=org.tokens.active().count(),
        ),
    )


# A new token's value waits in the session for the one page view after the redirect, so
# that reloading that page shows it no more and creates nothing.
NEW_TOKEN_KEY = "engine_new_token"


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request, slug):
    org = organization_for(request.user, slug)
    form = TokenForm()
    if request.method == "POST":
        org = organization_for(request.user, slug, maintain=True)
        form = TokenForm(request.POST)
        if form.is_valid():
            _, value = EngineToken.issue(
                org, read_only=form.cleaned_data["read_only"], label=form.cleaned_data["label"], actor=request.user
            )
            request.session[NEW_TOKEN_KEY] = {"org": org.slug, "value": value}
            return redirect("tokens", slug=org.slug)
    new_token = None
    waiting = request.session.get(NEW_TOKEN_KEY)
    if isinstance(waiting, dict) and waiting.get("org") == org.slug:
        new_token = request.session.pop(NEW_TOKEN_KEY)["value"]
    rows = org.tokens.order_by("revoked_at", "-created_at")
    return render(
        request,
        "accounts/tokens.html",
        _context(request, org, tab="tokens", form=form, tokens=rows, new_token=new_token, base_url=_engine_url(request)),
        status=400 if form.errors else 200,
    )


@login_required
@require_http_methods(["GET", "POST"])
def revoke_token(request, slug, pk):
    """GET: the confirmation. POST: revoke."""
    org = organization_for(request.user, slug, maintain=True)
    token = get_object_or_404(EngineToken, organization=org, pk=pk)
    if request.method == "GET":
        return render(request, "accounts/token_revoke.html", _context(request, org, tab="tokens", token=token))
    token.revoke(actor=request.user)
    messages.success(request, f"Revoked {token.prefix}…; engines using it now get 401.")
    return redirect("tokens", slug=org.slug)


# Columns a click sorts by: a column not in effect sorts descending first (newest,
# largest); clicking it again flips it.
ENGINE_COLUMNS = ("engine_id", "first_seen", "last_seen", *ACTIVITY_SORTS)


@login_required
def engines(request, slug):
    org = organization_for(request.user, slug)
    sort = request.GET.get("sort", "").strip() or DEFAULT_ENGINE_SORT
    error = ""
    if sort not in engine_sorts():
        error = f"Cannot sort by {sort[:40]!r}; sorted by last seen instead."
        sort = DEFAULT_ENGINE_SORT
    rows = with_activity(org, engine_listing(org, sort))
    links = {}
    for key in ENGINE_COLUMNS:
        active = sort.removeprefix("-") == key
        target = key if sort == f"-{key}" else f"-{key}"
        links[key] = {"href": "?" + urlencode({"sort": target}), "arrow": ("↓" if sort.startswith("-") else "↑") if active else ""}
    return render(
        request,
        "accounts/engines.html",
        _context(request, org, tab="engines", engines=rows, sort=sort, sort_links=links, sort_error=error),
        status=400 if error else 200,
    )


@login_required
def engine(request, slug, pk):
    org = organization_for(request.user, slug)
    found = engine_detail(org, pk)
    if found is None:
        raise Http404("no such engine")
    window, window_error, bucket_asked = charts.page_window(request.GET)
    return render(
        request,
        "accounts/engine.html",
        _context(
            request,
            org,
            tab="engines",
            engine=found,
            token_uses=found.token_uses.select_related("token").order_by("-last_used", "-pk"),
            window=window,
            window_error=window_error,
            bucket_asked=bucket_asked,
            ranges=RANGES,
            activity_charts=charts.activity_charts(org, window, engine_ref=found.pk),
        ),
        status=400 if window_error else 200,
    )


def _engine_url(request):
    base = settings.PUBLIC_URL or request.build_absolute_uri("/").rstrip("/")
    return f"{base}/magicache"
