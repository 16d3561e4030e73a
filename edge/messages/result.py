"""The result message: one ``edge.result/1`` document per study.

Its JSON Schema is ``edge/schemas/result.schema.json``, documented in
``docs/messages.md``. No message carries a patient's name, birth date or ID: a
study is named by its Study Instance UID and accession number only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from edge.types import EngineInfo, ImageScore, StudyResult

RESULT_SCHEMA = "edge.result/1"


def result_id(
    site: str, device: str, seq: int, study_uid: str, sop_uids: list[str], model_sha256: str
) -> str:
    """The id of the ``seq``-th result of ``site``/``device``: journalled with its payload,
    so that every re-delivery carries it, and never shared by two results, even of the
    same images (a second box, or a study sent again after ``journal.keep_days``)."""
    text = "\n".join([site, device, str(seq), study_uid, *sorted(sop_uids), model_sha256])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def result_message(
    result: StudyResult, *, site: str, device: str, seq: int, shadow_follows: bool = False
) -> dict[str, Any]:
    """The ``edge.result/1`` document for ``result``, the ``seq``-th of this device;
    ``shadow_follows``: its companion (:mod:`edge.messages.shadow`) will follow it."""
    sop_uids = [image.header.sop_uid for image in result.images]
    message = {
        "schema": RESULT_SCHEMA,
        "id": result_id(site, device, seq, result.study_uid, sop_uids, result.engine.sha256),
        "seq": seq,
        "site": site,
        "device": device,
        "study_uid": result.study_uid,
        "accession": result.accession,
        "model": model_object(result.engine),
        "study": {
            "score": rounded(result.score),
            "suspicious": result.suspicious,
            "threshold": result.threshold,
        },
        "breasts": {
            side: {"score": rounded(breast.score), "suspicious": breast.suspicious}
            for side, breast in sorted(result.breasts.items())
        },
        "images": [_image(image) for image in result.images],
        "missing_views": list(result.missing_views),
        "closed_by": result.closed_by,
        "timings_ms": {name: round(value, 2) for name, value in result.timings_ms.items()},
        "created_at": result.created_at,
        # the SOP Instance UID of the study's CAD SR, set when one is made (docs/dicom.md)
        "sr_uid": None,
    }
    if shadow_follows:
        message["shadow_follows"] = True
    return message


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode()


def model_object(engine: EngineInfo) -> dict[str, str]:
    return {
        "name": engine.name,
        "version": engine.version,
        "sha256": engine.sha256,
        "backend": engine.backend,
    }


def _image(image: ImageScore) -> dict[str, Any]:
    header = image.header
    return {
        "sop_uid": header.sop_uid,
        "laterality": header.laterality,
        "view": header.view,
        "screening": header.screening,
        "score": rounded(image.score),
    }


def rounded(value: float) -> float:
    return round(value, 6)
