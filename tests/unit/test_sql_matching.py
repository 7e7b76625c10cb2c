"""The SQL path of the search agrees with the pure-Python matching, and paging is exact.

:func:`worklist.store.sql_conditions` turns conditions on indexed keys into SQL and
leaves the rest to Python.  Whatever that split, ``service.search`` must return
exactly the stored workitems for which ``Query.matches`` is true, in creation order.
A hypothesis property test builds a random population of valid workitems (states,
labels, case and non-ASCII name variants, date-times with and without UTC offsets,
several performers with several codes, requests, workitem codes) through the service
in a fresh SQLite file, and throws random queries at it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from worklist import matching
from worklist.matching import parse_identifier
from worklist.sample import final_state_attributes, sample_workitem
from worklist.service import Actor, WorklistService
from worklist.store import open_store, sql_conditions
from worklist.values import Protocol

ACTOR = Actor(Protocol.INTERNAL, "property")
UID_ROOT = "1.2.826.0.1.3680043.10.543."
STUDIES = ["1.2.3.1", "1.2.3.2", "1.2.3.3"]

LABELS = ["Liver", "liver", "Lung", "Brain.CT", "BrainXCT", "A+B", "AAB", "Lu_ng", "Luxng",
          "50%", "500", "", "Müller"]
NAMES = ["Doe^Jane", "DOE^JANE", "doe^jane", "Doe^John", "Müller^Jürgen", "MÜLLER^JÜRGEN",
         "Straße^Anna", "STRASSE^ANNA", "strasse^anna", "Øre^Åse", "ØRE^ÅSE", "山田^太郎",
         "O'Brien^Seán", "", "Doe^Jane^^Dr", "=山田^太郎"]
PATIENT_IDS = ["P1", "p1", "P2", "PAT-001", "P_1", "PX1", "P%1", ""]
STARTS = ["20261122090000", "20261122090000+0100", "20261122090000-0500", "20261122",
          "2026112223", "20261123003000+0200", "20261121235959.999999", "2026",
          "20261122083000.5", "20261130120000-1000", "20261122140000+1400"]
EXPECTED = [None, "20261122170000", "20261123", "20261122170000+0100"]
PERFORMER_NAMES = ["Reader^One", "READER^ONE", "Reader^Two", "Müller^Jürgen",
                   "Straße^Anna", "STRASSE^ANNA", "=山田^太郎"]
ORGS = ["Lab A", "lab a", "Lab B", "Lab.B"]
PERFORMER_CODES = [("r1", "L"), ("r2", "L"), ("r1", "X"), ("R1", "L"), ("r_1", "L")]
WORK_CODES = [("SEG", "99WORKLIST", "Segmentation"), ("SR", "DCM", "Report"),
              ("SEG", "DCM", "Segmentation"), ("seg", "99WORKLIST", "segmentation")]
ACCESSIONS = ["ACC1", "acc1", "ACC2", "", "A_C1"]
COMMENTS = ["", "urgent", "Urgent review", "n/a (see chart)"]
BIRTH_DATES = ["", "19700101", "19851231", "20000229"]


def elem(vr: str, *vals) -> dict:
    """A DICOM JSON attribute (PS3.18 F.2); no values: present and empty."""
    return {"vr": vr, "Value": list(vals)} if vals else {"vr": vr}


def pn(name: str) -> dict:
    """A PN attribute; "=X" stands for a name with an Ideographic group only."""
    if name.startswith("="):
        return elem("PN", {"Ideographic": name[1:]})
    return elem("PN", {"Alphabetic": name}) if name else elem("PN")


def text(vr: str, value: str) -> dict:
    return elem(vr, value) if value else elem(vr)


def code_json(value: str, scheme: str, meaning: str) -> dict:
    return {"00080100": elem("SH", value), "00080102": elem("SH", scheme),
            "00080104": elem("LO", meaning)}


# Workitems are built as DICOM JSON (which the service takes as well as Datasets):
# building 30 pydicom Datasets per example would cost more than the test itself.
TEMPLATE = json.dumps(sample_workitem().to_json_dict())
FINAL = final_state_attributes().to_json_dict()


workitem_specs = st.fixed_dictionaries({
    "state": st.sampled_from(["SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED",
                              "CANCELED BY REQUEST"]),
    "label": st.sampled_from(LABELS),
    "priority": st.sampled_from(["HIGH", "MEDIUM", "LOW"]),
    "name": st.sampled_from(NAMES),
    "patient_id": st.sampled_from(PATIENT_IDS),
    "start": st.sampled_from(STARTS),
    "expected": st.sampled_from(EXPECTED),
    "readiness": st.sampled_from(["READY", "INCOMPLETE", "UNAVAILABLE"]),
    "study": st.sampled_from(STUDIES),
    "performers": st.lists(st.tuples(
        st.lists(st.sampled_from(PERFORMER_CODES), min_size=1, max_size=2),
        st.sampled_from(PERFORMER_NAMES), st.sampled_from(ORGS)), max_size=3),
    "codes": st.lists(st.sampled_from(WORK_CODES), max_size=2),
    "accessions": st.lists(st.tuples(st.sampled_from(ACCESSIONS),
                                     st.sampled_from(["RP1", "RP2", ""])), max_size=2),
    "comments": st.sampled_from(COMMENTS),
    "birth_date": st.sampled_from(BIRTH_DATES),
})


def build(spec: dict) -> dict:
    ds = json.loads(TEMPLATE)
    ds["00741202"] = text("LO", spec["label"])                  # WorklistLabel
    ds["00741200"] = elem("CS", spec["priority"])               # ScheduledProcedureStepPriority
    ds["00100010"] = pn(spec["name"])                           # PatientName
    ds["00100020"] = text("LO", spec["patient_id"])             # PatientID
    ds["00404005"] = elem("DT", spec["start"])                  # SPS Start DateTime
    ds["00404041"] = elem("CS", spec["readiness"])              # InputReadinessState
    ds["0020000D"] = elem("UI", spec["study"])                  # StudyInstanceUID
    if spec["expected"]:
        ds["00404011"] = elem("DT", spec["expected"])           # ExpectedCompletionDateTime
    ds["00404034"] = elem("SQ", *[{                             # ScheduledHumanPerformersSequence
        "00404009": elem("SQ", *[code_json(v, s, "x") for v, s in codes]),
        "00404037": pn(name), "00404036": elem("LO", org)}
        for codes, name, org in spec["performers"]])
    ds["00404018"] = elem("SQ", *[code_json(*c) for c in spec["codes"]])
    template = ds["0040A370"]["Value"][0]                       # ReferencedRequestSequence
    requests = []
    for accession, procedure_id in spec["accessions"]:
        item = json.loads(json.dumps(template))
        item["0020000D"] = elem("UI", spec["study"])
        item["00080050"] = text("SH", accession)
        item["00401001"] = text("SH", procedure_id)
        requests.append(item)
    ds["0040A370"] = elem("SQ", *requests)
    ds["00400400"] = text("LT", spec["comments"])               # CommentsOnTheScheduled...
    ds["00100030"] = text("DA", spec["birth_date"])             # PatientBirthDate
    return ds


def drive(service: WorklistService, uid: str, state: str) -> None:
    if state == "SCHEDULED":
        return
    if state == "CANCELED BY REQUEST":
        service.request_cancel(uid, None, ACTOR)
        return
    tx = uid + ".9"
    service.change_state(uid, "IN PROGRESS", tx, ACTOR)
    if state == "COMPLETED":
        service.update(uid, FINAL, tx, ACTOR)
        service.change_state(uid, "COMPLETED", tx, ACTOR)
    elif state == "CANCELED":
        service.change_state(uid, "CANCELED", tx, ACTOR)


# -- queries -------------------------------------------------------------------------
def _one_of(*values):
    return st.sampled_from(values)


def _item(**keys) -> st.SearchStrategy[Dataset]:
    """A sequence key item with a non-empty random subset of ``keys``."""
    names = sorted(keys)

    @st.composite
    def draw_item(draw):
        chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names),
                               unique=True))
        item = Dataset()
        for kw in chosen:
            put(item, kw, draw(keys[kw]))
        return item

    return draw_item()


def put(ds: Dataset, keyword: str, value) -> None:
    """Set a key as given (wild cards in CS, '""' in DT...) without pydicom's warnings."""
    tag = tag_for_keyword(keyword)
    ds.add(DataElement(tag, dictionary_VR(tag), value, validation_mode=config.IGNORE))


def _code_key(values, schemes, meanings=None):
    """A code sequence key: one item with code value and/or scheme (and/or meaning)."""
    keys = {"CodeValue": _one_of(*values), "CodingSchemeDesignator": _one_of(*schemes)}
    if meanings:
        keys["CodeMeaning"] = _one_of(*meanings)
    return _item(**keys).map(lambda item: [item])


_DT_KEYS = ["20261122", "20261122090000", "20261122080000-20261122100000", "20261122-",
            "-20261122", "20261122090000+0100", "20261122090000-0500",
            "20261122090000-0500-", "-20261122083000.5", "2026-", "20261123-20261130",
            "20261122083000+0100-20261122100000-0100", "2026112209", '""', ""]

KEYS: dict[str, st.SearchStrategy] = {
    "ProcedureStepState": _one_of("SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED",
                                  "*ED", "IN*", "?CHEDULED", "*", ""),
    "WorklistLabel": _one_of("Liver", "liver", "Li*", "*r", "L?ver", "Brain.CT", "Brain.*",
                             "Brain?CT", "A+B", "A+*", "Lu_ng", "Lu_*", "50%", "50*", "5?%",
                             "default", "Müller", "M?ller", "*", '""'),
    "ScheduledProcedureStepPriority": _one_of("HIGH", "LOW", "MEDIUM", "H*", "?OW"),
    "ProcedureStepLabel": _one_of("Segment liver lesions", "Segment*", "seg*", "Relabel*"),
    "InputReadinessState": _one_of("READY", "INCOMPLETE", "*READY*", "?NAVAILABLE"),
    "PatientName": _one_of(*[n for n in NAMES if n and n[0] != "="], "Doe*", "*JANE", "d?e^*",
                           "*^*", "Stra?e*", "STRA*", "strasse*", "*SSE*", "*ß*", "müller*",
                           "M?LLER*", "Ø*", "ø*", "山田*", "O'Brien*", '""', '""', ""),
    "PatientID": _one_of(*[p for p in PATIENT_IDS if p], "P?", "P_*", "P%*", "P*", "PAT-*",
                         "p*", '""'),
    "ScheduledProcedureStepStartDateTime": _one_of(*_DT_KEYS),
    "ExpectedCompletionDateTime": _one_of("20261122-", "-20261122170000",
                                          "20261122160000+0000-20261122160000+0000",
                                          "20261123", '""'),
    "StudyInstanceUID": st.one_of(_one_of(*STUDIES, "1.2.3.9"),
                                  st.lists(_one_of(*STUDIES, "1.2.3.9"), min_size=2,
                                           max_size=3, unique=True)),
    "ScheduledHumanPerformersSequence": _item(
        HumanPerformerName=_one_of(*PERFORMER_NAMES[:-1], "Reader*", "*ONE", "reader^one",
                                   "stra?e*", "STRA*", "*SSE*", "müller*", '""', '""'),
        HumanPerformerOrganization=_one_of(*ORGS, "Lab*", "lab*", "Lab?B", "Lab.?"),
        HumanPerformerCodeSequence=_code_key(["r1", "r2", "R1", "r_1", "r?", "r*", "R*"],
                                             ["L", "X", "*"])).map(lambda item: [item]),
    "ScheduledWorkitemCodeSequence": _code_key(["SEG", "seg", "SR", "S*", "?EG"],
                                               ["DCM", "99WORKLIST", "99*"],
                                               ["Segmentation", "segmentation", "Seg*"]),
    "ReferencedRequestSequence": _item(
        AccessionNumber=_one_of(*[a for a in ACCESSIONS if a], "ACC*", "acc*", "A_C*",
                                "A?C1", '""'),
        RequestedProcedureID=_one_of("RP1", "RP?", '""'),
        StudyInstanceUID=_one_of(*STUDIES)).map(lambda item: [item]),
    # not indexed: matched in Python on the SQL candidates
    "CommentsOnTheScheduledProcedureStep": _one_of("urgent", "Urgent*", "*urgent*", "n/a*",
                                                   '""'),
    "PatientBirthDate": _one_of("19700101", "19800101-", "-19851231", "19700101-19851231",
                                '""'),
    "ScheduledStationNameCodeSequence": _code_key(["WS01"], ["L"]),
}


@st.composite
def identifiers(draw, population_size: int) -> tuple[Dataset, bool]:
    ident = Dataset()
    for kw in draw(st.lists(st.sampled_from(sorted(KEYS) + ["SOPInstanceUID"]), min_size=1,
                            max_size=3, unique=True)):
        if kw == "SOPInstanceUID":
            picks = draw(st.lists(st.integers(0, population_size + 2), min_size=1,
                                  max_size=4, unique=True))
            uids = [UID_ROOT + str(i) for i in picks]
            ident.SOPInstanceUID = uids if len(uids) > 1 else uids[0]
        else:
            put(ident, kw, draw(KEYS[kw]))
    return ident, draw(st.booleans())


@contextmanager
def fresh_service() -> Iterator[WorklistService]:
    with tempfile.TemporaryDirectory(prefix="wl-sql-") as tmp:
        store = open_store(f"sqlite:///{tmp}/worklist.db")
        try:
            yield WorklistService(store)
        finally:
            store.engine.dispose()


def uids_of(texts: list[str]) -> list[str]:
    return [json.loads(t)["00080018"]["Value"][0] for t in texts]


POPULATION = 30


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(specs=st.lists(workitem_specs, min_size=POPULATION, max_size=POPULATION),
       queries=st.lists(identifiers(POPULATION), min_size=1, max_size=8))
def test_sql_and_python_matching_agree(specs, queries):
    with fresh_service() as service:
        uids = []
        for i, spec in enumerate(specs):
            uid = UID_ROOT + str(i)
            service.create(build(spec), uid, ACTOR)
            drive(service, uid, spec["state"])
            uids.append(uid)
        # The expectation: Query.matches over each workitem as the service returns it
        # (retrieve_json: the DICOM JSON that retrieve() turns into a Dataset).
        stored = [(uid, json.loads(service.retrieve_json(uid))) for uid in uids]
        for ident, fuzzy in queries:
            query = parse_identifier(ident, fuzzy=fuzzy)
            expected = [uid for uid, ds in stored if query.matches(ds)]
            result = service.search(query, limit=1000)
            assert uids_of(result.items) == expected, (ident, fuzzy, sql_conditions(query))
            assert result.remaining == 0


# -- known hard cases, always tried -------------------------------------------------
TRICKY_NAMES = ["Straße^Anna", "STRASSE^ANNA", "strasse^anna", "=山田^太郎", "", "Doe^Jane",
                "DOE^JANE", "İnci^Ayşe", "ǅemal^X", "Ǆ^Y", "K^Kelvin", "K^Kelvin"]


@pytest.fixture(scope="module")
def tricky_service() -> Iterator[tuple[WorklistService, list[tuple[str, dict]]]]:
    with fresh_service() as service:
        for i, name in enumerate(TRICKY_NAMES):
            spec = {"label": "T", "priority": "LOW", "name": name, "patient_id": "P",
                    "start": STARTS[i % len(STARTS)], "expected": None, "readiness": "READY",
                    "study": STUDIES[0], "performers": [([("r1", "L")], name or "X^Y", "Lab")],
                    "codes": [], "accessions": [], "comments": "", "birth_date": ""}
            service.create(build(spec), UID_ROOT + str(i), ACTOR)
        uids = [UID_ROOT + str(i) for i in range(len(TRICKY_NAMES))]
        yield service, [(u, json.loads(service.retrieve_json(u))) for u in uids]


@pytest.mark.parametrize("fuzzy", [False, True])
@pytest.mark.parametrize("key", ["*SSE*", "stra?e*", "STRA?E^ANNA", "*ß*", "STRASSE^ANNA",
                                 "strasse*", '""', "*", "?*", "İ*", "i̇*", "i*", "ǆ*", "Ǆ*",
                                 "k^kelvin", "K*", "k*", "*^*", "Doe^Jane"])
@pytest.mark.parametrize("where", ["PatientName", "HumanPerformerName"])
def test_hard_cases_agree(tricky_service, key, fuzzy, where):
    service, stored = tricky_service
    ident = Dataset()
    if where == "PatientName":
        put(ident, "PatientName", key)
    else:
        item = Dataset()
        put(item, "HumanPerformerName", key)
        ident.ScheduledHumanPerformersSequence = [item]
    query = parse_identifier(ident, fuzzy=fuzzy)
    expected = [uid for uid, ds in stored if query.matches(ds)]
    assert uids_of(service.search(query, limit=1000).items) == expected


def test_fuzzy_matching_folds_case_the_same_way_everywhere(tricky_service):
    service, stored = tricky_service
    ident = Dataset()
    ident.PatientName = "*SSE*"
    found = uids_of(service.search(parse_identifier(ident, fuzzy=True)).items)
    # ß case-folds to "ss": Straße matches like STRASSE, in SQL and in Python alike
    assert found == [UID_ROOT + "0", UID_ROOT + "1", UID_ROOT + "2"]
    ident.PatientName = '""'
    found = uids_of(service.search(parse_identifier(ident)).items)
    # a name with only an Ideographic group is not empty
    assert found == [UID_ROOT + "4"]


# -- the split between SQL and Python ------------------------------------------------
def _split(**keys):
    ident = Dataset()
    for kw, value in keys.items():
        put(ident, kw, value)
    clauses, residual = sql_conditions(parse_identifier(ident))
    return len(clauses), [type(c).__name__ for c in residual]


def _item_ds(**keys) -> Dataset:
    item = Dataset()
    for kw, value in keys.items():
        setattr(item, kw, value)
    return item


@pytest.mark.parametrize("keys", [
    dict(ProcedureStepState="SCHEDULED"), dict(WorklistLabel="Li*"),
    dict(ScheduledProcedureStepPriority="HIGH"), dict(PatientID="P1"),
    dict(PatientName="Doe^Jane"), dict(ScheduledProcedureStepStartDateTime="20261122-"),
    dict(StudyInstanceUID=["1.2.3", "1.2.4"]), dict(SOPInstanceUID="1.2.3"),
    dict(InputReadinessState="READY"), dict(ProcedureStepLabel="Seg*"),
    dict(ExpectedCompletionDateTime='""'),
    dict(ScheduledWorkitemCodeSequence=[_item_ds(CodeValue="SEG", CodingSchemeDesignator="DCM")]),
    dict(ReferencedRequestSequence=[_item_ds(AccessionNumber="ACC*")]),
    dict(ScheduledHumanPerformersSequence=[_item_ds(
        HumanPerformerName="Reader*", HumanPerformerOrganization="Lab A",
        HumanPerformerCodeSequence=[_item_ds(CodeValue="r1", CodingSchemeDesignator="L")])]),
], ids=lambda k: next(iter(k)))
def test_indexed_keys_become_sql(keys):
    assert _split(**keys) == (1, [])


@pytest.mark.parametrize("keys", [
    dict(CommentsOnTheScheduledProcedureStep="urgent"),
    dict(PatientBirthDate="19700101-"),
    dict(ScheduledWorkitemCodeSequence=[_item_ds(CodeMeaning="Seg*")]),
    dict(ReferencedRequestSequence=[_item_ds(StudyInstanceUID="1.2.3")]),
    dict(ScheduledStationNameCodeSequence=[_item_ds(CodeValue="WS01")]),
], ids=lambda k: next(iter(k)))
def test_other_keys_stay_for_python(keys):
    clauses, residual = _split(**keys)
    assert clauses == 0 and len(residual) == 1


def test_universal_keys_filter_nothing():
    assert _split(PatientName="", WorklistLabel="*", ScheduledWorkitemCodeSequence=[]) == (0, [])


# -- paging ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paged_service() -> Iterator[WorklistService]:
    with fresh_service() as service:
        for i in range(23):
            ds = sample_workitem(worklist_label="Page" if i % 3 else "Other",
                                 patient_id=f"P{i:02d}")
            ds.CommentsOnTheScheduledProcedureStep = "odd" if i % 2 else "even"
            service.create(ds, UID_ROOT + str(i), ACTOR)
        yield service


PAGED_QUERIES = {
    "all": Dataset(),
    "sql only": (lambda d: (setattr(d, "WorklistLabel", "Page"), d)[1])(Dataset()),
    "python only": (lambda d: (setattr(d, "CommentsOnTheScheduledProcedureStep", "odd"),
                               d)[1])(Dataset()),
    "both": (lambda d: (setattr(d, "WorklistLabel", "Page"),
                        setattr(d, "CommentsOnTheScheduledProcedureStep", "even"), d)[2])(
        Dataset()),
    "none": (lambda d: (setattr(d, "PatientID", "nobody"), d)[1])(Dataset()),
}


@pytest.mark.parametrize("name", list(PAGED_QUERIES))
@pytest.mark.parametrize("limit", [1, 4, 5, 100])
def test_paging_is_disjoint_stable_complete_and_remaining_is_exact(paged_service, name, limit):
    query = parse_identifier(PAGED_QUERIES[name])
    everything = uids_of(paged_service.search(query, limit=1000).items)
    expected = [UID_ROOT + str(i) for i in range(23)
                if query.matches(paged_service.retrieve(UID_ROOT + str(i)))]
    assert everything == expected
    pages, offset = [], 0
    while True:
        result = paged_service.search(query, offset=offset, limit=limit)
        page = uids_of(result.items)
        assert len(page) == min(limit, max(len(expected) - offset, 0))
        assert result.remaining == max(len(expected) - offset - limit, 0)
        # the same request gives the same page (PS3.18 8.3.4.4.1: idempotent)
        assert uids_of(paged_service.search(query, offset=offset, limit=limit).items) == page
        pages.append(page)
        if not result.remaining:
            break
        offset += limit
    flat = [u for p in pages for u in p]
    assert flat == expected                      # complete, in creation order
    assert len(set(flat)) == len(flat)           # disjoint


@pytest.mark.parametrize("name", list(PAGED_QUERIES))
def test_offset_past_the_end(paged_service, name):
    query = parse_identifier(PAGED_QUERIES[name])
    result = paged_service.search(query, offset=1000, limit=10)
    assert result.items == [] and result.remaining == 0


@pytest.mark.parametrize("name", list(PAGED_QUERIES))
def test_iter_search_crosses_batches(paged_service, name):
    # Single pass, keyset paged: the same matches in the same order as one search.
    query = parse_identifier(PAGED_QUERIES[name])
    found = [json.loads(t)["00080018"]["Value"][0]
             for t in paged_service.iter_search(query, first_batch=2, batch=3)]
    expected = [json.loads(t)["00080018"]["Value"][0]
                for t in paged_service.search(query, limit=1000).items]
    assert found == expected
    assert len(found) > 3 or name == "none"


def test_search_never_ignores_a_key(paged_service):
    # A key the store has no column for still filters (PS3.4 C.2.2.2; issue 2 item 3).
    ident = Dataset()
    ident.CommentsOnTheScheduledProcedureStep = "no such comment"
    assert paged_service.search(parse_identifier(ident)).items == []
    assert isinstance(parse_identifier(ident).conditions[0], matching.SingleValue)


# -- counting from the side tables ---------------------------------------------------
@pytest.fixture(scope="module")
def readers_service() -> Iterator[WorklistService]:
    """Workitems for readers r0-r2 in two worklists; some items name a reader twice
    (two code items) or two readers; some are claimed or completed afterwards, so the
    state copied into the side tables must follow."""
    from worklist.sample import code_item, performer_item
    with fresh_service() as service:
        for i in range(30):
            ds = sample_workitem(worklist_label=f"W{i % 2}")
            perf = performer_item(f"r{i % 3}", "Reader")
            if i % 5 == 0:
                perf.HumanPerformerCodeSequence.append(code_item(f"r{i % 3}", "99X", "alias"))
            ds.ScheduledHumanPerformersSequence = [perf] + (
                [performer_item(f"r{(i + 1) % 3}", "Other")] if i % 7 == 0 else [])
            ds.ScheduledWorkitemCodeSequence = [code_item("SEG" if i % 4 else "QA", "99W", "x")]
            service.create(ds, UID_ROOT + f"9{i}", ACTOR)
        for i in range(0, 30, 4):
            uid, tx = UID_ROOT + f"9{i}", f"2.25.{i + 1}"
            service.change_state(uid, "IN PROGRESS", tx, ACTOR)
            if i % 8 == 0:
                service.update(uid, final_state_attributes(), tx, ACTOR)
                service.change_state(uid, "COMPLETED", tx, ACTOR)
        yield service


def _reader_query(code: str, label: str | None, state: str | None,
                  seq: str = "ScheduledHumanPerformersSequence") -> Dataset:
    ident = Dataset()
    item, code_ds = Dataset(), Dataset()
    code_ds.CodeValue = code
    if seq == "ScheduledHumanPerformersSequence":
        item.HumanPerformerCodeSequence = [code_ds]
    else:
        item = code_ds
    setattr(ident, seq, [item])
    if label:
        ident.WorklistLabel = label
    if state:
        ident.ProcedureStepState = state
    return ident


@pytest.mark.parametrize("code", ["r0", "r1", "r2"])
@pytest.mark.parametrize("label", [None, "W0", "W1"])
@pytest.mark.parametrize("state", [None, "SCHEDULED", "IN PROGRESS", "COMPLETED"])
def test_side_table_count_is_exact(readers_service, code, label, state):
    # The "N additional results" of a page comes from the performers index alone for
    # these queries; it must equal the number of matches Python finds.
    from worklist.store import _side_count
    query = parse_identifier(_reader_query(code, label, state))
    assert _side_count(query) is not None
    expected = [u for u in readers_service.search(query, limit=1000).items
                if query.matches(json.loads(u))]
    page = readers_service.search(query, limit=1)
    assert page.remaining == max(len(expected) - 1, 0)


@pytest.mark.parametrize("code", ["SEG", "QA"])
@pytest.mark.parametrize("state", [None, "SCHEDULED", "IN PROGRESS"])
def test_workitem_code_count_is_exact(readers_service, code, state):
    query = parse_identifier(_reader_query(code, "W1", state, "ScheduledWorkitemCodeSequence"))
    total = len(readers_service.search(query, limit=1000).items)
    assert readers_service.search(query, limit=1).remaining == max(total - 1, 0)


@pytest.mark.parametrize("scheme", ["99WLLOGIN", "99X"])
@pytest.mark.parametrize("state", [None, "SCHEDULED"])
def test_side_table_count_with_scheme_is_exact(readers_service, scheme, state):
    ident = _reader_query("r0", None, state)
    ident.ScheduledHumanPerformersSequence[0].HumanPerformerCodeSequence[0] \
        .CodingSchemeDesignator = scheme
    query = parse_identifier(ident)
    total = len(readers_service.search(query, limit=1000).items)
    assert total >= 1
    assert readers_service.search(query, limit=1).remaining == total - 1
