"""Bad input thrown at every UPS-RS endpoint over real sockets, on SQLite and PostgreSQL.

Whatever arrives, the answer is a 4xx with a JSON message (a 5xx is a bug), the server
keeps serving, and the workitems it already holds are unchanged byte for byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import Server
from worklist.sample import sample_workitem_json

from .upsrs_helpers import (DATABASES, DICOM_JSON, assert_error, bring_to, dataset,
                            history, history_url, module_server, new_uid, state_body, tag)

STATES = ("SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED")
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])


@pytest.fixture(scope="module", params=DATABASES)
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per database for the whole module (overrides conftest's ``server``;
    conftest's ``client`` talks to it)."""
    yield from module_server(request, tmp_path_factory)


@pytest.fixture(scope="module")
def targets(server: Server) -> dict[str, str]:
    """One workitem in each state (UID by state); the Transaction UIDs stay secret."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        return {state: bring_to(client, state)[0] for state in STATES}


class Snapshot:
    """What must not change: each target as retrieved, its history, the whole worklist."""

    def __init__(self, client: httpx.Client, server: Server, targets: dict[str, str]) -> None:
        self.client, self.server, self.targets = client, server, targets
        self.before = self.take()

    def take(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for uid in self.targets.values():
            r = self.client.get(f"/workitems/{uid}")
            assert r.status_code == 200, r.text
            out[uid] = (r.content, len(history(self.client, uid)))
        r = self.client.get("/workitems", params={"limit": "1000", "includefield": "all"})
        out["all"] = r.content
        return out

    def check(self) -> None:
        assert self.server.process.poll() is None, self.server.log()
        assert self.take() == self.before


@pytest.fixture(scope="module")
def snapshot(server: Server, targets: dict[str, str]) -> Iterator[Snapshot]:
    """Taken once per server: every test of the module checks against the same state."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield Snapshot(client, server, targets)


def assert_refused(r: httpx.Response) -> None:
    """A 4xx whose body is JSON with a message saying what was wrong."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert_error(r, r.status_code)


# -- strategies --------------------------------------------------------------------------
KEYWORDS = ("ProcedureStepState", "TransactionUID", "ProcedureStepLabel", "PatientName",
            "PatientID", "ScheduledProcedureStepStartDateTime", "ScheduledWorkitemCodeSequence",
            "CodeValue", "CodeMeaning", "ReasonForCancellation", "ContactURI",
            "ProcedureStepDiscontinuationReasonCodeSequence", "InputReadinessState",
            "ScheduledProcedureStepPriority", "SOPInstanceUID", "SOPClassUID",
            "StudyInstanceUID", "ReferencedRequestSequence", "ScheduledHumanPerformersSequence",
            "UnifiedProcedureStepPerformedProcedureSequence", "Rows", "PixelData",
            "SpecificCharacterSet", "PatientSize", "ReferencedFrameNumber")
TAG_KEYS = [tag(k) for k in KEYWORDS]
ODD_KEYS = ["00000000", "00100000", "00091010", "00100011", "0010001", "ZZZZZZZZ",
            "7fe00010", "PatientID", "", "00741000 "]
VRS = ["AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD",
       "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI",
       "UL", "UN", "UR", "US", "UT", "UV", "XX", "", "sq"]
SPECIAL = ["IN PROGRESS", "COMPLETED", "CANCELED", "SCHEDULED", "1.2.3", "1.02.3",
           "20261122", "20261122090000", "2026112209", "", " ", "\x00", "a\x00b", "a\\b",
           "Doe^Jane", "*", "?", "-", "\ud7ff", "\t\n", "x" * 70, "99999999999999999999"]

scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.sampled_from(SPECIAL))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=9), inner, max_size=4),
                           max_leaves=12)
person_names = st.dictionaries(st.sampled_from(["Alphabetic", "Ideographic", "Phonetic", "x"]),
                               scalars, max_size=3)
keys = st.sampled_from(TAG_KEYS) | st.sampled_from(ODD_KEYS) | st.from_regex(
    r"\A[0-9A-Fa-f]{8}\Z")


def _elements(items: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    value = st.lists(scalars | person_names | items, max_size=3) | scalars
    return st.fixed_dictionaries({"vr": st.sampled_from(VRS)}, optional={
        "Value": value, "InlineBinary": st.text(max_size=8), "junk": scalars})


dicom_like = st.recursive(
    st.dictionaries(keys, _elements(st.nothing()), max_size=4),
    lambda inner: st.dictionaries(keys, _elements(inner), max_size=4), max_leaves=10)
VALID = [json.dumps(sample_workitem_json()).encode(),
         json.dumps(dataset(ProcedureStepLabel="x")).encode(),
         json.dumps(state_body("IN PROGRESS", "1.2.3")).encode()]
mutated = st.builds(lambda data, at, cut, junk: data[:at] + junk + data[at + cut:],
                    st.sampled_from(VALID), st.integers(0, 2000), st.integers(0, 5),
                    st.binary(max_size=3))
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    dicom_like.map(lambda d: json.dumps(d).encode()),
    dicom_like.map(lambda d: json.dumps([d]).encode()),
    st.lists(dicom_like, min_size=2, max_size=3).map(lambda ds: json.dumps(ds).encode()),
    mutated,
)


# -- anything, where nothing may change ----------------------------------------------------
def _send(client: httpx.Client, targets: dict[str, str], endpoint: str, body: bytes,
          content_type: str = DICOM_JSON) -> httpx.Response:
    kind, _, state = endpoint.partition(" ")
    uid = targets.get(state, "")
    path = {"create": "/workitems", "update": f"/workitems/{uid}",
            "state": f"/workitems/{uid}/state",
            "cancelrequest": f"/workitems/{uid}/cancelrequest"}[kind]
    method = "PUT" if kind == "state" else "POST"
    return client.request(method, path, content=body, headers={"Content-Type": content_type})


# Endpoints where no request at all can succeed without knowing a secret Transaction UID
# (update and change state of a claimed workitem), or ever (a final workitem).
LOCKED = ["create", "update IN PROGRESS", "update COMPLETED", "update CANCELED",
          "state IN PROGRESS", "state COMPLETED", "state CANCELED", "cancelrequest COMPLETED"]


@settings(max_examples=150, **SETTINGS)
@given(endpoint=st.sampled_from(LOCKED), body=bodies)
def test_random_bodies_are_refused(client: httpx.Client, snapshot: Snapshot,
                                   targets: dict[str, str], endpoint: str,
                                   body: bytes) -> None:
    r = _send(client, targets, endpoint, body)
    assert_refused(r)
    snapshot.check()


@settings(max_examples=40, **SETTINGS)
@given(endpoint=st.sampled_from(LOCKED),
       content_type=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
       .map(str.strip)  # what httpx can send
       | st.sampled_from(["application/dicom+json; charset=", "application/json;;;",
                          "application/dicom+json; charset=utf-16", "*/*", "application/*"]))
def test_random_content_types(client: httpx.Client, snapshot: Snapshot,
                              targets: dict[str, str], endpoint: str,
                              content_type: str) -> None:
    kind = endpoint.split(" ")[0]
    body = VALID[{"create": 1, "update": 1, "state": 2, "cancelrequest": 1}[kind]]
    assert_refused(_send(client, targets, endpoint, body, content_type))
    snapshot.check()


# -- malformed, wherever it is sent ----------------------------------------------------------
def _is_a_dataset(body: bytes) -> bool:
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) or (isinstance(obj, list) and len(obj) == 1)


_UID_RE = re.compile(r"\A(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\Z")
_DT_RE = re.compile(r"\A\d{4}(\d{2}){0,5}(\.\d{1,6})?([+-]\d{4})?\Z")
not_uids = st.text(max_size=70).filter(lambda s: s and not (_UID_RE.match(s) and len(s) <= 64))
not_dts = st.text(max_size=30).filter(lambda s: s.strip() and not _DT_RE.match(s.strip()))
control = st.sampled_from([chr(c) for c in range(32) if c not in (9, 10, 12, 13, 27)])


def _deep(levels: int) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for _ in range(levels):
        item = {tag("ScheduledWorkitemCodeSequence"): {"vr": "SQ", "Value": [item]}}
    return item


# Each makes any DICOM JSON object definitely invalid.
CORRUPTIONS = {
    "wrong VR": st.just({tag("ProcedureStepLabel"): {"vr": "SH", "Value": ["x"]}}),
    "Value not a list": st.builds(lambda v: {tag("ProcedureStepLabel"): {"vr": "LO",
                                                                        "Value": v}},
                                  scalars | st.dictionaries(st.text(), scalars)),
    "PN not an object": st.builds(lambda v: {tag("PatientName"): {"vr": "PN", "Value": [v]}},
                                  st.text(min_size=1) | st.integers()),
    "string not a string": st.builds(
        lambda v: {tag("ProcedureStepLabel"): {"vr": "LO", "Value": [v]}},
        st.integers() | st.floats() | st.booleans() | st.lists(st.text(), min_size=1)),
    "invalid UID": st.builds(lambda v: {tag("StudyInstanceUID"): {"vr": "UI", "Value": [v]}},
                             not_uids),
    "invalid date-time": st.builds(
        lambda v: {tag("ScheduledProcedureStepStartDateTime"): {"vr": "DT", "Value": [v]}},
        not_dts),
    "control character": st.builds(
        lambda a, c, b: {tag("ProcedureStepLabel"): {"vr": "LO", "Value": [a + c + b]}},
        st.text(max_size=5), control, st.text(max_size=5)),
    "control character in a name": st.builds(
        lambda c: {tag("PatientName"): {"vr": "PN", "Value": [{"Alphabetic": f"Doe{c}^J"}]}},
        control),
    "unknown attribute": st.sampled_from([{"00100011": {"vr": "LO", "Value": ["x"]}},
                                          {"7FFF0000": {"vr": "UL", "Value": [1]}}]),
    "group length": st.just({"00100000": {"vr": "UL", "Value": [4]}}),
    "command element": st.just({"00001000": {"vr": "UI", "Value": ["1.2.3"]}}),
    "not a tag": st.builds(lambda k: {k: {"vr": "LO", "Value": ["x"]}},
                           st.text(max_size=12).filter(lambda k: not re.fullmatch(
                               r"[0-9A-Fa-f]{8}", k))),
    "element not an object": st.builds(lambda v: {tag("ProcedureStepLabel"): v},
                                       scalars | st.lists(scalars)),
    "unknown VR": st.builds(lambda vr: {tag("ProcedureStepLabel"): {"vr": vr, "Value": ["x"]}},
                            st.text(max_size=3).filter(lambda vr: vr not in VRS[:-3])),
    "unexpected member": st.just({tag("ProcedureStepLabel"): {"vr": "LO", "Value": ["x"],
                                                              "value": ["y"]}}),
    "too deep": st.integers(17, 40).map(_deep),
}


def _corrupt(base: bytes, corruption: dict[str, Any]) -> bytes:
    obj = json.loads(base)
    obj.update(corruption)
    return json.dumps(obj).encode()


malformed = st.one_of(
    st.binary(min_size=1, max_size=300).filter(lambda b: b.strip() and not _is_a_dataset(b)),
    json_values.map(lambda v: json.dumps(v).encode()).filter(lambda b: not _is_a_dataset(b)),
    st.builds(_corrupt, st.sampled_from(VALID), st.one_of(*CORRUPTIONS.values())),
    st.lists(st.sampled_from(VALID), min_size=2, max_size=3).map(
        lambda bs: b"[" + b",".join(bs) + b"]"),
    st.sampled_from([b"[" * 100_000, b'{"00741204":' * 50_000, b"\xff\xfe\x00",
                     '{"00741204":{"vr":"LO","Value":["\ud800"]}}'.encode("utf-8",
                                                                        "surrogatepass"),
                     b'{"00741204":{"vr":"LO","Value":["\\ud800"]}}',
                     b'{"00100010":{"vr":"PN","Value":[{"Alphabetic":"\\udfff"}]}}']),
)


@settings(max_examples=150, **SETTINGS)
@given(endpoint=st.sampled_from(["create", "update SCHEDULED", "state SCHEDULED",
                                 "cancelrequest SCHEDULED", "cancelrequest IN PROGRESS",
                                 "cancelrequest CANCELED", "update IN PROGRESS"]),
       body=malformed)
def test_malformed_bodies_are_refused_everywhere(client: httpx.Client, snapshot: Snapshot,
                                                 targets: dict[str, str], endpoint: str,
                                                 body: bytes) -> None:
    r = _send(client, targets, endpoint, body)
    assert r.status_code == 400, (r.status_code, r.text)
    assert_refused(r)
    snapshot.check()


# -- queries and paths ---------------------------------------------------------------------
QUERY_KEYS = ("PatientName", "PatientID", "00100020", "ScheduledProcedureStepStartDateTime",
              "00404005", "ProcedureStepState", "SOPInstanceUID", "StudyInstanceUID",
              "00404034.00404009.00080100", "ScheduledWorkitemCodeSequence.CodeValue",
              "ScheduledWorkitemCodeSequence", "PatientBirthDate", "ScheduledProcedureStepPriority",
              "includefield", "fuzzymatching", "limit", "offset", "Rows", "TransactionUID",
              "PatientID.CodeValue", "Foo", "foo", "", "0010", "00100020.00080100",
              "ReferencedRequestSequence.AccessionNumber", "InputReadinessState",
              "ExpectedCompletionDateTime", "ScheduledStationNameCodeSequence.CodeMeaning")
QUERY_VALUES = ("*", "?", "-", "", ",", "20261122-", "-20261122", "20261122-20261121",
                "1.2.3,1.2.4", "true", "false", "all", "0", "-1", "10000000000000000000000",
                "Doe*", "\x00", "a\x00", "%", "_", "\\", "'; DROP TABLE workitems; --",
                "IN PROGRESS", "20261122090000+0200-20261123", "9999", "99991231-")
query_pairs = st.lists(st.tuples(st.sampled_from(QUERY_KEYS) | st.text(max_size=12),
                                 st.sampled_from(QUERY_VALUES) | st.text(max_size=25)),
                       max_size=5)


@settings(max_examples=200, **SETTINGS)
@given(pairs=query_pairs)
def test_random_searches_never_fail(client: httpx.Client, server: Server,
                                    pairs: list[tuple[str, str]]) -> None:
    r = client.get("/workitems", params=pairs)
    assert r.status_code in (200, 204, 400), (r.status_code, r.text)
    if r.status_code == 400:
        assert_refused(r)
    elif r.status_code == 200:
        assert isinstance(r.json(), list)
    assert server.process.poll() is None


@settings(max_examples=60, **SETTINGS)
@given(raw=st.text(max_size=60))
def test_random_query_strings_never_fail(client: httpx.Client, raw: str) -> None:
    r = client.get("/workitems?" + quote(raw, safe="=&,.*?-"))
    assert r.status_code in (200, 204, 400), (r.status_code, r.text)


@settings(max_examples=60, **SETTINGS)
@given(uid=st.text(min_size=1, max_size=70).filter(lambda s: "/" not in s and s.strip("."))
       | st.sampled_from(["\x00", "1.2.3\x00", "%00", "1" * 65, "1.2.3;x", "1.2.3 "]),
       action=st.sampled_from(["retrieve", "update", "state", "cancelrequest", "history"]))
def test_random_workitem_paths_are_404_or_400(client: httpx.Client, snapshot: Snapshot,
                                              uid: str, action: str) -> None:
    path = quote(uid, safe="")
    if action == "retrieve":
        r = client.get(f"/workitems/{path}")
    elif action == "history":
        r = client.get(history_url(client, path))
    elif action == "update":
        r = client.post(f"/workitems/{path}", json=dataset(ProcedureStepLabel="x"),
                        headers={"Content-Type": DICOM_JSON})
    elif action == "state":
        r = client.put(f"/workitems/{path}/state", json=state_body("IN PROGRESS", new_uid()),
                       headers={"Content-Type": DICOM_JSON})
    else:
        r = client.post(f"/workitems/{path}/cancelrequest")
    assert r.status_code in (400, 404, 405), (r.status_code, r.text)
    assert_refused(r)
    snapshot.check()


# -- the cases found so far, named -----------------------------------------------------------
@pytest.mark.parametrize("query", [
    "offset=100000000000000000000000000000", "offset=9223372036854775808",
    "offset=9223372036854775807", "limit=100000000000000000000000000000",
    "PatientID=a%00b", "PatientName=%00*", "SOPInstanceUID=1.2%00,1.3",
    "ScheduledWorkitemCodeSequence.CodeValue=%00", "offset=" + "9" * 5000,
])
def test_search_edge_cases(client: httpx.Client, query: str) -> None:
    r = client.get(f"/workitems?{query}")
    assert r.status_code in (200, 204, 400), (r.status_code, r.text)
    if r.status_code == 400:
        assert_refused(r)


@pytest.mark.parametrize("uid", ["%00", "1.2.3%00", "1.2.3%004"])
def test_nul_in_workitem_path_is_404(client: httpx.Client, uid: str) -> None:
    assert_error(client.get(f"/workitems/{uid}"), 404)
    assert_error(client.post(f"/workitems/{uid}/cancelrequest"), 404)
    assert_error(client.get(history_url(client, uid)), 404)


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"00741204":' * 50_000],
                         ids=["arrays", "objects"])
def test_deeply_nested_json_is_400(client: httpx.Client, snapshot: Snapshot, body: bytes) -> None:
    assert_error(client.post("/workitems", content=body, headers={"Content-Type": DICOM_JSON}),
                 400, mentions=("JSON",))
    snapshot.check()


@pytest.mark.parametrize("keyword, vr, value", [
    ("PatientID", "LO", "P\x001"), ("ProcedureStepLabel", "LO", "Segment\x00"),
    ("PatientName", "PN", {"Alphabetic": "Doe\x00^Jane"}),
    ("CommentsOnTheScheduledProcedureStep", "LT", "line\x00"),
    ("AdmissionID", "LO", "A\x1b1\x07"),
])
def test_control_characters_are_refused(client: httpx.Client, keyword: str, vr: str,
                                        value: Any) -> None:
    body = sample_workitem_json()
    body[tag(keyword)] = {"vr": vr, "Value": [value]}
    uid = new_uid()
    assert_error(client.post(f"/workitems?workitem={uid}", json=body,
                             headers={"Content-Type": DICOM_JSON}), 400, mentions=(keyword,))
    assert_error(client.get(f"/workitems/{uid}"), 404)


def test_still_serving_and_nothing_changed(client: httpx.Client, snapshot: Snapshot) -> None:
    """After everything above (searches included): the same workitems, unchanged."""
    assert client.get("/workitems", params={"limit": "1"}).status_code in (200, 204)
    snapshot.check()
