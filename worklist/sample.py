"""A complete, valid annotation workitem: for the README, the tests and the benchmarks.

It carries every attribute PS3.4 Table CC.2.5-3 requires at N-CREATE (Type 1 with a
value, Type 2 present), so it shows a client exactly what a creation needs.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from .dicomjson import dataset_to_json_dict
from .provenance import LOGIN_SCHEME

__all__ = ["new_workitem", "sample_workitem", "sample_workitem_json", "code_item", "performer_item",
           "instances_item",
           "final_state_attributes"]


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def instances_item(study: str, series: str, refs: list[tuple[str, str]], *,
                   aet: str | None, dicomweb_root: str) -> Dataset:
    """A PS3.3 Table 10-3b Referenced Instances and Access Macro item for one series:
    Type of Instances DICOM, study, series, Referenced SOP Sequence ((SOP Class UID, SOP
    Instance UID) pairs), a DICOM Retrieval item naming ``aet`` (when given) and a WADO-RS
    Retrieval item for the series under ``dicomweb_root``."""
    item = Dataset()
    item.TypeOfInstances = "DICOM"
    item.StudyInstanceUID, item.SeriesInstanceUID = study, series
    seq = []
    for sop_class, sop_uid in refs:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = sop_class, sop_uid
        seq.append(ref)
    item.ReferencedSOPSequence = seq
    if aet:
        dicom = Dataset()
        dicom.RetrieveAETitle = aet
        item.DICOMRetrievalSequence = [dicom]
    wado = Dataset()
    wado.RetrieveURL = f"{dicomweb_root}/studies/{study}/series/{series}"
    item.WADORSRetrievalSequence = [wado]
    return item


def performer_item(login: str, name: str, organization: str = "Reading Lab") -> Dataset:
    item = Dataset()
    item.HumanPerformerCodeSequence = [code_item(login, LOGIN_SCHEME, name)]
    item.HumanPerformerName = name
    item.HumanPerformerOrganization = organization
    return item


def new_workitem(*, label: str, worklist_label: str, priority: str, start: str,
                 workitem_code: Dataset, study_uid: str, patient_name: str = "",
                 patient_id: str = "", birth_date: str = "", sex: str = "",
                 accession: str = "", procedure_description: str = "",
                 performers: list[Dataset] | None = None, readiness: str = "READY",
                 processing_parameters: list[Dataset] | None = None,
                 inputs: list[Dataset] | None = None,
                 outputs: list[Dataset] | None = None,
                 expected_completion: str | None = None) -> Dataset:
    """An N-CREATE dataset with every attribute PS3.4 Table CC.2.5-3 requires at
    creation: the given values, and the Type 2 attributes present and empty."""
    ds = Dataset()
    ds.TransactionUID = ""
    ds.ProcedureStepState = "SCHEDULED"
    ds.ScheduledProcedureStepPriority = priority
    ds.ProcedureStepLabel = label
    ds.WorklistLabel = worklist_label
    ds.ScheduledProcessingParametersSequence = processing_parameters or []
    ds.ScheduledStationNameCodeSequence = []
    ds.ScheduledStationClassCodeSequence = []
    ds.ScheduledStationGeographicLocationCodeSequence = []
    ds.ScheduledHumanPerformersSequence = performers or []
    ds.ScheduledProcedureStepStartDateTime = start
    if expected_completion:
        ds.ExpectedCompletionDateTime = expected_completion
    ds.ScheduledWorkitemCodeSequence = [workitem_code]
    ds.CommentsOnTheScheduledProcedureStep = ""
    ds.InputReadinessState = readiness
    ds.InputInformationSequence = inputs or []
    if outputs is not None:
        ds.OutputDestinationSequence = outputs
    ds.StudyInstanceUID = study_uid
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = ""
    ds.IssuerOfPatientIDQualifiersSequence = []
    ds.OtherPatientIDsSequence = []
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.AdmissionID = ""
    ds.IssuerOfAdmissionIDSequence = []
    ds.AdmittingDiagnosesDescription = ""
    ds.AdmittingDiagnosesCodeSequence = []
    request = Dataset()
    request.StudyInstanceUID = study_uid
    request.AccessionNumber = accession
    request.IssuerOfAccessionNumberSequence = []
    request.PlacerOrderNumberImagingServiceRequest = ""
    request.OrderPlacerIdentifierSequence = []
    request.FillerOrderNumberImagingServiceRequest = ""
    request.OrderFillerIdentifierSequence = []
    request.RequestedProcedureID = ""
    request.RequestedProcedureDescription = procedure_description
    request.RequestedProcedureCodeSequence = []
    ds.ReferencedRequestSequence = [request]
    ds.ProcedureStepProgressInformationSequence = []
    ds.UnifiedProcedureStepPerformedProcedureSequence = []
    return ds


def sample_workitem(*, worklist_label: str = "default", performer: str | None = None,
                    patient_id: str = "PAT001", patient_name: str = "Doe^Jane",
                    study_uid: str | None = None, label: str = "Segment liver lesions",
                    priority: str = "MEDIUM", start: str = "20261122090000",
                    accession: str = "ACC0001", with_uid: bool = False) -> Dataset:
    ds = new_workitem(
        label=label, worklist_label=worklist_label, priority=priority, start=start,
        workitem_code=code_item("SEG", "99WORKLIST", "Segmentation"),
        study_uid=study_uid or generate_uid(), patient_name=patient_name,
        patient_id=patient_id, accession=accession,
        performers=[performer_item(performer, performer.title())] if performer else [])
    if with_uid:
        ds.SOPInstanceUID = generate_uid()
    return ds


def sample_workitem_json(**kwargs: object) -> dict:
    return dataset_to_json_dict(sample_workitem(**kwargs))  # type: ignore[arg-type]


def final_state_attributes(performer: str = "reader1", name: str = "Reader One",
                           start: str = "20261122100000", end: str = "20261122103000") -> Dataset:
    """The N-SET content that lets a workitem become COMPLETED (PS3.4 CC.2.5.1.1)."""
    performed = Dataset()
    actual = Dataset()
    actual.HumanPerformerCodeSequence = [code_item(performer, LOGIN_SCHEME, name)]
    actual.HumanPerformerName = name
    actual.HumanPerformerOrganization = "Reading Lab"
    performed.ActualHumanPerformersSequence = [actual]
    performed.PerformedStationNameCodeSequence = [code_item("WS01", "99WORKLIST",
                                                                 "Annotation workstation")]
    performed.PerformedProcedureStepStartDateTime = start
    performed.PerformedProcedureStepEndDateTime = end
    performed.PerformedWorkitemCodeSequence = [code_item("SEG", "99WORKLIST", "Segmentation")]
    performed.OutputInformationSequence = []
    ds = Dataset()
    ds.UnifiedProcedureStepPerformedProcedureSequence = [performed]
    return ds
