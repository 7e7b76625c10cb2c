"""C-FIND on the UPS Pull, Watch and Query contexts (PS3.4 CC.2.8): the Worklist search.

The identifier is parsed by the core (:func:`worklist.matching.parse_identifier`) and
the search runs in the core (:meth:`WorklistService.search`); this module only turns
each match into a Pending (0xFF00) response holding the requested keys (PS3.4
C.2.2.1.2, CC.2.8.3):

* every key of the identifier is returned, zero-length when the workitem has no value;
* a sequence key with an empty item (or no item) returns the whole sequence; a sequence
  key whose item names keys returns every item restricted to those keys (recursively);
* Specific Character Set (0008,0005) is returned whenever the workitem has one, so the
  peer decodes the values as they are stored (UTF-8 once non-ASCII, see the service);
* the Transaction UID is never returned (PS3.4 CC.2.8.3): the core never stores it in
  the dataset and refuses it as a key, and it is stripped here once more.

No Query/Retrieve Level is expected; one sent anyway is ignored and not echoed.

Speed: the stored workitems are DICOM JSON text.  A response is the JSON object
restricted to the requested keys, written straight to DICOM bytes
(:mod:`dimse.encoding`; pydicom for what that does not cover, about 0.1 ms per
workitem instead of 1 ms through a pydicom Dataset) and handed to pynetdicom as raw
elements, which pydicom writes without re-encoding.  (A cache of encoded responses was
measured and dropped: it saved about 5 ms of a 50-match C-FIND that pynetdicom's
per-message cost keeps near 60 ms.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from io import BytesIO
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom.dsutils import encode

from worklist import errors
from worklist.matching import IGNORED_KEYS, parse_identifier
from worklist.service import WorklistService
from worklist.status import Status

from .decode import decode_dataset
from .encoding import encode_json
from .replies import reply

__all__ = ["FindHandler", "ReturnKeys", "return_keys", "select_keys"]

log = logging.getLogger("dimse.find")

_TX_KEY = "00081195"
_SCS_KEY = "00080005"
# Matches are fetched from the core in pages; the first is small so that a client that
# reads a few matches and sends C-CANCEL costs little.
_FIRST_PAGE = 16
_PAGE = 1000

ReturnKeys = tuple[tuple[str, str, Any], ...]
"""The requested keys as ``((tag as 8 hex digits, VR, nested keys or None), ...)``."""


def return_keys(identifier: Dataset) -> ReturnKeys:
    """The keys to return for ``identifier`` (every key but SCS / Q/R Level)."""
    keys = []
    for elem in identifier:
        if elem.tag in IGNORED_KEYS or elem.tag == 0x00081195:
            continue
        nested = None
        if elem.VR == "SQ" and elem.value and len(elem.value[0]):
            nested = return_keys(elem.value[0])
        keys.append((f"{elem.tag:08X}", _vr(elem.tag, elem.VR), nested))
    return tuple(keys)


def _vr(tag: int, sent: str) -> str:
    """The VR of a returned key: the dictionary's; for an ambiguous one ("US or SS"),
    the VR the peer sent if it is one of them, else the first."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = sent
    choices = vr.split(" or ")
    return sent if sent in choices else choices[0]


def select_keys(obj: dict[str, Any], keys: ReturnKeys) -> dict[str, Any]:
    """A stored workitem (DICOM JSON) restricted to ``keys``, with its Specific
    Character Set; keys the workitem lacks are zero-length."""
    out = _select(obj, keys)
    if _SCS_KEY in obj:
        out[_SCS_KEY] = obj[_SCS_KEY]
    return out


def _select(obj: dict[str, Any], keys: ReturnKeys) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, vr, nested in keys:
        elem = obj.get(key)
        if elem is None or key == _TX_KEY:
            out[key] = {"vr": vr}
        elif nested is not None and elem.get("vr") == "SQ":
            items = elem.get("Value") or []
            out[key] = {"vr": "SQ", "Value": [_select(item or {}, nested) for item in items]}
        else:
            out[key] = elem
    return out


class FindHandler:
    """The ``evt.EVT_C_FIND`` handler: a generator of ``(status, identifier)``."""

    def __init__(self, service: WorklistService) -> None:
        self.service = service

    def __call__(self, event: Any) -> Iterator[tuple[Any, Dataset | None]]:
        try:
            identifier = decode_dataset(lambda: event.identifier, "C-FIND Identifier",
                                        values=False)
        except errors.UPSError as exc:
            # PS3.4 C.4.1.1.4: 0xC000-0xCFFF "Unable to process".
            yield reply(Status.UNABLE_TO_PROCESS, exc.message), None
            return
        try:
            query = parse_identifier(identifier)
        except errors.UPSError as exc:
            yield reply(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, exc.message), None
            return
        keys = return_keys(identifier)
        ts = event.context.transfer_syntax
        encoding = (bool(ts.is_implicit_VR), bool(ts.is_little_endian))
        try:
            for text in self.service.iter_search(query, first_batch=_FIRST_PAGE, batch=_PAGE):
                if event.is_cancelled:
                    yield int(Status.MATCHING_TERMINATED_BY_CANCEL), None
                    return
                yield int(Status.PENDING), self.response(text, keys, encoding)
        except errors.InvalidRequest as exc:
            yield reply(Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, exc.message), None
        except errors.UPSError as exc:
            yield reply(Status.UNABLE_TO_PROCESS, exc.message), None
        except Exception as exc:
            log.exception("C-FIND failed unexpectedly")
            yield reply(Status.UNABLE_TO_PROCESS,
                        f"C-FIND failed: {type(exc).__name__}: {exc}"), None

    def response(self, text: str, keys: ReturnKeys, encoding: tuple[bool, bool]) -> Dataset:
        """The Pending identifier for one stored workitem, already encoded: pydicom
        writes its raw elements as they are."""
        ds = Dataset(_encode(text, keys, encoding))
        ds.set_original_encoding(encoding[0], encoding[1], ds._character_set)
        return ds


def _encode(text: str, keys: ReturnKeys, encoding: tuple[bool, bool]) -> dict[Any, Any]:
    """The response elements for ``text`` as pydicom raw elements."""
    obj = select_keys(json.loads(text), keys)
    implicit, little = encoding
    data = encode_json(obj, implicit) if little else None
    if data is None:  # outside the fast encoder's scope: through pydicom
        ds = Dataset.from_json(obj)
        data = encode(ds, implicit, little)
        if data is None:
            raise errors.ProcessingFailure(f"Workitem {ds.get('SOPInstanceUID', '')} cannot "
                                           "be encoded in the negotiated transfer syntax")
    return dict(read_dataset(BytesIO(data), implicit, little)._dict)
