"""Paged lists: {count, next, previous, results}. A page or page size that is not a
whole number in range is a 400 naming the field, never a silent default."""

from django.core.paginator import Paginator
from rest_framework import exceptions, serializers
from rest_framework.pagination import PageNumberPagination

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def _positive(raw, name, upper=None):
    text = (raw or "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) < 10) or int(text) < 1 or (upper and int(text) > upper):
        limit = f" from 1 to {upper}" if upper else " from 1"
        raise exceptions.ValidationError({name: f"a whole number{limit}"})
    return int(text)


class ApiPagination(PageNumberPagination):
    page_size = PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def paginate(self, queryset, request):
        """The rows of the asked page, still a (sliced) queryset, so that the selectors'
        describe_*() can annotate just them."""
        self.request = request
        size = _positive(request.query_params.get("page_size"), "page_size", MAX_PAGE_SIZE) or PAGE_SIZE
        number = _positive(request.query_params.get("page"), "page") or 1
        paginator = Paginator(queryset, size)
        if number > paginator.num_pages:
            raise exceptions.ValidationError({"page": f"there are {paginator.num_pages} pages"})
        self.page = paginator.page(number)
        return self.page.object_list


_paged = {}


def paged(item_serializer):
    """A serializer for one page of `item_serializer` rows (for the schema)."""
    if item_serializer not in _paged:
        name = "Paged" + item_serializer.__name__.removesuffix("Serializer")
        _paged[item_serializer] = type(
            name,
            (serializers.Serializer,),
            {
                "count": serializers.IntegerField(),
                "next": serializers.URLField(allow_null=True),
                "previous": serializers.URLField(allow_null=True),
                "results": item_serializer(many=True),
            },
        )
    return _paged[item_serializer]
