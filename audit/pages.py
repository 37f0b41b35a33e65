"""The audit log page of an organization (any member may read it)."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from accounts.scoping import can_maintain, organization_for
from audit import selectors
from audit.models import Action, ActorKind

PER_PAGE = 50


@login_required
@require_GET
def audit_log(request, slug):
    org = organization_for(request.user, slug)
    errors = {}
    try:
        query = selectors.AuditQuery.from_params(request.GET, org)
        rows = selectors.entries(org, query)
    except selectors.AuditQuery.Invalid as exc:
        errors = exc.errors
        query = selectors.AuditQuery()
        rows = selectors.entries(org).none()
    page = Paginator(rows, PER_PAGE).get_page(request.GET.get("page"))
    kept = query.params()
    return render(
        request,
        "audit/audit_log.html",
        {
            "org": org,
            "maintainer": can_maintain(request.user, org),
            "tab": "audit",
            "page": page,
            "query": query,
            "errors": errors,
            "kinds": Action.choices,
            "actors": ActorKind.choices,
            "users": selectors.filter_users(org),
            "page_query": urlencode(kept) + "&" if kept else "",
        },
        status=400 if errors else 200,
    )
