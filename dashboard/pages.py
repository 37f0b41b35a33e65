"""The cache pages of an organization (any member) and eviction (maintainers only)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat, pluralize
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_http_methods

from accounts.scoping import can_maintain, organization_for
from activity import charts
from activity.selectors import RANGES
from blobs.services import delete_blob
from blobs.storage import StoreUnavailable
from dashboard import queries
from mounts.forms import MountPolicyForm, MountSettingsForm
from mounts.models import CacheMount, MountPolicy
from mounts.services import evict_mount as evict_mount_snapshots
from records import steps

PER_PAGE = 50
# S3 not answering, or the built-in store's disk refusing the unlink (read-only, I/O
# error): either way the bytes, and so the row, are still there (retention does the same).
STORE_FAILURES = (StoreUnavailable, OSError)
SHOWN_ON_OVERVIEW = 10
# Steps named on a blob's eviction page (the rest are a link away).
STEPS_NAMED = 20


def _context(request, organization, section, **extra):
    return {
        "org": organization,
        "maintainer": can_maintain(request.user, organization),
        "tab": "cache",
        "section": section,
        **extra,
    }


@login_required
def overview(request, slug):
    org = organization_for(request.user, slug)
    largest, _ = queries.blob_listing(org, "-size")
    recent, _ = queries.blob_listing(org, "-last_used")
    largest_steps = steps.step_listing(org, steps.StepQuery(sort="-total_size"))[:SHOWN_ON_OVERVIEW]
    recent_steps = steps.step_listing(org, steps.StepQuery(sort="-last_used", used="yes"))[:SHOWN_ON_OVERVIEW]
    window, window_error, bucket_asked = charts.page_window(request.GET)
    return render(
        request,
        "dashboard/cache.html",
        _context(
            request,
            org,
            "overview",
            totals=queries.totals(org),
            largest_steps=steps.describe_steps(org, largest_steps),
            recent_steps=steps.describe_steps(org, recent_steps),
            largest=queries.describe_blobs(org, largest[:SHOWN_ON_OVERVIEW]),
            recent=queries.describe_blobs(org, recent.filter(last_used_at__isnull=False)[:SHOWN_ON_OVERVIEW]),
            here=request.get_full_path(),
            window=window,
            window_error=window_error,
            bucket_asked=bucket_asked,
            ranges=RANGES,
            storage_chart=charts.storage_chart(org, window),
            activity_charts=charts.activity_charts(org, window),
        ),
        status=400 if window_error else 200,
    )


@login_required
def blobs(request, slug):
    org = organization_for(request.user, slug)
    search = request.GET.get("q", "").strip()
    rows, sort = queries.blob_listing(org, request.GET.get("sort"), search)
    page = Paginator(rows, PER_PAGE).get_page(request.GET.get("page"))
    page.object_list = queries.describe_blobs(org, page.object_list)
    kept = {"sort": sort, **({"q": search} if search else {})}
    return render(
        request,
        "dashboard/blobs.html",
        _context(
            request,
            org,
            "blobs",
            page=page,
            sort=sort,
            search=search,
            sort_links=_sort_links(sort, search),
            page_query=urlencode(kept) + "&",
            here=request.get_full_path(),
        ),
    )


def _sort_links(sort, search):
    """{key: {"href", "arrow"}} for the sortable column headers. A column not in effect
    sorts descending first (largest, newest, most used); clicking it again flips it."""
    links = {}
    for key in queries.BLOB_SORTS:
        active = sort.removeprefix("-") == key
        target = key if sort == f"-{key}" else f"-{key}"
        params = {"sort": target, **({"q": search} if search else {})}
        arrow = ("↓" if sort.startswith("-") else "↑") if active else ""
        links[key] = {"href": "?" + urlencode(params), "arrow": arrow}
    return links


@login_required
@require_http_methods(["GET", "POST"])
def evict_blob(request, slug, digest):
    """GET: what evicting the blob would do, and the button. POST: evict it."""
    org = organization_for(request.user, slug, maintain=True)
    blob = queries.blob_usage(org, digest)
    if blob is None:
        raise Http404("no such blob")
    back = _back(request, reverse("cache-blobs", args=[org.slug]))
    if request.method == "GET":
        using = steps.step_listing(org, steps.StepQuery(layer=blob.digest)) if blob.in_layer else None
        return render(
            request,
            "dashboard/blob_evict.html",
            _context(
                request, org, "blobs", blob=blob, back=back,
                steps=steps.describe_steps(org, using[:STEPS_NAMED]) if using is not None else [],
            ),
        )
    try:
        freed = delete_blob(org, blob.digest, actor=request.user)
    except STORE_FAILURES as exc:
        # The bytes go first: when the store fails, the row is still there, unchanged.
        messages.error(request, f"Nothing was evicted: the blob store did not answer ({exc}).")
        return redirect(back)
    messages.success(request, _evicted_blob_message(blob, freed))
    return redirect(back)


def _evicted_blob_message(blob, freed):
    """`freed`: delete_blob's answer (nothing for a blob whose bytes never arrived)."""
    parts = [f"Evicted {blob.digest[:19]}… ({filesizeformat(freed)} freed)."]
    if blob.result_count:
        parts.append(
            f"{blob.result_count} result{pluralize(blob.result_count)} using it "
            "are no longer offered to engines until an engine exports them again."
        )
    if blob.snapshot_mount:
        parts.append(f"Mount {blob.snapshot_mount.name} is restored from an older snapshot, if one is kept.")
    return " ".join(parts)


@login_required
@require_http_methods(["GET", "POST"])
def mounts(request, slug):
    """The mounts, and the organization's mount policy (POST: maintainers change it)."""
    org = organization_for(request.user, slug, maintain=request.method == "POST")
    policy = MountPolicy.for_organization(org)
    form = MountPolicyForm(request.POST if request.method == "POST" else None, instance=policy)
    if form.is_valid():
        form.save_by(request.user)
        messages.success(request, "The mount policy was saved; engines follow it at their next start.")
        return redirect("cache-mounts", org.slug)
    page = Paginator(queries.mount_listing(org), PER_PAGE).get_page(request.GET.get("page"))
    page.object_list = queries.with_current_snapshots(org, page.object_list, policy)
    return render(
        request, "dashboard/mounts.html",
        _context(request, org, "mounts", page=page, page_query="", policy=policy, form=form),
    )


@login_required
@require_http_methods(["GET", "POST"])
def mount(request, slug, pk):
    """A mount with its snapshots, and its switch and size limit (POST: maintainers)."""
    org = organization_for(request.user, slug, maintain=request.method == "POST")
    cache_mount = get_object_or_404(CacheMount, organization=org, pk=pk)
    form = MountSettingsForm(request.POST if request.method == "POST" else None, instance=cache_mount)
    if form.is_valid():
        form.save_by(request.user)
        messages.success(request, f"The settings of {cache_mount.name} were saved.")
        return redirect("cache-mount", org.slug, cache_mount.pk)
    current, snapshots = queries.mount_snapshots(cache_mount)
    return render(
        request,
        "dashboard/mount.html",
        _context(request, org, "mounts", mount=cache_mount, current=current, snapshots=snapshots, form=form),
    )


@login_required
@require_http_methods(["GET", "POST"])
def evict_mount(request, slug, pk):
    """GET: what evicting the mount's snapshots would delete, and the button. POST: do it."""
    org = organization_for(request.user, slug, maintain=True)
    cache_mount = get_object_or_404(CacheMount.objects.select_related("organization"), organization=org, pk=pk)
    back = _back(request, reverse("cache-mount", args=[org.slug, cache_mount.pk]))
    if request.method == "GET":
        weight = queries.mount_weight(cache_mount)
        return render(
            request,
            "dashboard/mount_evict.html",
            _context(request, org, "mounts", mount=cache_mount, weight=weight, back=back),
        )
    try:
        deleted, freed = evict_mount_snapshots(cache_mount, actor=request.user)
    except STORE_FAILURES as exc:
        messages.error(
            request,
            f"The snapshots of {cache_mount.name} were deleted, but the blob store did not answer ({exc}); "
            "the blobs it kept are listed as unreferenced under Blobs.",
        )
        return redirect(back)
    messages.success(
        request,
        f"Evicted mount {cache_mount.name}: {deleted} snapshot{pluralize(deleted)} deleted, "
        f"{len(freed)} blob{pluralize(len(freed))} ({filesizeformat(sum(size or 0 for size in freed.values()))}) "
        "freed. Engines that sync it upload it again at their next sync.",
    )
    return redirect(back)


def _back(request, default):
    """Where to go after a confirmation: the page it was opened from, when that is a
    page of this site (never an address someone put in a link)."""
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default
