"""The shadow companion: one ``edge.shadow/1`` document per shadowed study.

A candidate engine scoring in shadow (:mod:`edge.engines.shadow`) never delays the
serving result: the result goes out on the serving scores alone, saying
``shadow_follows``, and this companion follows it once the shadow has scored the
study's images. It names the result it accompanies by ``result_id`` and ``seq``
(it has no seq of its own: the hub's gap detection counts results only). Its JSON
Schema is ``edge/schemas/shadow.schema.json``, documented in ``docs/messages.md``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from edge.messages.result import model_object, rounded
from edge.types import EngineInfo, ShadowResult

SHADOW_SCHEMA = "edge.shadow/1"


def shadow_message(
    shadow: ShadowResult,
    *,
    result_id: str,
    seq: int,
    site: str,
    device: str,
    study_uid: str,
    serving: EngineInfo,
) -> dict[str, Any]:
    """The companion of the result ``result_id`` (the ``seq``-th of this device)."""
    return {
        "schema": SHADOW_SCHEMA,
        "result_id": result_id,
        "seq": seq,
        "site": site,
        "device": device,
        "study_uid": study_uid,
        "model": model_object(shadow.engine),
        "serving_model": model_object(serving),
        "study": {
            "score": rounded(shadow.score),
            "suspicious": shadow.suspicious,
            "threshold": shadow.threshold,
        },
        "breasts": {
            side: {"score": rounded(breast.score), "suspicious": breast.suspicious}
            for side, breast in sorted(shadow.breasts.items())
        },
        "images": [{"sop_uid": sop, "score": rounded(score)} for sop, score in shadow.images],
        "skipped": shadow.skipped,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }
