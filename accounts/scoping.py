"""The one place that decides which organizations an operator may see or change.

Every dashboard page and operator action goes through here, so an outsider gets 404 (the
organization does not exist, as far as they can tell) and a viewer gets 403 on changes.
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from accounts.models import Membership, Organization, Role


def visible_organizations(user):
    if not user.is_authenticated:
        return Organization.objects.none()
    if user.is_superuser:
        return Organization.objects.all()
    return Organization.objects.filter(memberships__user=user).distinct()


def can_maintain(user, organization):
    if user.is_superuser:
        return True
    return Membership.objects.filter(user=user, organization=organization, role=Role.MAINTAINER).exists()


def organization_for(user, slug, maintain=False):
    """The organization `slug` as `user` may see it; 404 if hidden, 403 if `maintain` is
    asked and the user only views."""
    try:
        organization = visible_organizations(user).get(slug=slug)
    except Organization.DoesNotExist:
        raise Http404("no such organization") from None
    if maintain and not can_maintain(user, organization):
        raise PermissionDenied("maintainers only")
    return organization
