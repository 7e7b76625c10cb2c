"""DICOM JSON in (PS3.18 F.2) with the value checks of PS3.5 6.2: every bad input is an
:class:`~worklist.errors.InvalidRequest` (a 4xx, never a 5xx) that names the attribute
and, inside sequences, the path to it; valid datasets round-trip unchanged.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from worklist import dicomjson, errors
from worklist.dicomjson import (check_uid, dataset_to_json_dict, normalize_dt, parse_json,
                                parse_json_dataset, parse_tag)
from worklist.sample import final_state_attributes, sample_workitem, sample_workitem_json


def attr(tag: str, vr: str, *values, **members) -> str:
    """A one-attribute DICOM JSON body."""
    elem = {"vr": vr, **members}
    if values:
        elem["Value"] = list(values)
    return json.dumps({tag: elem})


def refused(body, error=errors.InvalidRequest) -> errors.UPSError:
    with pytest.raises(errors.InvalidRequest) as info:
        parse_json(body)
    assert isinstance(info.value, error), (type(info.value), info.value.message)
    assert info.value.message
    return info.value


# -- the body is not JSON, or not one object ----------------------------------------
@pytest.mark.parametrize("body", [
    b"", b"{", b"{not json}", b'{"00100020": {"vr": "LO",}}', b"\xff\xfe{}", "{'a': 1}",
    b'{"a": 1} trailing', b"[" * 100_000 + b"]" * 100_000,
])
def test_malformed_json(body):
    exc = refused(body)
    assert "not valid JSON" in exc.message
    assert int(exc.status) == 0x0106 and exc.http_status == 400


@pytest.mark.parametrize("body", ["42", '"text"', "null", "true", "[1, 2]", "[]", "[{}, {}]",
                                  '[["00100020"]]', "3.5"])
def test_not_one_object(body):
    refused(body)


def test_a_list_of_exactly_one_dataset_is_accepted():
    assert parse_json(json.dumps([json.loads(attr("00100020", "LO", "P1"))])) == {
        "00100020": {"vr": "LO", "Value": ["P1"]}}


@pytest.mark.parametrize("key", ["PatientID", "0010002X", "001000200", "0010020", "",
                                 "(0010,0020)"])
def test_keys_must_be_tags(key):
    exc = refused(json.dumps({key: {"vr": "LO", "Value": ["x"]}}))
    assert "8 hex digits" in exc.message


def test_lower_case_tags_are_accepted_as_upper_case():
    obj = parse_json(json.dumps({"0020000d": {"vr": "UI", "Value": ["1.2.3"]}}))
    assert obj == {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}


@pytest.mark.parametrize("elem", ['"P1"', "[]", "null", "5"])
def test_an_attribute_is_an_object(elem):
    exc = refused('{"00100020": %s}' % elem)
    assert "PatientID (0010,0020)" in exc.message


def test_unexpected_members():
    exc = refused(attr("00100020", "LO", "P1", Values=["P2"]))
    assert "Values" in exc.message


@pytest.mark.parametrize("value", ['"P1"', "{}", "5"])
def test_value_must_be_an_array(value):
    exc = refused('{"00100020": {"vr": "LO", "Value": %s}}' % value, errors.InvalidAttributeValue)
    assert "JSON array" in exc.message


# -- VRs ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("tag", "vr", "value", "expected"), [
    ("00100010", "LO", "Doe^Jane", "PN"),        # PatientName is PN
    ("00100020", "SH", "P1", "LO"),              # PatientID is LO
    ("0020000D", "LO", "1.2.3", "UI"),           # StudyInstanceUID is UI
    ("00404005", "DA", "20261122", "DT"),        # SPS Start DateTime is DT
    ("00741000", "LO", "SCHEDULED", "CS"),       # ProcedureStepState is CS
    ("00404034", "LO", "x", "SQ"),               # ScheduledHumanPerformersSequence is SQ
])
def test_wrong_vr_for_a_known_tag(tag, vr, value, expected):
    exc = refused(attr(tag, vr, value), errors.InvalidAttributeValue)
    assert f"has VR {vr}" in exc.message and expected in exc.message
    assert exc.attribute == tag


@pytest.mark.parametrize("vr", [None, "", "XX", "lo", 5])
def test_no_or_unknown_vr(vr):
    elem = {"Value": ["P1"]} if vr is None else {"vr": vr, "Value": ["P1"]}
    exc = refused(json.dumps({"00100020": elem}), errors.InvalidAttributeValue)
    assert "Value Representation" in exc.message


def test_un_for_a_public_tag():
    exc = refused(attr("00100020", "UN", "P1"), errors.InvalidAttributeValue)
    assert "LO" in exc.message


@pytest.mark.parametrize("tag", ["00081234", "00100002", "00401998", "00741999"])
def test_unknown_public_tag_is_0105(tag):
    exc = refused(attr(tag, "LO", "x"), errors.NoSuchAttribute)
    assert int(exc.status) == 0x0105
    assert "data dictionary" in exc.message


@pytest.mark.parametrize("tag", ["00100000", "00000100", "00000000"])
def test_group_length_and_command_elements(tag):
    refused(attr(tag, "UL", 4), errors.NoSuchAttribute)


def test_private_tags_are_accepted():
    body = json.dumps({"00090010": {"vr": "LO", "Value": ["ACME"]},
                       "00091001": {"vr": "LO", "Value": ["x"]}})
    assert parse_json(body)["00091001"]["Value"] == ["x"]


# -- values per VR (PS3.5 6.2) -----------------------------------------------------------
@pytest.mark.parametrize("uid", ["1.02.3", "01.2", "1.2.", ".1.2", "1..2", "1.2.abc", "1.2 3",
                                 "1." + "2" * 63, "1.2-3", "１.２"])
def test_bad_uid(uid):
    exc = refused(attr("0020000D", "UI", uid), errors.InvalidAttributeValue)
    assert "StudyInstanceUID (0020,000D)" in exc.message and "UID" in exc.message
    with pytest.raises(errors.InvalidAttributeValue):
        check_uid(uid)


@pytest.mark.parametrize("uid", ["0", "1.2.3", "2.25.0", "1." + "2" * 62,
                                 "1.2.840.10008.5.1.4.34.6.1"])
def test_good_uid(uid):
    assert parse_json(attr("0020000D", "UI", uid))["0020000D"]["Value"] == [uid]
    assert check_uid(uid) == uid


@pytest.mark.parametrize("value", ["20261340", "20260230", "2026-11-22", "2026112", "202611221",
                                   "20261122 ", "yyyymmdd", "20261100"])
def test_bad_da(value):
    exc = refused(attr("00100030", "DA", value), errors.InvalidAttributeValue)
    assert "PatientBirthDate (0010,0030)" in exc.message and "DA" in exc.message


@pytest.mark.parametrize("value", ["20260228", "20240229", "19000101"])
def test_good_da(value):
    parse_json(attr("00100030", "DA", value))


@pytest.mark.parametrize("value", ["20261122250000", "20261122096000", "2026112209000",
                                   "2026112209000+0100", "20261122+2500", "20261122+0160",
                                   "20261340", "2026-11-22T09:00", "20261122090000.1234567",
                                   "202611220900001", "20261122090000 +0100"])
def test_bad_dt(value):
    exc = refused(attr("00404005", "DT", value), errors.InvalidAttributeValue)
    assert "ScheduledProcedureStepStartDateTime (0040,4005)" in exc.message


@pytest.mark.parametrize("value", ["2026", "202611", "20261122", "2026112209",
                                   "20261122093000.123456-0500", "20261122093000+1400",
                                   "20261122235960"])
def test_good_dt(value):
    parse_json(attr("00404005", "DT", value))


@pytest.mark.parametrize("value", ["2460", "2400", "1261", "120061", "12:00", "1", "12345",
                                   "120000.1234567", "ab"])
def test_bad_tm(value):
    exc = refused(attr("00080030", "TM", value), errors.InvalidAttributeValue)
    assert "StudyTime (0008,0030)" in exc.message


@pytest.mark.parametrize("value", ["00", "2359", "235959", "235960", "120000.5", "120000.123456"])
def test_good_tm(value):
    parse_json(attr("00080030", "TM", value))


@pytest.mark.parametrize("value", ["Doe^Jane", 5, ["Doe^Jane"], {"Alphabetic": 5},
                                   {"Name": "Doe^Jane"}, {"Alphabetic": "Doe^Jane", "x": "y"}])
def test_pn_is_an_object_of_groups(value):
    exc = refused(attr("00100010", "PN", value), errors.InvalidAttributeValue)
    assert "PatientName (0010,0010)" in exc.message and "PN" in exc.message


def test_pn_groups():
    value = {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    assert parse_json(attr("00100010", "PN", value))["00100010"]["Value"] == [value]


@pytest.mark.parametrize(("tag", "vr", "value"), [
    ("00280010", "US", "5"), ("00280010", "US", True), ("00280010", "US", [5]),
    ("00280010", "US", 1.5), ("00280010", "US", 70000), ("00280010", "US", -1),
    ("00189087", "FD", "1.5"), ("00189087", "FD", float("inf")),
    ("00209157", "UL", 2**32), ("00189219", "SS", -40000),
])
def test_binary_numbers(tag, vr, value):
    body = json.dumps({tag: {"vr": vr, "Value": [value]}})
    exc = refused(body, errors.InvalidAttributeValue)
    assert f"VR {vr}" in exc.message


def test_nan_is_no_number():
    refused('{"00189087": {"vr": "FD", "Value": [NaN]}}', errors.InvalidAttributeValue)


@pytest.mark.parametrize(("tag", "vr", "value"), [
    ("00280010", "US", 0), ("00280010", "US", 65535), ("00189087", "FD", 1e300),
    ("00189219", "SS", -32768), ("00209157", "UL", 2**32 - 1),
])
def test_good_binary_numbers(tag, vr, value):
    assert parse_json(json.dumps({tag: {"vr": vr, "Value": [value]}}))[tag]["Value"] == [value]


@pytest.mark.parametrize(("tag", "vr", "value"), [
    ("00100020", "LO", 5), ("00100020", "LO", ["P1"]), ("00741000", "CS", True),
    ("00201208", "IS", "abc"), ("00201208", "IS", True), ("00741000", "CS", "scheduled"),
    ("00100020", "LO", "x" * 65), ("00100020", "LO", "A\x01B"),
])
def test_bad_text_values(tag, vr, value):
    refused(json.dumps({tag: {"vr": vr, "Value": [value]}}), errors.InvalidAttributeValue)


# -- errors inside sequences report the path -------------------------------------------
def _performers(*items) -> str:
    return json.dumps({"00404034": {"vr": "SQ", "Value": list(items)}})


def test_nested_wrong_vr_reports_the_path():
    good = sample_workitem_json(performer="reader1")["00404034"]["Value"][0]
    bad = json.loads(json.dumps(good))
    bad["00404009"]["Value"][0]["00080100"]["vr"] = "LO"
    exc = refused(_performers(good, bad), errors.InvalidAttributeValue)
    assert exc.message.startswith(
        "ScheduledHumanPerformersSequence (0040,4034) item 2 > "
        "HumanPerformerCodeSequence (0040,4009) item 1 > CodeValue (0008,0100)")


def test_nested_bad_value_reports_the_path():
    item = {"0020000D": {"vr": "UI", "Value": ["1.02.3"]}}
    exc = refused(json.dumps({"0040A370": {"vr": "SQ", "Value": [{}, {}, item]}}),
                  errors.InvalidAttributeValue)
    assert exc.message.startswith(
        "ReferencedRequestSequence (0040,A370) item 3 > StudyInstanceUID (0020,000D)")


def test_nested_pn_reports_the_path():
    exc = refused(_performers({"00404037": {"vr": "PN", "Value": ["Reader^One"]}}),
                  errors.InvalidAttributeValue)
    assert exc.message.startswith("ScheduledHumanPerformersSequence (0040,4034) item 1 > "
                                  "HumanPerformerName (0040,4037)")


def test_nested_unknown_tag_reports_the_path():
    exc = refused(_performers({"00081234": {"vr": "LO", "Value": ["x"]}}), errors.NoSuchAttribute)
    assert exc.message.startswith("ScheduledHumanPerformersSequence (0040,4034) item 1 > "
                                  "(0008,1234)")


@pytest.mark.parametrize("item", ['"x"', "5", "[]", "null"])
def test_items_must_be_objects(item):
    exc = refused('{"00404034": {"vr": "SQ", "Value": [%s]}}' % item,
                  errors.InvalidAttributeValue)
    assert "ScheduledHumanPerformersSequence (0040,4034) item 1" in exc.message


def test_nesting_depth_is_bounded():
    body = {"vr": "SQ"}
    for _ in range(40):
        body = {"vr": "SQ", "Value": [{"00404034": body}]}
    refused(json.dumps({"00404034": body}))


# -- valid datasets round-trip -------------------------------------------------------------
ROUND_TRIP = {
    "sample": lambda: sample_workitem_json(performer="reader1"),
    "non-ASCII": lambda: sample_workitem_json(patient_name="Müller^Jürgen",
                                              label="Läsionen segmentieren"),
    "final-state": lambda: dataset_to_json_dict(final_state_attributes()),
    "empty values": lambda: {"00100010": {"vr": "PN"}, "00404034": {"vr": "SQ", "Value": []},
                             "00100020": {"vr": "LO"}},
    "three PN groups": lambda: {"00100010": {"vr": "PN", "Value": [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}]}},
    "numbers": lambda: {"00280010": {"vr": "US", "Value": [512]},
                        "00189087": {"vr": "FD", "Value": [1000.5]},
                        "00201208": {"vr": "IS", "Value": [12]}},
    "multi-valued": lambda: {"00080008": {"vr": "CS", "Value": ["DERIVED", "PRIMARY"]},
                             "00101001": {"vr": "PN", "Value": [{"Alphabetic": "A^B"},
                                                                {"Alphabetic": "C^D"}]}},
}


@pytest.mark.parametrize("name", list(ROUND_TRIP))
def test_valid_datasets_round_trip(name):
    obj = ROUND_TRIP[name]()
    text = json.dumps(obj)
    assert parse_json(text) == obj
    assert parse_json(text.encode("utf-8")) == obj
    ds = parse_json_dataset(text)
    assert isinstance(ds, Dataset)
    assert dataset_to_json_dict(ds) == obj
    # and once more through the dataset
    assert dataset_to_json_dict(parse_json_dataset(json.dumps(dataset_to_json_dict(ds)))) == obj


def test_round_trip_keeps_values_as_pydicom_reads_them():
    ds = parse_json_dataset(json.dumps(sample_workitem_json(patient_name="Müller^Jürgen")))
    assert ds.PatientName == "Müller^Jürgen"
    assert ds.ProcedureStepState == "SCHEDULED"
    assert ds.ScheduledWorkitemCodeSequence[0].CodeValue == "SEG"
    assert ds.TransactionUID == ""


def test_sample_workitem_is_valid_dicom_json():
    assert parse_json(json.dumps(sample_workitem().to_json_dict()))


# -- small helpers -----------------------------------------------------------------------
def test_parse_tag():
    assert parse_tag("PatientID") == 0x00100020
    assert parse_tag("00100020") == 0x00100020
    assert parse_tag("0040a370") == 0x0040A370
    for bad in ("patientid", "0010002", "Nonsense", ""):
        with pytest.raises(errors.InvalidRequest):
            parse_tag(bad)


@pytest.mark.parametrize(("text", "upper", "expected"), [
    ("2026", False, "20260101000000.000000"),
    ("2026", True, "20261231235959.999999"),
    ("202602", True, "20260228235959.999999"),
    ("20240229", True, "20240229235959.999999"),
    ("20261122090000+0100", False, "20261122080000.000000"),
    ("20261122090000-0500", False, "20261122140000.000000"),
    ("20261122233000-0100", False, "20261123003000.000000"),
    ("20261122093000.5", True, "20261122093000.599999"),
    ("20261122093000.5", False, "20261122093000.500000"),
])
def test_normalize_dt(text, upper, expected):
    assert normalize_dt(text, upper=upper) == expected


def test_normalize_dt_refuses_what_is_no_date_time():
    for bad in ("x", "2026-11-22", "20261340"):
        with pytest.raises(errors.InvalidAttributeValue):
            normalize_dt(bad)


# -- whatever arrives, the answer is a 4xx or a dataset ---------------------------------
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)
_tags = st.sampled_from(["00100010", "00100020", "0020000D", "00404005", "00404034",
                         "00404009", "00080100", "00280010", "00189087", "00091001",
                         "00100030", "00080030", "00741000", "0040A370", "00209165"])
_vrs = st.sampled_from(sorted(dicomjson._KNOWN_VRS) + ["XX"])


@st.composite
def _almost_dicom_json(draw, depth=0):
    obj = {}
    for tag in draw(st.lists(_tags, max_size=4, unique=True)):
        vr = draw(_vrs)
        elem: dict = {"vr": vr}
        kind = draw(st.integers(0, 3))
        if kind == 1 and depth < 3:
            elem["Value"] = draw(st.lists(_almost_dicom_json(depth + 1), max_size=2))
        elif kind == 2:
            elem["Value"] = draw(st.lists(_json_values, max_size=3))
        elif kind == 3:
            elem["Value"] = draw(_json_values)
        obj[tag] = elem
    return obj


@settings(max_examples=300, deadline=None)
@given(body=_almost_dicom_json() | _json_values)
def test_any_input_is_a_dataset_or_an_invalid_request(body):
    try:
        text = json.dumps(body)
    except ValueError:
        return
    try:
        obj = parse_json(text)
    except errors.InvalidRequest:
        return
    # what is accepted can be turned into a Dataset and back without error
    ds = parse_json_dataset(json.dumps(obj))
    dataset_to_json_dict(ds)
