"""``/api/reports``: skip-vs-plain reproductions (``landscape reproduce skip-vs-plain``) as
jobs, their numbers as JSON and their offline HTML page.

A report's id is a hash of its full recipe, so the same request is the same report: it is
computed once (its folder caches every training, surface and analysis) and then served. The
report job's ``surface_id`` is the report id (one active job per report). A report is known
while its job is active or its folder exists: the job makes the folder when it starts and
removes it when it ends without output; ``DELETE`` removes a report that no job is running.
Planning is ``api/planning/report.py``, the work ``api/runners/report.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from api.deps import QueueDep, ReadAccess, SettingsDep, WriteAccess, error_responses
from api.jobs import JobQueue
from api.planning.report import RECIPE_FILE, REPORT_FILE, plan_report
from api.runners.base import JobKind
from api.schemas.common import ID_PATTERN
from api.schemas.report import ReportCreated, ReportRequest, ReportSummary
from api.settings import Settings
from api.views import report_summary

KIND = JobKind.REPORT

router = APIRouter(prefix="/api/reports", tags=["reports"], dependencies=[ReadAccess])
ReportId = Annotated[str, PathParam(pattern=ID_PATTERN, description="report id (hex)")]

_EXAMPLES = {
    "recipe": {"summary": "the documented recipe (docs/reproduce.md)", "value": {}},
    "quick": {
        "summary": "depth 20 only, one seed, 5 epochs",
        "value": {"pairs": [["resnet20", "resnet20-noshort"]], "seeds": [0], "epochs": 5},
    },
}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _summary(folder: Path, queue: JobQueue) -> ReportSummary | None:
    recipe = _read_json(folder / RECIPE_FILE)
    if not isinstance(recipe, dict):
        return None
    report = _read_json(folder / REPORT_FILE)
    job = queue.latest_for(folder.name, KIND)
    return report_summary(folder.name, recipe, report if isinstance(report, dict) else None, job)


def _folder_or_404(settings: Settings, report_id: str) -> Path:
    folder = settings.reports_dir / report_id
    if not (folder / RECIPE_FILE).exists():
        raise HTTPException(404, f"no report with id {report_id!r}")
    return folder


@router.post(
    "",
    status_code=202,
    response_model=ReportCreated,
    dependencies=[WriteAccess],
    responses={
        200: {"model": ReportCreated, "description": "Already computed"},
        **error_responses(401, 409, 422, 429),
    },
    summary="Request a skip-vs-plain reproduction report",
)
def create_report(
    body: Annotated[ReportRequest, Body(openapi_examples=_EXAMPLES)],
    response: Response,
    settings: SettingsDep,
    queue: QueueDep,
) -> ReportCreated:
    """Queue the reproduction (202; the same recipe already queued or running is shared), or
    200 when its report exists. Every field left out is the documented recipe's value; values
    over this server's limits or budgets are 422. In the queue limits a report counts as one
    job (429 when it does not fit); its trainings, surfaces and analyses count against the
    job budgets."""
    plan = plan_report(body, settings)
    done = _summary(plan.out_dir, queue) if (plan.out_dir / REPORT_FILE).exists() else None
    if done is not None:
        response.status_code = 200
        return ReportCreated(job=done.job, report=done)
    request = body.model_dump(mode="json", exclude_none=True)
    label = "skip vs plain · " + ", ".join(f"{a}/{b}" for a, b in plan.spec["pairs"])
    job, created = queue.submit_analysis(
        KIND, plan.report_id, label, request, plan.steps, plan.to_json()
    )
    if not created and job.kind != KIND:  # pragma: no cover - report ids are never surface ids
        raise HTTPException(409, f"report {plan.report_id!r} is busy with job {job.id}")
    shown = queue.public(job)  # with its queue estimate, as GET /api/jobs/{id} has it
    summary = report_summary(plan.report_id, plan.spec, None, job).model_copy(update={"job": shown})
    return ReportCreated(job=shown, report=summary)


@router.get("", response_model=list[ReportSummary], summary="List reports, newest first")
def list_reports(settings: SettingsDep, queue: QueueDep) -> list[ReportSummary]:
    """Every report with a folder, and those whose job is queued and has not made one yet."""
    listed: list[tuple[float, ReportSummary]] = []
    for folder in settings.reports_dir.glob("*"):
        try:
            made = (folder / RECIPE_FILE).stat().st_mtime
        except OSError:  # not a report's folder, or removed meanwhile
            continue
        summary = _summary(folder, queue)
        if summary is not None:
            listed.append((made, summary))
    known = {summary.id for _, summary in listed}
    for job in queue.active_of_kind(KIND):
        if job.surface_id not in known and job.plan is not None:
            summary = report_summary(job.surface_id, job.plan["spec"], None, job)
            listed.append((job.created_at, summary))
    return [summary for _, summary in sorted(listed, key=lambda x: x[0], reverse=True)]


@router.get(
    "/{report_id}",
    response_model=dict[str, Any],
    responses=error_responses(401, 404, 422),
    summary="Every number of a report (report.json)",
)
def get_report(report_id: ReportId, settings: SettingsDep) -> Any:
    """The report's JSON (format ``landscape-reproduce/1``, docs/reproduce.md); 404 until its
    job has finished (see ``GET /api/reports`` for its progress)."""
    folder = _folder_or_404(settings, report_id)
    report = _read_json(folder / REPORT_FILE)
    if report is None:
        raise HTTPException(404, f"report {report_id!r} is not finished yet")
    return report


@router.get(
    "/{report_id}/html",
    response_class=FileResponse,
    responses={
        200: {"content": {"text/html": {}}, "description": "one self-contained offline page"},
        **error_responses(401, 404, 422),
    },
    summary="The report as one offline HTML page",
)
def report_html(report_id: ReportId, settings: SettingsDep) -> Any:
    folder = _folder_or_404(settings, report_id)
    page = folder / "report.html"
    if not page.exists():
        raise HTTPException(404, f"report {report_id!r} is not finished yet")
    return FileResponse(page, media_type="text/html")


@router.delete(
    "/{report_id}",
    status_code=204,
    dependencies=[WriteAccess],
    responses=error_responses(401, 404, 409, 422),
    summary="Delete a report and everything it computed",
)
def delete_report(report_id: ReportId, settings: SettingsDep, queue: QueueDep) -> Response:
    """Removes the report's folder (its trainings, surfaces, analyses and pages). 409 while its
    job is queued or running: cancel it first (``DELETE /api/jobs/{id}``); 404 for a report
    this server does not know."""
    job = queue.active_for(report_id)
    if job is not None:
        raise HTTPException(
            409,
            f"report {report_id!r} has job {job.id} {job.status}; cancel it first "
            f"(DELETE /api/jobs/{job.id}), then delete the report",
        )
    folder = _folder_or_404(settings, report_id)
    shutil.rmtree(folder)
    return Response(status_code=204)
