"""Recording outcomes from the browser: one study's form, or a CSV file of many.

The CSV has a header row with the API's field names (``study_uid`` or
``accession``, optionally ``site``, ``decision``, ``birads``, ``pathology``,
``read_at``); empty cells are absent values. A file is taken whole or not at all.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from edge.hub.console.web import Visit, error_page, page, render
from edge.hub.database import utc_now
from edge.hub.outcomes import Effect, OutcomeError, parse_outcome, record_outcomes

MAX_CSV_BYTES = 20 * 1024 * 1024


async def take(visit: Visit, raw: list[Any]) -> list[Effect]:
    """Parse and record ``raw`` records as the visiting user; raises OutcomeError."""
    records = [parse_outcome(item, index) for index, item in enumerate(raw)]
    engine = visit.console.writer
    return await run_in_threadpool(record_outcomes, engine, records, visit.user.name, utc_now())


@page("reader")
async def study_outcome(visit: Visit) -> Response:
    assert visit.form is not None
    study_uid = visit.request.path_params["study_uid"]
    form = visit.form
    read_at = str(form.get("read_at") or "") or utc_now().isoformat(timespec="seconds") + "Z"
    if "T" in read_at and not read_at.endswith("Z") and "+" not in read_at:
        read_at += "Z"  # a datetime-local field sends no offset: the console works in UTC
    birads = str(form.get("birads") or "")
    raw = {"study_uid": study_uid, "decision": form.get("decision"),
           "birads": int(birads) if birads.isdigit() else None,
           "pathology": form.get("pathology") or None, "read_at": read_at}  # fmt: skip
    try:
        await take(visit, [raw])
    except OutcomeError as exc:
        return error_page(visit.request, visit.session, visit.user, 422, str(exc))
    return RedirectResponse(f"/studies/{study_uid}", status_code=303)


@page("reader")
async def upload_form(visit: Visit) -> Response:
    return render(visit.request, visit.session, visit.user, "upload.html", effects=None)


@page("reader")
async def upload(visit: Visit) -> Response:
    assert visit.form is not None
    sent = visit.form.get("file")
    if not isinstance(sent, UploadFile):
        return error_page(visit.request, visit.session, visit.user, 400, "Choose a CSV file.")
    data = await sent.read(MAX_CSV_BYTES + 1)
    try:
        effects = await take(visit, csv_records(data))
    except OutcomeError as exc:
        return render(visit.request, visit.session, visit.user, "upload.html", 422,
                      effects=None, error=str(exc))  # fmt: skip
    counts: dict[str, int] = {}
    for effect in effects:
        counts[effect.effect] = counts.get(effect.effect, 0) + 1
    return render(visit.request, visit.session, visit.user, "upload.html", effects=counts)


def csv_records(data: bytes) -> list[dict[str, Any]]:
    """The rows of an outcomes CSV as API records; raises OutcomeError."""
    if len(data) > MAX_CSV_BYTES:
        raise OutcomeError(f"the file is larger than {MAX_CSV_BYTES // 2**20} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise OutcomeError("the file is not UTF-8 text") from None
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise OutcomeError("the file has no rows under its header")
    return [_record(row, index) for index, row in enumerate(rows)]


def _record(row: dict[str, Any], index: int) -> dict[str, Any]:
    if None in row:
        raise OutcomeError(f"record {index}: more cells than the header names")
    record: dict[str, Any] = {key: (value.strip() or None) for key, value in row.items() if key}
    birads = record.get("birads")
    if birads is not None:
        if not birads.isdigit():
            raise OutcomeError(f"record {index}.birads: expected an integer 0-6")
        record["birads"] = int(birads)
    return {key: value for key, value in record.items() if value is not None or key == "pathology"}


routes = [
    Route("/studies/{study_uid}/outcome", study_outcome, methods=["POST"]),
    Route("/outcomes/upload", upload_form, methods=["GET"]),
    Route("/outcomes/upload", upload, methods=["POST"]),
]
