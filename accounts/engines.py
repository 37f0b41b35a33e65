"""The engines of an organization, as the dashboard's engine pages and the operator API
list them: one query, written once, and their activity from activity.selectors."""

from datetime import datetime, timezone as dt_timezone

from accounts.models import Engine
from activity.selectors import ENGINE_ACTIVITY_FIELDS, NO_ACTIVITY, engine_activity

# Sort keys: name -> column. "-name" sorts descending.
ENGINE_SORTS = {"last_seen": "last_seen", "first_seen": "first_seen", "engine_id": "engine_id"}
# Sorted by their activity (activity.selectors.EngineActivity's fields).
ACTIVITY_SORTS = ENGINE_ACTIVITY_FIELDS
DEFAULT_ENGINE_SORT = "-last_seen"
_NEVER = datetime.min.replace(tzinfo=dt_timezone.utc)


def engine_sorts():
    """Every accepted sort value, ascending and descending."""
    return [key for name in (*ENGINE_SORTS, *ACTIVITY_SORTS) for key in (name, f"-{name}")]


def engine_listing(organization, sort=DEFAULT_ENGINE_SORT):
    """The organization's engines with their last token, sorted by `sort` (one of
    engine_sorts(); ValueError otherwise), ties by row id so that pages are stable.

    A queryset for the columns of the engine row; for an activity sort, a list of all the
    organization's engines (at most ENGINES_PER_ORG) with their `activity` set, sorted
    here: the counters are another table, read in one grouped query."""
    if sort not in engine_sorts():
        raise ValueError(f"unknown engine sort {sort!r}")
    descending = sort.startswith("-")
    name = sort.removeprefix("-")
    rows = Engine.objects.filter(organization=organization).select_related("last_token")
    if name in ENGINE_SORTS:
        column = ENGINE_SORTS[name]
        return rows.order_by(*([f"-{column}", "-pk"] if descending else [column, "pk"]))
    engines = list(rows.order_by("pk"))
    found = engine_activity(organization)
    for engine in engines:
        engine.activity = found.get(engine.pk, NO_ACTIVITY)

    def key(engine):
        value = getattr(engine.activity, name)
        return (_NEVER if value is None else value) if name.startswith("last_") else value

    # Stable sorts: by pk (the ties' order, descending too), then by the value.
    engines.sort(key=lambda e: e.pk, reverse=descending)
    engines.sort(key=key, reverse=descending)
    return engines


def with_activity(organization, engines):
    """The engines as a list, each with `activity` (an activity.selectors.EngineActivity),
    read in one query for all of them."""
    engines = list(engines)
    pending = [e for e in engines if not hasattr(e, "activity")]
    if pending:
        found = engine_activity(organization, [e.pk for e in pending])
        for engine in pending:
            engine.activity = found.get(engine.pk, NO_ACTIVITY)
    return engines


def engine_detail(organization, pk):
    """One engine of the organization with its activity, or None."""
    engine = engine_listing(organization).filter(pk=pk).first()
    return with_activity(organization, [engine])[0] if engine else None
