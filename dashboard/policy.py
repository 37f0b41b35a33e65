"""The storage policy page of the Cache tab: usage against the limit, the rules in force,
the last lifecycle passes, when the next runs, and what it would delete. Maintainers set
the organization's overrides here; viewers read."""

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts.scoping import can_maintain, organization_for
from retention import services as retention
from retention.forms import StoragePolicyForm, initial_for
from retention.models import StoragePolicy

PASSES_SHOWN = 10
# Items of each kind the preview lists (the counts cover all of them).
PREVIEW_ITEMS = 50
PREVIEW_STEPS = 50


@login_required
@require_http_methods(["GET", "POST"])
def policy(request, slug):
    org = organization_for(request.user, slug)
    own = StoragePolicy.for_organization(org)
    if request.method == "POST":
        org = organization_for(request.user, slug, maintain=True)
        form = StoragePolicyForm(request.POST)
        if form.is_valid():
            retention.set_storage_policy(org, request.user, **form.cleaned_data)
            messages.success(request, f"Storage policy saved: {retention.eviction_policy(org).in_words()} "
                                      "The next lifecycle pass applies it.")
            return redirect("cache-policy", slug=org.slug)
    else:
        form = StoragePolicyForm(initial=initial_for(own))
    return render(
        request,
        "dashboard/policy.html",
        {**policy_context(org), "org": org, "maintainer": can_maintain(request.user, org), "tab": "cache",
         "section": "policy", "form": form, "own": own},
        status=400 if form.errors else 200,
    )


def policy_context(org):
    in_force = retention.eviction_policy(org)
    preview = retention.preview(org, limit=PREVIEW_ITEMS)
    blob_items = [(kind, blob) for kind in retention.BLOB_KINDS for blob in preview.items[kind]]
    # The steps are those of the listed blobs only (the preview keeps PREVIEW_ITEMS rows
    # per kind, not every blob of a large organization): the page says how many are not.
    steps = retention.steps_of_blobs(org, [blob.digest for _, blob in blob_items], limit=PREVIEW_STEPS + 1)
    return {
        "usage": retention.stored_bytes(org),
        "policy": in_force,
        "defaults": retention.eviction_policy(),
        "grace": duration_words(preview.grace),
        "passes": retention.passes(org)[:PASSES_SHOWN],
        "next_pass": retention.next_pass_at(org),
        "interval_words": duration_words(timedelta(seconds=settings.GC_INTERVAL)),
        "preview": preview,
        "kinds": retention.KINDS,
        "blob_items": [(retention.KINDS[kind], blob) for kind, blob in blob_items],
        "row_items": [
            (retention.KINDS[kind], retention.item_name(kind, item))
            for kind in retention.KINDS if kind not in retention.BLOB_KINDS
            for item in preview.items[kind]
        ],
        "unlisted": sum(preview.unlisted(kind) for kind in retention.KINDS),
        "steps": steps[:PREVIEW_STEPS],
        "more_steps": len(steps) > PREVIEW_STEPS,
        "steps_shown": PREVIEW_STEPS,
        "blobs_without_steps": sum(preview.unlisted(kind) for kind in retention.BLOB_KINDS),
        "deleting": sum(preview.counts.values()),
    }


def duration_words(delta):
    """'6 hours 10 minutes': a grace or interval for people."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n} {unit}{'s' if n != 1 else ''}")
    return " ".join(parts[:2]) or "0 seconds"
