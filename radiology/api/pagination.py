from __future__ import annotations

from django.conf import settings
from rest_framework.pagination import PageNumberPagination

from radiology.paging import IdsFirstPaginator, counted_paginator


class ApiPagination(PageNumberPagination):
    """Page numbers with a client-chosen page size, capped so one request cannot fetch everything."""

    page_size_query_param = "page_size"
    # The list's size when the view knows it without counting (radiology.tallies), else None.
    known_count: int | None = None

    @property
    def django_paginator_class(self) -> type[IdsFirstPaginator]:  # type: ignore[override]
        """A page's ids from the ordering's index, then its rows: deep pages as fast as the first ones."""
        return IdsFirstPaginator if self.known_count is None else counted_paginator(self.known_count)

    @property
    def page_size(self) -> int:  # type: ignore[override]
        return int(settings.API_PAGE_SIZE)

    @property
    def max_page_size(self) -> int:  # type: ignore[override]
        return int(settings.API_MAX_PAGE_SIZE)
