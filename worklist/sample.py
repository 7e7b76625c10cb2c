"""A complete, valid annotation workitem: for the README, the tests and the benchmarks.

It carries every attribute PS3.4 Table CC.2.5-3 requires at N-CREATE (Type 1 with a
value, Type 2 present), so it shows a client exactly what a creation needs.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from .dicomjson import dataset_to_json_dict

__all__ = ["sample_workitem", "sample_workitem_json", "code_item", "performer_item",
           "final_state_attributes"]


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def performer_item(login: str, name: str, organization: str = "Reading Lab") -> Dataset:
    item = Dataset()
    item.HumanPerformerCodeSequence = [code_item(login, "L", name)]
    item.HumanPerformerName = name
    item.HumanPerformerOrganization = organization
    return item


def sample_workitem(*, worklist_label: str = "default", performer: str | None = None,
                    patient_id: str = "PAT001", patient_name: str = "Doe^Jane",
                    study_uid: str | None = None, label: str = "Segment liver lesions",
                    priority: str = "MEDIUM", start: str = "20261122090000",
                    accession: str = "ACC0001", with_uid: bool = False) -> Dataset:
    ds = Dataset()
    if with_uid:
        ds.SOPInstanceUID = generate_uid()
    ds.TransactionUID = ""
    ds.ProcedureStepState = "SCHEDULED"
    ds.ScheduledProcedureStepPriority = priority
    ds.ProcedureStepLabel = label
    ds.WorklistLabel = worklist_label
    ds.ScheduledProcessingParametersSequence = []
    ds.ScheduledStationNameCodeSequence = []
    ds.ScheduledStationClassCodeSequence = []
    ds.ScheduledStationGeographicLocationCodeSequence = []
    ds.ScheduledHumanPerformersSequence = ([performer_item(performer, performer.title())]
                                           if performer else [])
    ds.ScheduledProcedureStepStartDateTime = start
    ds.ScheduledWorkitemCodeSequence = [code_item("SEG", "99WORKLIST", "Segmentation")]
    ds.CommentsOnTheScheduledProcedureStep = ""
    ds.InputReadinessState = "READY"
    ds.InputInformationSequence = []
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = ""
    ds.IssuerOfPatientIDQualifiersSequence = []
    ds.OtherPatientIDsSequence = []
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.AdmissionID = ""
    ds.IssuerOfAdmissionIDSequence = []
    ds.AdmittingDiagnosesDescription = ""
    ds.AdmittingDiagnosesCodeSequence = []
    request = Dataset()
    request.StudyInstanceUID = ds.StudyInstanceUID
    request.AccessionNumber = accession
    request.IssuerOfAccessionNumberSequence = []
    request.PlacerOrderNumberImagingServiceRequest = ""
    request.OrderPlacerIdentifierSequence = []
    request.FillerOrderNumberImagingServiceRequest = ""
    request.OrderFillerIdentifierSequence = []
    request.RequestedProcedureID = ""
    request.RequestedProcedureDescription = ""
    request.RequestedProcedureCodeSequence = []
    ds.ReferencedRequestSequence = [request]
    ds.ProcedureStepProgressInformationSequence = []
    ds.UnifiedProcedureStepPerformedProcedureSequence = []
    return ds


def sample_workitem_json(**kwargs: object) -> dict:
    return dataset_to_json_dict(sample_workitem(**kwargs))  # type: ignore[arg-type]


def final_state_attributes(performer: str = "reader1", name: str = "Reader One",
                           start: str = "20261122100000", end: str = "20261122103000") -> Dataset:
    """The N-SET content that lets a workitem become COMPLETED (PS3.4 CC.2.5.1.1)."""
    performed = Dataset()
    actual = Dataset()
    actual.HumanPerformerCodeSequence = [code_item(performer, "L", name)]
    actual.HumanPerformerName = name
    actual.HumanPerformerOrganization = "Reading Lab"
    performed.ActualHumanPerformersSequence = [actual]
    performed.PerformedStationNameCodeSequence = [code_item("WS01", "L", "Annotation workstation")]
    performed.PerformedProcedureStepStartDateTime = start
    performed.PerformedProcedureStepEndDateTime = end
    performed.PerformedWorkitemCodeSequence = [code_item("SEG", "99WORKLIST", "Segmentation")]
    performed.OutputInformationSequence = []
    ds = Dataset()
    ds.UnifiedProcedureStepPerformedProcedureSequence = [performed]
    return ds
