"""The image store port and its two implementations: Orthanc's REST API, and a fake.

:class:`ImageStore` is what the service layer needs of the image store: which of the
instances a performer says it produced are really there (issue 5, point 5), and the
attributes of a SEG or SR output without its bulk data, to check and index it (issue 6).
:class:`OrthancClient` implements it over Orthanc's REST API and also offers what the
follower and the routing command read (``/changes``, studies, series, instances).
Both implementations raise :class:`~worklist.errors.ServiceUnavailable` when the store
cannot answer, so a caller never sees an HTTP library's exception.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from pydicom.dataset import Dataset

from . import errors

__all__ = ["ImageStore", "InstanceRef", "OrthancClient", "FakeImageStore", "OrthancNotFound"]

InstanceRef = tuple[str | None, str | None, str]
"""(Study Instance UID, Series Instance UID, SOP Instance UID); the first two may be None."""


class ImageStore(Protocol):
    def missing_instances(self, refs: Iterable[InstanceRef]) -> list[str]:
        """The SOP Instance UIDs among ``refs`` that the store does not hold, in order.

        Raises ServiceUnavailable when the store cannot be asked."""

    def instance_metadata(self, ref: InstanceRef) -> Dataset | None:
        """The attributes of one instance without its bulk data (never the Pixel Data),
        or None when the store does not hold it.

        Raises ServiceUnavailable when the store cannot be asked."""


class OrthancNotFound(LookupError):
    """Orthanc answered 404 for a resource (e.g. a study deleted meanwhile)."""


@dataclass
class OrthancClient:
    """Orthanc's REST API (a thin, synchronous client; one connection pool)."""

    url: str
    aet: str = "ORTHANC"
    dicomweb_root: str = "/dicom-web"
    timeout: float = 10.0

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=self.timeout)

    @property
    def dicomweb_url(self) -> str:
        return self.url + "/" + self.dicomweb_root.strip("/")

    def close(self) -> None:
        self._http.close()

    # -- plumbing ----------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in (1, 2):
            try:
                response = self._http.request(method, path, **kwargs)
                break
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                # Orthanc closes idle keep-alive connections (KeepAliveTimeout); a pooled
                # connection may be dead when reused.  Our requests are all idempotent.
                if attempt == 2:
                    raise errors.ServiceUnavailable(f"The image store (Orthanc at {self.url}) "
                                                    f"cannot be reached: {exc}") from exc
            except httpx.HTTPError as exc:
                raise errors.ServiceUnavailable(f"The image store (Orthanc at {self.url}) "
                                                f"cannot be reached: {exc}") from exc
        if response.status_code == 404:
            raise OrthancNotFound(path)
        if response.status_code >= 400:
            raise errors.ServiceUnavailable(f"The image store (Orthanc at {self.url}) answered "
                                            f"{response.status_code} to {method} {path}")
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params=params or None)

    def _dicomweb_path(self, path: str) -> str:
        return "/" + self.dicomweb_root.strip("/") + path

    # -- ImageStore ----------------------------------------------------------------
    def missing_instances(self, refs: Iterable[InstanceRef]) -> list[str]:
        missing = []
        for _study, _series, sop_uid in refs:
            # /tools/lookup maps a DICOM UID to Orthanc's resources of any level.
            found = self._request("POST", "/tools/lookup", content=sop_uid)
            if not any(r.get("Type") == "Instance" for r in found):
                missing.append(sop_uid)
        return missing

    def instance_metadata(self, ref: InstanceRef) -> Dataset | None:
        # PS3.18 10.4.1.1.2 WADO-RS Retrieve Instance Metadata: DICOM JSON in which bulk
        # data (Pixel Data) is only a BulkDataURI, so a SEG's frames are never downloaded.
        study, series, sop_uid = ref
        places = [(study, series)] if study and series else []
        for attempt in range(2):
            for study_uid, series_uid in places:
                try:
                    found = self._request(
                        "GET", self._dicomweb_path(f"/studies/{study_uid}/series/{series_uid}"
                                                   f"/instances/{sop_uid}/metadata"),
                        headers={"Accept": "application/dicom+json"})
                except OrthancNotFound:
                    continue
                if found:
                    return Dataset.from_json(_without_bulk_data(found[0]))
            if attempt == 0:  # the reference named no or other study/series: ask Orthanc
                located = self._locate(sop_uid)
                if located is None or located in places:
                    return None
                places = [located]
        return None

    def _locate(self, sop_uid: str) -> tuple[str, str] | None:
        """(Study, Series Instance UID) of an instance, from Orthanc's own index."""
        found = self._request("POST", "/tools/lookup", content=sop_uid)
        instance = next((r for r in found if r.get("Type") == "Instance"), None)
        if instance is None:
            return None
        try:
            parent = self.get(f"/instances/{instance['ID']}")["ParentSeries"]
            series = self.get(f"/series/{parent}")
            study = self.get(f"/studies/{series['ParentStudy']}")
        except OrthancNotFound:
            return None
        return (study["MainDicomTags"]["StudyInstanceUID"],
                series["MainDicomTags"]["SeriesInstanceUID"])

    # -- what the follower reads -------------------------------------------------------
    def changes(self, since: int, limit: int = 100) -> dict[str, Any]:
        """``GET /changes``: {"Changes": [...], "Done": bool, "Last": seq}."""
        return self.get("/changes", since=since, limit=limit)

    def study(self, orthanc_id: str) -> dict[str, Any]:
        return self.get(f"/studies/{orthanc_id}")

    def study_series(self, orthanc_id: str) -> list[dict[str, Any]]:
        return self.get(f"/studies/{orthanc_id}/series")

    def series_instances(self, orthanc_id: str) -> list[dict[str, Any]]:
        return self.get(f"/series/{orthanc_id}/instances")

    def shared_tags(self, level: str, orthanc_id: str) -> dict[str, Any]:
        """Tags with one value over every instance of a study or series, by keyword."""
        return self.get(f"/{level}/{orthanc_id}/shared-tags", simplify="")

    def studies(self) -> list[str]:
        return self.get("/studies")

    def find_study(self, study_uid: str) -> str | None:
        found = self._request("POST", "/tools/lookup", content=study_uid)
        return next((r["ID"] for r in found if r.get("Type") == "Study"), None)


class FakeImageStore:
    """In memory, for unit tests: holds a set of SOP Instance UIDs and, for those added
    with :meth:`add`, their attributes."""

    def __init__(self, uids: Iterable[str] = (), *, available: bool = True) -> None:
        self.uids = set(uids)
        self.available = available
        self.objects: dict[str, Dataset] = {}
        self.metadata_requests = 0

    def add(self, *datasets: Dataset) -> None:
        """Hold these instances (stored without Pixel Data, as metadata is served)."""
        for ds in datasets:
            kept = copy.deepcopy(ds)
            for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
                if keyword in kept:
                    delattr(kept, keyword)
            self.objects[str(ds.SOPInstanceUID)] = kept
            self.uids.add(str(ds.SOPInstanceUID))

    def _check(self) -> None:
        if not self.available:
            raise errors.ServiceUnavailable("The image store (fake) cannot be reached")

    def missing_instances(self, refs: Iterable[InstanceRef]) -> list[str]:
        self._check()
        return [sop for _study, _series, sop in refs if sop not in self.uids]

    def instance_metadata(self, ref: InstanceRef) -> Dataset | None:
        self._check()
        self.metadata_requests += 1
        ds = self.objects.get(ref[2])
        return copy.deepcopy(ds) if ds is not None else None


def _without_bulk_data(obj: dict[str, Any]) -> dict[str, Any]:
    """A DICOM JSON object without the attributes given only by BulkDataURI (PS3.18
    F.2.6): their values are not in the metadata, and an empty value would be a lie."""
    out: dict[str, Any] = {}
    for key, element in obj.items():
        if not isinstance(element, dict) or "BulkDataURI" in element:
            continue
        if element.get("vr") == "SQ" and isinstance(element.get("Value"), list):
            element = dict(element, Value=[_without_bulk_data(item) if isinstance(item, dict)
                                            else item for item in element["Value"]])
        out[key] = element
    return out


def output_references(ds: dict[str, Any]) -> list[InstanceRef]:
    """Every instance a workitem's performer reports as output (DICOM JSON workitem):
    Unified Procedure Step Performed Procedure Sequence > Output Information Sequence
    (PS3.4 Table CC.2.5-3; items are the Referenced Instances and Access Macro, PS3.3
    Table 10-3b) > Referenced SOP Sequence > Referenced SOP Instance UID."""
    from .dicomjson import first, values

    refs: list[InstanceRef] = []
    for performed in values(ds, "UnifiedProcedureStepPerformedProcedureSequence"):
        for output in values(performed, "OutputInformationSequence"):
            study, series = first(output, "StudyInstanceUID"), first(output, "SeriesInstanceUID")
            for sop in values(output, "ReferencedSOPSequence"):
                uid = first(sop, "ReferencedSOPInstanceUID")
                if uid:
                    refs.append((study, series, str(uid)))
    return refs
