"""The image store port and its two implementations: Orthanc's REST API, and a fake.

:class:`ImageStore` is what the service layer needs of the image store: which of the
instances a performer says it produced are really there (issue 5, point 5).
:class:`OrthancClient` implements it over Orthanc's REST API and also offers what the
follower and the routing command read (``/changes``, studies, series, instances).
Both implementations raise :class:`~worklist.errors.ServiceUnavailable` when the store
cannot answer, so a caller never sees an HTTP library's exception.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from . import errors

__all__ = ["ImageStore", "InstanceRef", "OrthancClient", "FakeImageStore", "OrthancNotFound"]

InstanceRef = tuple[str | None, str | None, str]
"""(Study Instance UID, Series Instance UID, SOP Instance UID); the first two may be None."""


class ImageStore(Protocol):
    def missing_instances(self, refs: Iterable[InstanceRef]) -> list[str]:
        """The SOP Instance UIDs among ``refs`` that the store does not hold, in order.

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

    # -- ImageStore ----------------------------------------------------------------
    def missing_instances(self, refs: Iterable[InstanceRef]) -> list[str]:
        missing = []
        for _study, _series, sop_uid in refs:
            # /tools/lookup maps a DICOM UID to Orthanc's resources of any level.
            found = self._request("POST", "/tools/lookup", content=sop_uid)
            if not any(r.get("Type") == "Instance" for r in found):
                missing.append(sop_uid)
        return missing

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
    """In memory, for unit tests: holds a set of SOP Instance UIDs."""

    def __init__(self, uids: Iterable[str] = (), *, available: bool = True) -> None:
        self.uids = set(uids)
        self.available = available

    def missing_instances(self, refs: Iterable[InstanceRef]) -> list[str]:
        if not self.available:
            raise errors.ServiceUnavailable("The image store (fake) cannot be reached")
        return [sop for _study, _series, sop in refs if sop not in self.uids]


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
