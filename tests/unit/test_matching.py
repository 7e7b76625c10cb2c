"""Attribute matching, one group per PS3.4 C.2.2.2 rule, on pure datasets.

Identifiers are built as a C-FIND SCU would build them (pydicom Datasets) and parsed
by :func:`worklist.matching.parse_identifier`; stored workitems are Datasets too (and,
in one group, their DICOM JSON form, which is what the store keeps).
"""

from __future__ import annotations

import pytest
from pydicom import config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from worklist import errors, matching
from worklist.matching import parse_identifier


def make(**attrs) -> Dataset:
    """A dataset from keywords; values are taken as given (lower-case CS, wildcards in
    UIDs...), as a query may carry them, without pydicom's validation warnings."""
    ds = Dataset()
    for kw, value in attrs.items():
        tag = tag_for_keyword(kw)
        ds.add(DataElement(tag, dictionary_VR(tag), value, validation_mode=config.IGNORE))
    return ds


def query(fuzzy: bool = False, **keys) -> matching.Query:
    return parse_identifier(make(**keys), fuzzy=fuzzy)


def matches(stored: Dataset, fuzzy: bool = False, **keys) -> bool:
    return query(fuzzy, **keys).matches(stored)


def code(value: str, scheme: str, meaning: str = "x") -> Dataset:
    return make(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


# -- C.2.2.2.1 Single Value Matching -------------------------------------------------
class TestSingleValue:
    def test_exact_value_matches(self):
        stored = make(PatientID="PAT-001", ProcedureStepState="SCHEDULED")
        assert matches(stored, PatientID="PAT-001")
        assert matches(stored, ProcedureStepState="SCHEDULED")
        assert isinstance(query(PatientID="PAT-001").conditions[0], matching.SingleValue)

    def test_different_value_does_not_match(self):
        stored = make(PatientID="PAT-001")
        assert not matches(stored, PatientID="PAT-002")
        assert not matches(stored, PatientID="PAT-00")  # no prefix matching
        assert not matches(stored, PatientID="PAT-0011")

    @pytest.mark.parametrize(("kw", "stored", "key"), [
        ("PatientID", "abc", "ABC"),
        ("ProcedureStepState", "SCHEDULED", "scheduled"),
        ("WorklistLabel", "Liver", "liver"),
        ("ProcedureStepLabel", "Segment Liver", "segment liver"),
    ])
    def test_case_sensitive(self, kw, stored, key):
        assert not matches(make(**{kw: stored}), **{kw: key})
        assert matches(make(**{kw: stored}), **{kw: stored})

    @pytest.mark.parametrize(("stored", "key"), [
        ("SCHEDULED ", "SCHEDULED"),   # stored with padding
        ("SCHEDULED", "SCHEDULED "),   # key with padding
        ("SCHEDULED  ", "SCHEDULED "),
    ])
    def test_trailing_space_padding_is_insignificant(self, stored, key):
        assert matches(make(ProcedureStepState=stored), ProcedureStepState=key)

    def test_trailing_padding_insignificant_for_person_names(self):
        assert matches(make(PatientName="Doe^Jane "), PatientName="Doe^Jane")
        assert matches(make(PatientName="Doe^Jane"), PatientName="Doe^Jane ")

    def test_leading_spaces_insignificant_only_where_the_vr_says_so(self):
        # PS3.5 6.2: LO may be padded with leading spaces, LT may not.
        assert matches(make(WorklistLabel="  Liver"), WorklistLabel="Liver")
        assert not matches(make(CommentsOnTheScheduledProcedureStep="  note"),
                           CommentsOnTheScheduledProcedureStep="note")
        assert matches(make(CommentsOnTheScheduledProcedureStep="note  "),
                       CommentsOnTheScheduledProcedureStep="note")

    def test_single_uid_value(self):
        stored = make(StudyInstanceUID="1.2.3.4")
        assert matches(stored, StudyInstanceUID="1.2.3.4")
        assert not matches(stored, StudyInstanceUID="1.2.3")
        assert not matches(stored, StudyInstanceUID="1.2.3.4.5")

    def test_any_of_several_stored_values_may_match(self):
        # PS3.4 C.2.2.3: an attribute with several values matches if any value matches.
        stored = make(OtherPatientNames=["Roe^Richard", "Doe^Jane"])
        assert matches(stored, OtherPatientNames="Doe^Jane")
        assert matches(stored, OtherPatientNames="Roe^Richard")
        assert not matches(stored, OtherPatientNames="Doe^John")

    def test_every_key_must_match(self):
        stored = make(PatientID="P1", WorklistLabel="Liver")
        assert matches(stored, PatientID="P1", WorklistLabel="Liver")
        assert not matches(stored, PatientID="P1", WorklistLabel="Lung")

    def test_stored_json_and_dataset_agree(self):
        stored = make(PatientID="P1", PatientName="Doe^Jane",
                      ScheduledWorkitemCodeSequence=[code("SEG", "99WL")])
        as_json = stored.to_json_dict()
        for q in (query(PatientID="P1"), query(PatientName="DOE^JANE", fuzzy=True),
                  query(ScheduledWorkitemCodeSequence=[make(CodeValue="SEG")]),
                  query(PatientID="P2")):
            assert q.matches(stored) == q.matches(as_json)


# -- C.2.2.2.1.1 Person Name matching ------------------------------------------------
class TestPersonName:
    def test_literal_matching_is_case_sensitive(self):
        stored = make(PatientName="Doe^Jane")
        assert matches(stored, PatientName="Doe^Jane")
        assert not matches(stored, PatientName="DOE^JANE")
        assert not matches(stored, PatientName="doe^jane")

    @pytest.mark.parametrize("key", ["DOE^JANE", "doe^jane", "dOe^JaNe", "Doe^Jane"])
    def test_fuzzy_matching_is_case_insensitive(self, key):
        assert matches(make(PatientName="Doe^Jane"), fuzzy=True, PatientName=key)

    def test_fuzzy_matching_folds_non_ascii(self):
        stored = make(PatientName="Müller^Jürgen")
        assert matches(stored, fuzzy=True, PatientName="MÜLLER^JÜRGEN")
        assert not matches(make(PatientName="Müller^Jürgen"), PatientName="MÜLLER^JÜRGEN")

    def test_fuzzy_is_still_exact_apart_from_case(self):
        assert not matches(make(PatientName="Doe^Jane"), fuzzy=True, PatientName="Doe^Jan")
        assert not matches(make(PatientName="Doe^Jane"), fuzzy=True, PatientName="Doe")

    def test_fuzzy_wildcard_is_case_insensitive(self):
        assert matches(make(PatientName="Doe^Jane"), fuzzy=True, PatientName="do*")
        assert not matches(make(PatientName="Doe^Jane"), PatientName="do*")

    def test_fuzzy_applies_to_pn_only(self):
        assert not matches(make(PatientID="abc"), fuzzy=True, PatientID="ABC")
        assert not matches(make(WorklistLabel="Liver"), fuzzy=True, WorklistLabel="liv*")

    def test_alphabetic_group_is_matched(self):
        stored = make(PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう")
        assert matches(stored, PatientName="Yamada^Tarou")
        assert matches(stored, PatientName="Yamada*")

    def test_person_names_in_sequence_items(self):
        stored = make(ScheduledHumanPerformersSequence=[
            make(HumanPerformerName="Reader^One", HumanPerformerOrganization="Lab")])
        key = [make(HumanPerformerName="READER^ONE")]
        assert not matches(stored, ScheduledHumanPerformersSequence=key)
        assert matches(stored, fuzzy=True, ScheduledHumanPerformersSequence=key)


# -- C.2.2.2.3 Universal Matching ----------------------------------------------------
class TestUniversal:
    @pytest.mark.parametrize("kw", ["PatientID", "PatientName", "WorklistLabel",
                                    "ProcedureStepState", "StudyInstanceUID",
                                    "ScheduledProcedureStepStartDateTime", "PatientBirthDate"])
    def test_empty_value_matches_everything(self, kw):
        q = query(**{kw: ""})
        assert isinstance(q.conditions[0], matching.Universal)
        assert q.filtering == ()
        assert q.matches(make(PatientID="P1", PatientName="Doe^Jane", WorklistLabel="x",
                              ProcedureStepState="SCHEDULED", StudyInstanceUID="1.2.3",
                              ScheduledProcedureStepStartDateTime="20261122",
                              PatientBirthDate="19700101"))
        assert q.matches(make())  # even where the attribute is absent
        assert q.return_tags == (q.conditions[0].tag,)

    @pytest.mark.parametrize("kw", ["PatientID", "PatientName", "WorklistLabel",
                                    "ProcedureStepState"])
    def test_a_single_star_is_universal(self, kw):
        q = query(**{kw: "*"})
        assert isinstance(q.conditions[0], matching.Universal)
        assert q.matches(make(**{kw: "anything"}))
        assert q.matches(make(**{kw: ""}))
        assert q.matches(make())

    def test_empty_sequence_key_is_universal(self):
        for key in ([], [Dataset()]):
            q = query(ScheduledWorkitemCodeSequence=key)
            assert isinstance(q.conditions[0], matching.Universal)
            assert q.matches(make())
            assert q.matches(make(ScheduledWorkitemCodeSequence=[code("A", "B")]))


# -- C.2.2.2.4 Wild Card Matching ----------------------------------------------------
class TestWildcard:
    @pytest.mark.parametrize(("pattern", "expected"), [
        ("Liv*", True), ("*ver", True), ("*iv*", True), ("L*r", True), ("Liver*", True),
        ("*Liver", True), ("L?ver", True), ("?iver", True), ("Live?", True),
        ("L??er", True), ("L*?r", True), ("?????", True),
        ("Liv?", False), ("??????", False), ("L?ver?", False), ("liv*", False),
        ("*x*", False), ("Lu*", False),
    ])
    def test_star_and_question_mark(self, pattern, expected):
        assert matches(make(WorklistLabel="Liver"), WorklistLabel=pattern) is expected
        assert isinstance(query(WorklistLabel=pattern).conditions[0], matching.Wildcard)

    def test_star_matches_zero_characters_question_mark_exactly_one(self):
        assert matches(make(PatientID="AB"), PatientID="A*B")
        assert not matches(make(PatientID="AB"), PatientID="A?B")
        assert matches(make(PatientID="AXB"), PatientID="A?B")
        assert not matches(make(PatientID="AXYB"), PatientID="A?B")

    @pytest.mark.parametrize(("stored", "pattern", "expected"), [
        ("a.b", "a.b*", True), ("axb", "a.b*", False),            # '.' is literal
        ("a+b", "a+*", True), ("aab", "a+*", False),               # '+' is literal
        ("f(x)", "f(*)", True), ("fx", "f(*", False),              # '(' is literal
        ("[ab]", "[ab]*", True), ("a", "[ab]*", False),            # '[' is literal
        ("$^|", "$^|*", True), ("x", "$*", False),
        ("50%", "50%*", True), ("500", "50%*", False),             # SQL LIKE chars too
        ("a_b", "a_b*", True), ("axb", "a_b*", False),
        ("x{2}", "x{2}?", False), ("x{2}", "x{2*", True),
    ])
    def test_regex_and_like_metacharacters_are_literal(self, stored, pattern, expected):
        assert matches(make(PatientID=stored), PatientID=pattern) is expected

    def test_wildcard_matching_is_case_sensitive(self):
        assert not matches(make(ProcedureStepLabel="Segment"), ProcedureStepLabel="seg*")
        assert matches(make(ProcedureStepLabel="Segment"), ProcedureStepLabel="Seg*")

    def test_wildcard_on_person_name(self):
        stored = make(PatientName="Doe^Jane")
        assert matches(stored, PatientName="Doe^*")
        assert matches(stored, PatientName="D?e^J*")
        assert not matches(stored, PatientName="Roe^*")

    def test_wildcards_are_literal_in_uids_and_dates(self):
        # C.2.2.2.4 lists the VRs that take wild cards; UI is not one of them.
        q = query(StudyInstanceUID="1.2.*")
        assert not isinstance(q.conditions[0], matching.Wildcard)
        assert not q.matches(make(StudyInstanceUID="1.2.3"))
        with pytest.raises(errors.InvalidRequest):
            query(PatientBirthDate="2026*")

    def test_wildcard_does_not_match_a_missing_value(self):
        assert not matches(make(), PatientID="A*")
        assert not matches(make(PatientID=""), PatientID="?")


# -- C.2.2.2.2 List of UID Matching --------------------------------------------------
class TestListOfUID:
    def test_any_uid_of_the_list_matches(self):
        q = query(StudyInstanceUID=["1.2.3", "1.2.4", "1.2.5"])
        assert isinstance(q.conditions[0], matching.ListOfUID)
        assert q.matches(make(StudyInstanceUID="1.2.4"))
        assert q.matches(make(StudyInstanceUID="1.2.5"))
        assert not q.matches(make(StudyInstanceUID="1.2.6"))
        assert not q.matches(make(StudyInstanceUID="1.2"))
        assert not q.matches(make())

    def test_backslash_encoded_list(self):
        ident = make(SOPInstanceUID=MultiValue(str, ["1.2.3", "1.2.4"]))
        q = parse_identifier(ident)
        assert q.matches(make(SOPInstanceUID="1.2.3"))
        assert q.matches(make(SOPInstanceUID="1.2.4"))
        assert not q.matches(make(SOPInstanceUID="1.2.34"))

    def test_a_list_of_one_is_single_value(self):
        q = query(StudyInstanceUID=["1.2.3"])
        assert q.matches(make(StudyInstanceUID="1.2.3"))
        assert not q.matches(make(StudyInstanceUID="1.2.3.1"))


# -- C.2.2.2.5 Range Matching --------------------------------------------------------
class TestRangeDA:
    @pytest.mark.parametrize(("key", "date", "expected"), [
        ("20260101-20260131", "20260101", True),   # inclusive lower bound
        ("20260101-20260131", "20260131", True),   # inclusive upper bound
        ("20260101-20260131", "20260115", True),
        ("20260101-20260131", "20251231", False),
        ("20260101-20260131", "20260201", False),
        ("20260101-", "20260101", True),           # "and subsequent"
        ("20260101-", "29991231", True),
        ("20260101-", "20251231", False),
        ("-20260101", "20260101", True),           # "prior to and including"
        ("-20260101", "19000101", True),
        ("-20260101", "20260102", False),
        ("20260115", "20260115", True),            # single value
        ("20260115", "20260116", False),
    ])
    def test_forms(self, key, date, expected):
        assert matches(make(PatientBirthDate=date), PatientBirthDate=key) is expected

    def test_no_value_never_falls_in_a_range(self):
        assert not matches(make(), PatientBirthDate="-20260101")
        assert not matches(make(PatientBirthDate=""), PatientBirthDate="19000101-")


class TestRangeTM:
    @pytest.mark.parametrize(("key", "time", "expected"), [
        ("1000-1800", "1000", True), ("1000-1800", "180000", True),
        ("1000-1800", "1800", True), ("1000-1800", "180059", True),  # 18 -> 18:00:59.999999
        ("1000-1800", "1801", False), ("1000-1800", "095959", False),
        ("1000-", "235959", True), ("-1000", "000000", True), ("-1000", "1001", False),
        ("2230", "223000", True),    # C.2.2.2.1.3 Note: matched by meaning
        ("223000", "2230", True),
        ("10", "103000", True), ("10", "110000", False),
        # a fraction is a precision too, as for DT: .1 covers .100000-.199999
        ("100000.1", "100000.15", True), ("100000.1", "100000.1", True),
        ("100000.1", "100000.2", False), ("100000.1", "100000.09", False),
        ("100000-100000.5", "100000.59", True), ("100000-100000.5", "100000.6", False),
    ])
    def test_forms(self, key, time, expected):
        assert matches(make(StudyTime=time), StudyTime=key) is expected


class TestRangeDT:
    @pytest.mark.parametrize(("key", "stored", "expected"), [
        ("20261122080000-20261122100000", "20261122090000", True),
        ("20261122080000-20261122100000", "20261122100000", True),
        ("20261122080000-20261122100000", "20261122100001", False),
        ("20261122-", "20261122000000", True),
        ("20261122-", "20261121235959.999999", False),
        ("-20261122", "20261122235959.999999", True),   # date precision: end of day
        ("-20261122", "20261123", False),
        ("2026-2027", "20271231235959", True),           # year precision
        ("2026-2027", "20280101", False),
    ])
    def test_forms(self, key, stored, expected):
        assert matches(make(ScheduledProcedureStepStartDateTime=stored),
                       ScheduledProcedureStepStartDateTime=key) is expected

    @pytest.mark.parametrize(("key", "stored", "expected"), [
        # stored offsets: 09:00+01:00 is 08:00 UTC
        ("20261122080000-20261122080000", "20261122090000+0100", True),
        ("20261122090000-20261122090000", "20261122090000+0100", False),
        # 09:00-05:00 is 14:00 UTC
        ("20261122140000-20261122140000", "20261122090000-0500", True),
        ("-20261122100000", "20261122090000-0500", False),
        # offsets in the key
        ("20261122150000+0100-20261122150000+0100", "20261122140000", True),
        ("20261122150000+0100-", "20261122090000-0500", True),
        ("-20261122083000+0100", "20261122090000+0100", False),
        ("-20261122093000+0100", "20261122090000+0100", True),
        ("20261122080000-0500-20261122100000-0500", "20261122140000", True),
        ("20261122080000-0500-20261122100000-0500", "20261122080000", False),
        # crossing midnight UTC
        ("20261123-", "20261122233000-0100", True),
    ])
    def test_offsets_compared_in_utc(self, key, stored, expected):
        assert matches(make(ScheduledProcedureStepStartDateTime=stored),
                       ScheduledProcedureStepStartDateTime=key) is expected

    @pytest.mark.parametrize(("key", "stored", "expected"), [
        ("20261122", "20261122000000", True),
        ("20261122", "20261122235959.999999", True),
        ("20261122", "20261123000000", False),
        ("2026112209", "20261122093000.5", True),
        ("2026112209", "20261122100000", False),
        ("202611220930", "20261122093059", True),
        ("20261122093000", "20261122093000.999", True),
        ("20261122093000", "20261122093001", False),
        ("19980128103000", "19980128103000.0000", True),   # C.2.2.2.1.3 Note
        ("19980128103000.0000", "19980128103000", True),
        ("20261122093000.5", "20261122093000.55", True),
        ("20261122093000.5", "20261122093000.6", False),
    ])
    def test_single_value_is_the_range_of_its_precision(self, key, stored, expected):
        assert matches(make(ScheduledProcedureStepStartDateTime=stored),
                       ScheduledProcedureStepStartDateTime=key) is expected

    @pytest.mark.parametrize(("key", "stored", "expected"), [
        ("20261122090000+0100", "20261122080000", True),
        ("20261122090000+0100", "20261122090000", False),
        # A single value with a negative offset is a value, not a range "…-0500".
        ("20261122090000-0500", "20261122140000", True),
        ("20261122090000-0500", "20261122150000+0100", True),
        ("20261122090000-0500", "20261122090000", False),
        ("2026112209-0500", "20261122143000", True),
    ])
    def test_single_value_with_offset(self, key, stored, expected):
        assert matches(make(ScheduledProcedureStepStartDateTime=stored),
                       ScheduledProcedureStepStartDateTime=key) is expected

    def test_stored_value_without_offset_is_utc(self):
        # Documented choice (worklist.dicomjson.normalize_dt): no offset means UTC.
        assert matches(make(ScheduledProcedureStepStartDateTime="20261122090000"),
                       ScheduledProcedureStepStartDateTime="20261122090000+0000")


# -- C.2.2.2.6 Sequence Matching -----------------------------------------------------
class TestSequence:
    def stored(self) -> Dataset:
        return make(ScheduledWorkitemCodeSequence=[
            code("SEG", "99WORKLIST"), code("SR", "DCM")])

    def test_the_second_item_may_match(self):
        key = [make(CodeValue="SR", CodingSchemeDesignator="DCM")]
        assert matches(self.stored(), ScheduledWorkitemCodeSequence=key)
        assert matches(self.stored(), ScheduledWorkitemCodeSequence=[make(CodeValue="SR")])
        assert matches(self.stored(), ScheduledWorkitemCodeSequence=[make(CodeValue="SEG")])

    def test_item_keys_must_match_within_the_same_item(self):
        # code value of item 1 + scheme of item 2: no single item has both.
        key = [make(CodeValue="SEG", CodingSchemeDesignator="DCM")]
        assert not matches(self.stored(), ScheduledWorkitemCodeSequence=key)
        key = [make(CodeValue="SR", CodingSchemeDesignator="99WORKLIST")]
        assert not matches(self.stored(), ScheduledWorkitemCodeSequence=key)

    def test_item_keys_use_every_matching_rule(self):
        stored = self.stored()
        def key(value, scheme):
            return [make(CodeValue=value, CodingSchemeDesignator=scheme)]

        assert matches(stored, ScheduledWorkitemCodeSequence=key("S*", "D?M"))
        assert not matches(stored, ScheduledWorkitemCodeSequence=key("SE*", "D*"))
        assert matches(stored, ScheduledWorkitemCodeSequence=key("", "DCM"))

    def test_no_sequence_or_no_items_never_match_a_filtering_item(self):
        key = [make(CodeValue="SEG")]
        assert not matches(make(), ScheduledWorkitemCodeSequence=key)
        assert not matches(make(ScheduledWorkitemCodeSequence=[]),
                           ScheduledWorkitemCodeSequence=key)

    def test_nested_sequences_match_within_the_same_performer(self):
        stored = make(ScheduledHumanPerformersSequence=[
            make(HumanPerformerName="Reader^One", HumanPerformerOrganization="Lab A",
                 HumanPerformerCodeSequence=[code("r1", "L")]),
            make(HumanPerformerName="Reader^Two", HumanPerformerOrganization="Lab B",
                 HumanPerformerCodeSequence=[code("r2", "L"), code("r2b", "X")]),
        ])

        def perf(**item):
            return matches(stored, ScheduledHumanPerformersSequence=[make(**item)])

        assert perf(HumanPerformerCodeSequence=[make(CodeValue="r2b")])
        assert perf(HumanPerformerCodeSequence=[make(CodeValue="r2", CodingSchemeDesignator="L")])
        assert not perf(HumanPerformerCodeSequence=[make(CodeValue="r2",
                                                         CodingSchemeDesignator="X")])
        assert perf(HumanPerformerName="Reader^Two",
                    HumanPerformerCodeSequence=[make(CodeValue="r2b")])
        assert not perf(HumanPerformerName="Reader^One",
                        HumanPerformerCodeSequence=[make(CodeValue="r2")])
        assert not perf(HumanPerformerOrganization="Lab A", HumanPerformerName="Reader^Two")
        assert perf(HumanPerformerOrganization="Lab B", HumanPerformerName="Reader^Two")

    def test_a_key_sequence_holds_one_item(self):
        with pytest.raises(errors.InvalidRequest):
            query(ScheduledWorkitemCodeSequence=[make(CodeValue="A"), make(CodeValue="B")])


# -- empty values --------------------------------------------------------------------
class TestEmptyValues:
    @pytest.mark.parametrize(("kw", "key"), [
        ("PatientID", "P1"), ("PatientID", "P*"), ("PatientID", "?"),
        ("PatientName", "Doe^Jane"), ("StudyInstanceUID", "1.2.3"),
        ("StudyInstanceUID", ["1.2.3", "1.2.4"]), ("PatientBirthDate", "19000101-"),
        ("ScheduledProcedureStepStartDateTime", "-20261122"),
    ])
    def test_an_empty_stored_value_fails_a_non_universal_key(self, kw, key):
        # PS3.4 K.2.2.1.1.1 semantics, chosen for UPS (see /tmp/ps318-notes.md Q4).
        assert not matches(make(**{kw: ""}), **{kw: key})
        assert not matches(make(), **{kw: key})

    @pytest.mark.parametrize(("kw", "value"), [
        ("PatientID", "P1"), ("PatientName", "Doe^Jane"), ("PatientBirthDate", "19700101"),
        ("WorklistLabel", "Liver"), ("AdmissionID", "A1"),
    ])
    def test_two_quotation_marks_match_only_empty_or_absent(self, kw, value):
        q = query(**{kw: '""'})
        assert isinstance(q.conditions[0], matching.EmptyValue)
        assert q.matches(make())
        assert q.matches(make(**{kw: ""}))
        assert not q.matches(make(**{kw: value}))

    def test_empty_value_matching_inside_a_sequence_item(self):
        stored = make(ReferencedRequestSequence=[
            make(AccessionNumber="ACC1"), make(AccessionNumber="")])
        assert matches(stored, ReferencedRequestSequence=[make(AccessionNumber='""')])
        stored = make(ReferencedRequestSequence=[make(AccessionNumber="ACC1")])
        assert not matches(stored, ReferencedRequestSequence=[make(AccessionNumber='""')])


# -- invalid keys --------------------------------------------------------------------
class TestInvalidKeys:
    @pytest.mark.parametrize("key", [
        "2026-01-01",          # ISO, not DICOM
        "20261340",            # no month 13
        "20260230-20260301",   # no 30 February
        "2026010-20260131",    # 7 digits
        "abc-",
    ])
    def test_bad_date_range(self, key):
        with pytest.raises(errors.InvalidAttributeValue):
            query(PatientBirthDate=key)

    @pytest.mark.parametrize(("kw", "key"), [
        ("PatientBirthDate", "20260131-20260101"),
        ("StudyTime", "1800-1000"),   # no range across midnight (C.2.2.2.5)
        ("ScheduledProcedureStepStartDateTime", "20261123-20261122"),
        ("ScheduledProcedureStepStartDateTime", "20261122100000+0100-20261122100000+0200"),
    ])
    def test_reversed_range(self, kw, key):
        with pytest.raises(errors.InvalidAttributeValue) as info:
            query(**{kw: key})
        assert "before it starts" in info.value.message

    @pytest.mark.parametrize("key", ["2500", "1261", "1a00-"])
    def test_bad_time(self, key):
        with pytest.raises(errors.InvalidRequest):
            query(StudyTime=key)

    @pytest.mark.parametrize("key", ["202611221", "20261122250000", "20261122-x", "2026+"])
    def test_bad_date_time(self, key):
        with pytest.raises(errors.InvalidRequest):
            query(ScheduledProcedureStepStartDateTime=key)

    def test_a_lone_dash_is_not_a_range(self):
        with pytest.raises(errors.InvalidRequest):
            query(PatientBirthDate="-")

    @pytest.mark.parametrize(("kw", "value"), [
        ("PatientID", ["A", "B"]), ("PatientName", ["Doe^Jane", "Roe^Rick"]),
        ("PatientBirthDate", ["20260101", "20260102"]),
    ])
    def test_multi_valued_key_other_than_uid(self, kw, value):
        with pytest.raises(errors.InvalidRequest) as info:
            query(**{kw: value})
        assert "UID" in info.value.message

    def test_transaction_uid_is_no_key(self):
        with pytest.raises(errors.InvalidRequest):
            query(TransactionUID="1.2.3")
        with pytest.raises(errors.InvalidRequest):
            query(TransactionUID="")

    def test_binary_or_numeric_vr_is_no_key(self):
        with pytest.raises(errors.InvalidRequest):
            query(Rows=512)

    def test_query_level_and_character_set_are_ignored(self):
        q = parse_identifier(make(QueryRetrieveLevel="WORKLIST", SpecificCharacterSet="ISO_IR 192",
                                  PatientID="P1"))
        assert len(q.conditions) == 1
        assert q.return_tags == (0x00100020,)


@pytest.mark.parametrize("keyword", ["PatientName", "PatientID", "WorklistLabel"])
def test_nul_inside_a_key_value_is_refused_and_padding_is_not(keyword):
    # PostgreSQL cannot compare text holding NUL; no stored value holds one (PS3.5 6.1.3).
    # Trailing NULs are padding (UI) and are stripped, for every VR alike.
    ident = Dataset()
    setattr(ident, keyword, "a\x00b")
    with pytest.raises(errors.InvalidRequest, match="NUL"):
        parse_identifier(ident)
    setattr(ident, keyword, "\x00")
    assert isinstance(parse_identifier(ident).conditions[0], matching.Universal)
