"""The build steps pages: browse, search and inspect steps (members), evict them (maintainers)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat, pluralize
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods

from accounts.scoping import organization_for
from dashboard.pages import PER_PAGE, _back, _context
from records import eviction, layer_contents, steps
from records.models import Layer

PREVIEW_SHOWN = 50


def _query(request):
    """(the StepQuery of the request, errors): on bad parameters, the default query and
    the messages to show."""
    try:
        return steps.StepQuery.from_params(request.GET), {}
    except steps.InvalidStepQuery as exc:
        return steps.StepQuery(), exc.errors


def _sort_links(query):
    links = {}
    for key in steps.STEP_SORTS:
        active = query.sort.removeprefix("-") == key
        target = key if query.sort == f"-{key}" else f"-{key}"
        arrow = ("↓" if query.sort.startswith("-") else "↑") if active else ""
        links[key] = {"href": "?" + urlencode(query.params(sort=target)), "arrow": arrow}
    return links


@login_required
def step_list(request, slug):
    org = organization_for(request.user, slug)
    query, errors = _query(request)
    rows = steps.step_listing(org, query) if not errors else steps.step_listing(org).none()
    page = Paginator(rows, PER_PAGE).get_page(request.GET.get("page"))
    page.object_list = steps.describe_steps(org, page.object_list)
    return render(
        request,
        "dashboard/steps.html",
        _context(
            request,
            org,
            "steps",
            page=page,
            query=query,
            errors=errors,
            engines=steps.filter_engines(org),
            sort_links=_sort_links(query),
            page_query=urlencode(query.params()) + "&",
            evict_query=urlencode(query.params()),
            here=request.get_full_path(),
        ),
        status=400 if errors else 200,
    )


@login_required
def step_page(request, slug, pk):
    org = organization_for(request.user, slug)
    detail = steps.step_detail(org, pk)
    if detail is None:
        raise Http404("no such step")
    return render(
        request,
        "dashboard/step.html",
        _context(request, org, "steps", step=detail, title=steps.step_title(detail.record, detail.result)),
    )


@login_required
def layer_page(request, slug, pk):
    """A layer's contents; the first visit queues its index."""
    org = organization_for(request.user, slug)
    layer = get_object_or_404(Layer, organization=org, pk=pk)
    row = layer_contents.request_index(layer)
    search = request.GET.get("path", "").strip()[:500]
    page_number = _page_number(request.GET.get("page"))
    entries, matched, pages = layer_contents.search_listing(row, search, page_number)
    using = steps.describe_steps(org, steps.step_listing(org, steps.StepQuery(layer=layer.digest))[:PER_PAGE])
    return render(
        request,
        "dashboard/layer.html",
        _context(
            request,
            org,
            "steps",
            layer=layer,
            contents=row,
            entries=entries,
            matched=matched,
            pages=pages,
            page_number=min(page_number, pages),
            search=search,
            using=using,
        ),
    )


def _page_number(raw):
    text = (raw or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 9 else 1


@login_required
@require_http_methods(["GET", "POST"])
def evict_step(request, slug, pk):
    """GET: what evicting the step deletes, and the button. POST: evict it."""
    org = organization_for(request.user, slug, maintain=True)
    detail = steps.step_detail(org, pk)
    if detail is None or not detail.results:
        raise Http404("no such step")
    back = _back(request, reverse("cache-steps", args=[org.slug]))
    title = steps.step_title(detail.record, detail.result)
    if request.method == "GET":
        plan = eviction.plan_steps(org, [detail.record.pk])
        return render(
            request,
            "dashboard/step_evict.html",
            _context(request, org, "steps", step=detail, title=title, plan=plan, back=back),
        )
    done = eviction.evict_steps(org, [detail.record.pk], actor=request.user)
    _report(request, done, f"step “{title}”")
    return redirect(back)


@login_required
@require_http_methods(["GET", "POST"])
def evict_matching(request, slug):
    """Evict every step a search matches. GET: the preview. POST: evict them, if the
    search still matches as many steps as the preview showed."""
    org = organization_for(request.user, slug, maintain=True)
    params = request.POST if request.method == "POST" else request.GET
    try:
        query = steps.StepQuery.from_params(params)
    except steps.InvalidStepQuery as exc:
        messages.error(request, f"Nothing was evicted: {exc}.")
        return redirect("cache-steps", org.slug)
    listing_url = reverse("cache-steps", args=[org.slug]) + "?" + urlencode(query.params())
    # A confirmation that is not a number matches no count: -1 refuses like a changed one.
    expected = request.POST.get("expected", "") if request.method == "POST" else None
    if expected is not None:
        expected = int(expected) if expected.isascii() and expected.isdigit() and len(expected) < 19 else -1
    try:
        record_ids = eviction.steps_to_evict(org, query, expected)
    except eviction.SearchRefused as exc:
        messages.error(request, f"Nothing was evicted: {exc}.")
        return redirect(listing_url)
    except eviction.SearchChanged as exc:
        messages.error(
            request,
            f"Nothing was evicted: the search now matches {exc.matched} step{pluralize(exc.matched)}, "
            "not the number you confirmed. Check the preview again.",
        )
        return redirect(reverse("cache-steps-evict", args=[org.slug]) + "?" + urlencode(query.params()))
    if request.method == "POST":
        done = eviction.evict_steps(org, record_ids, actor=request.user)
        _report(request, done, f"{done.steps} step{pluralize(done.steps)}")
        return redirect(reverse("cache-steps", args=[org.slug]))
    plan = eviction.plan_steps(org, record_ids)
    return render(
        request,
        "dashboard/steps_evict.html",
        _context(
            request,
            org,
            "steps",
            query=query,
            hidden=query.params(),
            shown=steps.describe_steps(org, steps.step_listing(org, query)[:PREVIEW_SHOWN]),
            count=len(record_ids),
            plan=plan,
            back=listing_url,
        ),
    )


def _report(request, done, what):
    text = (
        f"Evicted {what}: {done.results} result{pluralize(done.results)} left what engines import, "
        f"{len(done.blobs_deleted)} layer blob{pluralize(len(done.blobs_deleted))} "
        f"({filesizeformat(done.freed_bytes)}) deleted. Engines that build it again export it again."
    )
    if done.blobs_kept:
        messages.warning(
            request,
            text + f" The blob store did not answer for {len(done.blobs_kept)} blob{pluralize(len(done.blobs_kept))} "
            f"({done.error}); they are unreferenced now and go at the next storage lifecycle pass.",
        )
    else:
        messages.success(request, text)
