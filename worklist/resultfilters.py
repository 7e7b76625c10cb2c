"""The filters of the reviewer's query (``GET /api/results``, ``worklist results``).

Kept apart from :mod:`worklist.results` so the command line can list them without
importing the database layer (every ``worklist`` command builds its parser).
"""

__all__ = ["FILTERS", "DEFAULT_LIMIT", "MAX_LIMIT"]

FILTERS = {
    "worklist": "Worklist Label of the task (wildcards * and ?)",
    "task": "the task's workitem UID",
    "reader": "login of the person who made the result",
    "role": "role of that person (Reader, Reviewer, Adjudicator)",
    "kind": "SEG or SR",
    "study": "Study Instance UID of the result",
    "label": "segment label or tracking identifier (wildcards)",
    "concept": "measurement or evaluation concept, e.g. Volume (wildcards)",
    "finding": "segmented property type (SEG) or finding (SR), e.g. Lesion (wildcards)",
    "verdict": "a review's verdict on the result, e.g. REJECTED",
    "algorithm": "algorithm name (wildcards)",
    "algorithm_type": "MANUAL, SEMIAUTOMATIC or AUTOMATIC",
    "since": "content date-time from (YYYYMMDD[HHMMSS] or ISO 8601)",
    "until": "content date-time up to, inclusive",
    "limit": "rows per page (default 1000, at most 100000)",
    "offset": "rows to skip",
}
DEFAULT_LIMIT, MAX_LIMIT = 1000, 100_000
