"""UPS-RS Search for Workitems over real sockets (PS3.18 11.9 and 8.3.4; matching per
PS3.4 C.2.2.2), on SQLite and PostgreSQL.

Each test creates its workitems under a worklist label of its own and always matches
on that label, so tests sharing the module's server never see each other's items.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, start_server
from worklist.dicomjson import dataset_to_json_dict
from worklist.sample import code_item, performer_item, sample_workitem

from .upsrs_helpers import (DATABASES, DICOM_JSON, assert_error, bring_to, create,
                            module_server, new_label, tag, warning)

UID = tag("SOPInstanceUID")
LABEL = tag("WorklistLabel")


@pytest.fixture(scope="module", params=DATABASES)
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per database for the whole module (overrides conftest's ``server``;
    conftest's ``client`` talks to it)."""
    yield from module_server(request, tmp_path_factory)


def search(client: httpx.Client, *params: tuple[str, str],
           status: int | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """The matches and the Warning header of a search (200 with results or 204)."""
    r = client.get("/workitems", params=list(params), headers={"Accept": DICOM_JSON})
    if status is not None:
        assert r.status_code == status, r.text
    if r.status_code == 204:
        assert r.content == b""
        return [], r.headers.get("warning")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == DICOM_JSON
    items = r.json()
    assert isinstance(items, list) and items
    assert f'"{tag("TransactionUID")}"' not in r.text  # never returned (PS3.4 CC.2.8.3)
    return items, r.headers.get("warning")


def uids(items: list[dict[str, Any]]) -> list[str]:
    return [item[UID]["Value"][0] for item in items]


def in_label(label: str, *params: tuple[str, str]) -> list[tuple[str, str]]:
    return [("WorklistLabel", label), *params]


def test_search_by_keyword_and_by_tag(client: httpx.Client) -> None:
    label = new_label()
    created = [create(client, worklist_label=label, patient_id=pid) for pid in ("P1", "P2", "P3")]
    items, warn = search(client, *in_label(label, ("PatientID", "P2")))
    assert uids(items) == [created[1]] and warn is None
    items, _ = search(client, ("00741202", label), ("00100020", "P2"))
    assert uids(items) == [created[1]]
    # "patientid" is no keyword, so it is an unknown parameter and ignored (PS3.18 8.3).
    items, _ = search(client, ("00741202", label), ("patientid", "P2"))
    assert uids(items) == created


def test_search_by_state_and_all_of_a_label(client: httpx.Client) -> None:
    label = new_label()
    first, _ = bring_to(client, "IN PROGRESS", worklist_label=label)
    second = create(client, worklist_label=label)
    assert uids(search(client, *in_label(label))[0]) == [first, second]
    assert uids(search(client, *in_label(label, ("ProcedureStepState", "IN PROGRESS")))[0]) == \
        [first]
    assert uids(search(client, *in_label(label, ("ProcedureStepState", "SCHEDULED")))[0]) == \
        [second]


def _with_codes(label: str, performers: list[tuple[str, str]], code: str) -> dict[str, Any]:
    ds = sample_workitem(worklist_label=label)
    ds.ScheduledHumanPerformersSequence = [performer_item(login, name)
                                           for login, name in performers]
    ds.ScheduledWorkitemCodeSequence = [code_item(code, "99WORKLIST", code.title())]
    return dataset_to_json_dict(ds)


def test_search_sequence_paths(client: httpx.Client) -> None:
    label = new_label()
    one = create(client, _with_codes(label, [("reader1", "Reader One")], "SEG"))
    both = create(client, _with_codes(label, [("reader1", "Reader One"),
                                              ("reader2", "Reader Two")], "CLS"))
    none = create(client, _with_codes(label, [], "SEG"))

    def found(*params: tuple[str, str]) -> list[str]:
        return uids(search(client, *in_label(label, *params))[0])

    assert found(("00404034.00404009.00080100", "reader1")) == [one, both]
    # PS3.4 C.2.2.2.6: any item may match (not only the first).
    assert found(("ScheduledHumanPerformersSequence.HumanPerformerCodeSequence.CodeValue",
                  "reader2")) == [both]
    assert found(("ScheduledWorkitemCodeSequence.CodeValue", "SEG")) == [one, none]
    assert found(("00404018.00080100", "CLS"), ("00404018.00080102", "99WORKLIST")) == [both]
    # The keys of one query item must all match in the same stored item.
    assert found(("00404034.00404009.00080100", "reader1"),
                 ("00404034.00404037", "Reader Two")) == []
    assert found(("00404034.00404009.00080100", "reader2"),
                 ("00404034.00404037", "Reader Two")) == [both]
    assert found(("00404034.00404036", "Reading Lab")) == [one, both]


def test_search_wildcards_and_fuzzy_person_names(client: httpx.Client) -> None:
    label = new_label()
    jane = create(client, worklist_label=label, patient_name="Doe^Jane", label="Segment liver")
    john = create(client, worklist_label=label, patient_name="Doe^John", label="Segment lung")
    rich = create(client, worklist_label=label, patient_name="Roe^Richard", label="Classify")

    def found(*params: tuple[str, str]) -> list[str]:
        return uids(search(client, *in_label(label, *params))[0])

    assert found(("PatientName", "Doe*")) == [jane, john]
    assert found(("PatientName", "Doe^J?hn")) == [john]
    assert found(("PatientName", "*R*")) == [rich]
    assert found(("ProcedureStepLabel", "Segment l*")) == [jane, john]
    assert found(("ProcedureStepLabel", "*")) == [jane, john, rich]  # universal
    assert found(("PatientName", "")) == [jane, john, rich]  # universal
    # PS3.4 C.2.2.2.1/C.2.2.2.4: case-sensitive, unless fuzzy matching is asked for PN.
    assert found(("PatientName", "doe^jane")) == []
    assert found(("PatientName", "doe^jane"), ("fuzzymatching", "true")) == [jane]
    assert found(("PatientName", "DOE*"), ("fuzzymatching", "true")) == [jane, john]
    assert found(("PatientName", "DOE*"), ("fuzzymatching", "false")) == []
    # Case still counts for other VRs.
    assert found(("ProcedureStepLabel", "segment*"), ("fuzzymatching", "true")) == []


def test_search_date_time_ranges(client: httpx.Client) -> None:
    label = new_label()
    d22, d23, d24 = (create(client, worklist_label=label, start=start)
                     for start in ("20261122090000", "20261123090000", "20261124090000"))
    key = "ScheduledProcedureStepStartDateTime"

    def found(value: str) -> list[str]:
        return uids(search(client, *in_label(label, (key, value)))[0])

    assert found("20261122-20261123") == [d22, d23]  # whole days, both ends included
    assert found("20261123-") == [d23, d24]
    assert found("-20261122120000") == [d22]
    assert found("20261122090000-20261122090000") == [d22]
    assert found("20261123") == [d23]  # a single value matches its whole precision
    assert found("202611") == [d22, d23, d24]
    # The stored values have no offset and are taken as UTC (documented): 10:00+0200
    # is 08:00 UTC.
    assert found("20261124100000+0200-") == [d24]
    assert found("20261124100000+0200") == []
    assert found("20261124120000+0300") == [d24]
    assert found("2027-") == []


def test_search_uid_lists(client: httpx.Client) -> None:
    label = new_label()
    created = [create(client, worklist_label=label) for _ in range(3)]
    items, _ = search(client, *in_label(label, ("SOPInstanceUID", f"{created[0]},{created[2]}")))
    assert uids(items) == [created[0], created[2]]
    study = [item[tag("StudyInstanceUID")]["Value"][0]
             for item in search(client, *in_label(label))[0]]
    items, _ = search(client, *in_label(label, ("0020000D", ",".join(study[1:]))))
    assert uids(items) == created[1:]


def test_search_includefield(client: httpx.Client) -> None:
    label = new_label()
    ds = sample_workitem(worklist_label=label)
    ds.ExpectedCompletionDateTime = "20261130170000"
    uid = create(client, dataset_to_json_dict(ds))
    expected = tag("ExpectedCompletionDateTime")
    for value in ("ExpectedCompletionDateTime", "00404011", "all",
                  "ExpectedCompletionDateTime,PatientName"):
        items, _ = search(client, *in_label(label, ("includefield", value)))
        assert uids(items) == [uid]
        assert items[0][expected]["Value"] == ["20261130170000"]
    # Return Key Type 1 and 2 attributes come without asking (PS3.18 11.9.2).
    items, _ = search(client, *in_label(label))
    for keyword in ("ProcedureStepState", "ScheduledProcedureStepPriority",
                    "ScheduledProcedureStepStartDateTime", "InputReadinessState",
                    "PatientName", "PatientID", "ScheduledWorkitemCodeSequence"):
        assert tag(keyword) in items[0], keyword


def test_search_paging_is_stable_and_complete(client: httpx.Client) -> None:
    label = new_label()
    created = [create(client, worklist_label=label, patient_id=f"P{i}") for i in range(7)]
    everything, warn = search(client, *in_label(label, ("limit", "100")))
    assert uids(everything) == created and warn is None
    pages, warnings = [], []
    for offset in (0, 3, 6):
        items, warn = search(client, *in_label(label, ("limit", "3"), ("offset", str(offset))))
        pages += uids(items)
        warnings.append(warn)
    assert pages == created  # every match once, in the same order
    assert warnings == [
        warning(client, "There are 4 additional results that can be requested."),
        warning(client, "There are 1 additional results that can be requested."),
        None,
    ]
    # Idempotent (PS3.18 8.3.4.4.1): the same request gives the same ordered list.
    again, _ = search(client, *in_label(label, ("limit", "3"), ("offset", "3")))
    assert uids(again) == created[3:6]
    assert search(client, *in_label(label, ("offset", "7")), status=204) == ([], None)
    assert search(client, *in_label(label, ("offset", "1000000")), status=204) == ([], None)
    # Paging through a filter the store cannot index (tested in Python) works the same.
    unindexed = ("ScheduledWorkitemCodeSequence.CodeMeaning", "Segmentation")
    items, warn = search(client, *in_label(label, ("PatientID", "P*"), unindexed,
                                           ("limit", "2"), ("offset", "4")))
    assert uids(items) == created[4:6]
    assert warn == warning(client, "There are 1 additional results that can be requested.")


def test_search_default_limit(client: httpx.Client) -> None:
    label = new_label()
    created = [create(client, worklist_label=label) for _ in range(101)]
    items, warn = search(client, *in_label(label))
    assert uids(items) == created[:100]  # documented default: 100
    assert warn == warning(client, "There are 1 additional results that can be requested.")


def test_search_without_match_is_204(client: httpx.Client) -> None:
    r = client.get("/workitems", params={"WorklistLabel": new_label()},
                   headers={"Accept": DICOM_JSON})
    assert r.status_code == 204 and r.content == b""
    assert "warning" not in r.headers


def test_search_never_returns_transaction_uid(client: httpx.Client) -> None:
    label = new_label()
    bring_to(client, "IN PROGRESS", worklist_label=label)
    r = client.get("/workitems", params={"WorklistLabel": label, "includefield": "all"})
    assert r.status_code == 200 and f'"{tag("TransactionUID")}"' not in r.text
    assert_error(client.get("/workitems", params={"TransactionUID": "1.2.3"}), 400,
                 mentions=("Transaction UID",))
    r = client.get("/workitems", params={"WorklistLabel": label,
                                         "includefield": "TransactionUID"})
    assert r.status_code == 200 and f'"{tag("TransactionUID")}"' not in r.text


@pytest.mark.parametrize("query, mentions", [
    ("PatientNam=Doe", "PatientNam"),                 # unknown keyword
    ("Foo=1", "Foo"),
    ("00990010=x", "(0099,0010)"),                    # private
    ("00100011=x", "(0010,0011)"),                    # not in the data dictionary
    ("PatientID.CodeValue=x", "PatientID"),           # not a sequence
    ("ScheduledWorkitemCodeSequence=SEG", "sequence"),
    ("includefield=Nonsense", "Nonsense"),
    ("limit=abc", "limit"),
    ("limit=0", "limit"),
    ("limit=-5", "limit"),
    ("limit=1.5", "limit"),
    ("offset=-1", "offset"),
    ("offset=x", "offset"),
    ("fuzzymatching=maybe", "fuzzymatching"),
    ("ScheduledProcedureStepStartDateTime=20261124-20261122", "range"),
    ("ScheduledProcedureStepStartDateTime=20261301-", "20261301"),
    ("ScheduledProcedureStepStartDateTime=tomorrow", "tomorrow"),
    ("ScheduledProcedureStepStartDateTime=-", "range"),
    ("PatientBirthDate=19700101-1960", "1960"),
    ("PatientID=P1&PatientID=P2", "repeated"),
    ("PatientID=P1,P2", "UID"),                       # lists are for UIDs only
    ("Rows=512", "Rows"),                             # VR US cannot be a matching key
])
def test_search_bad_query_is_400(client: httpx.Client, query: str, mentions: str) -> None:
    assert_error(client.get(f"/workitems?{query}"), 400, mentions=(mentions,))


def test_search_ignores_unknown_lowercase_parameters(client: httpx.Client) -> None:
    label = new_label()
    created = [create(client, worklist_label=label) for _ in range(2)]
    for extra in (("requester", "ANNOTATOR1"), ("foo", "bar"), ("_", "1700000000"),
                  ("orderby", "PatientName"), ("emptyvaluematching", "true")):
        items, warn = search(client, *in_label(label, extra))
        assert uids(items) == created and warn is None


def test_search_limit_over_maximum_is_capped(tmp_path: Path) -> None:
    """A small configured default and maximum (the same adapter code on every database,
    so SQLite suffices): a limit above the maximum gets the maximum and the Warning."""
    srv = start_server(tmp_path, env={"WORKLIST_SEARCH_DEFAULT_LIMIT": "2",
                                      "WORKLIST_SEARCH_MAX_LIMIT": "5"}, dimse=False)
    try:
        with httpx.Client(base_url=srv.base_url, timeout=30) as client:
            created = [create(client) for _ in range(8)]
            items, warn = search(client, ("limit", "50"))
            assert uids(items) == created[:5]
            assert warn == warning(client, "There are 3 additional results that can be "
                                   "requested.")
            items, warn = search(client)
            assert uids(items) == created[:2]
            assert warn == warning(client, "There are 6 additional results that can be "
                                   "requested.")
            items, warn = search(client, ("limit", "50"), ("offset", "5"))
            assert uids(items) == created[5:] and warn is None
    finally:
        assert srv.stop() == 0, srv.log()
