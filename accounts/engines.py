"""The engines of an organization, as the dashboard's engine pages and the operator API
list them: one query, written once."""

from accounts.models import Engine

# Sort keys: name -> column. "-name" sorts descending.
ENGINE_SORTS = {"last_seen": "last_seen", "first_seen": "first_seen", "engine_id": "engine_id"}
DEFAULT_ENGINE_SORT = "-last_seen"


def engine_sorts():
    """Every accepted sort value, ascending and descending."""
    return [key for name in ENGINE_SORTS for key in (name, f"-{name}")]


def engine_listing(organization, sort=DEFAULT_ENGINE_SORT):
    """The organization's engines with their last token, sorted by `sort` (one of
    engine_sorts(); ValueError otherwise), ties by row id so that pages are stable."""
    if sort not in engine_sorts():
        raise ValueError(f"unknown engine sort {sort!r}")
    descending = sort.startswith("-")
    column = ENGINE_SORTS[sort.removeprefix("-")]
    order = [f"-{column}", "-pk"] if descending else [column, "pk"]
    return Engine.objects.filter(organization=organization).select_related("last_token").order_by(*order)


def engine_detail(organization, pk):
    """One engine of the organization, or None."""
    return engine_listing(organization).filter(pk=pk).first()
