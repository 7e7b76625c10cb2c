"""Recent search pages, served again while the database has not changed.

Viewers poll the same worklist query every few seconds; between changes the answer
is the same.  A page is kept with the database version it was read at and served
only while the version is unchanged, so a cached answer is never stale: the version
is read *before* the search's own read transaction begins, so the page reflects at
least every change the version counts.  Bounded in entries and bytes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["PageCache"]


class PageCache:
    def __init__(self, *, max_entries: int = 512, max_bytes: int = 32 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._pages: OrderedDict[Hashable, tuple[Any, Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: Hashable, version: Any, compute: Callable[[], Any],
                       size: Callable[[Any], int]) -> Any:
        """The page for ``key`` read at ``version``, computing it when not kept."""
        if version is None or self.max_bytes <= 0:  # no version, or caching off
            return compute()
        with self._lock:
            kept = self._pages.get(key)
            if kept is not None and kept[0] == version:
                self._pages.move_to_end(key)
                self.hits += 1
                return kept[1]
        self.misses += 1
        page = compute()
        n = size(page)
        if n > self.max_bytes // 8:
            return page  # too large to be worth keeping
        with self._lock:
            old = self._pages.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            self._pages[key] = (version, page, n)
            self._bytes += n
            while self._pages and (len(self._pages) > self.max_entries
                                   or self._bytes > self.max_bytes):
                _, (_, _, dropped) = self._pages.popitem(last=False)
                self._bytes -= dropped
        return page
