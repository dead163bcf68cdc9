"""Import: an admin uploads a members or purchases CSV, watches it go through, and downloads
the rows refused as ``row, field, reason``.

The import is ``loyalty import``'s own (loyalty.ops.importing.run_import: migrate, then
import_members or import_purchases on a connection of its own, one import at a time per
database). The CLI runs it in the foreground; here it runs as a background task of the process
that took the upload, and its progress (phase, rows done of the phase's total, kept by the
import's ``Progress`` in an ``ImportProgress``) is copied to Redis every half second, with the
outcome at the end, so the page's polling may reach any worker. The upload and the import's
report (which holds the refused rows as they were) stay in the data directory only while the
import runs: at its end the report becomes the rejections file (row, field, reason, no
contents) and both are deleted. A file that cannot be imported at all (empty, not UTF-8 text,
a wrong column) is refused on the form before anything runs."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from litestar import Response, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.params import Body, FromPath
from litestar.response import File, Redirect

from console.pages import render, staff_session
from console.services import AnyRequest, ConsoleServices, services
from console.session import check_csrf
from loyalty.access.audit import record_audit
from loyalty.access.roles import ADMINS
from loyalty.core.db import transaction
from loyalty.core.errors import InvalidInput, LoyaltyError
from loyalty.ops.import_files import ImportProgress, write_rejections
from loyalty.ops.importing import IMPORT_KINDS, ImportKind, check_import_file, run_import

log = logging.getLogger(__name__)

# The console takes files up to 20 MB (about 200,000 members or 250,000 purchases); a larger
# one is imported with ``loyalty import``, which reads any size from disk.
UPLOAD_LIMIT = 20 * 1024 * 1024
# How long an import's state and rejections are kept after it started.
KEPT_SECONDS = 86_400
REFRESH_SECONDS = 0.5
# A running import's state not refreshed for this long: its process stopped (restarted,
# killed) and the import with it.
STALE_AFTER = dt.timedelta(seconds=60)
_ID = r"[0-9a-f]{32}"

# Imports running in this process, kept referenced until they finish.
_running: set[asyncio.Task[None]] = set()


class ImportState(msgspec.Struct):
    """An import as its page shows it: stored in Redis under ``console:import:<id>``."""

    import_id: str
    kind: str
    filename: str
    started_at: dt.datetime
    updated_at: dt.datetime | None = None
    state: Literal["running", "done", "failed"] = "running"
    phase: str = "waiting"
    done: int = 0
    total: int = 0
    read: int = 0
    inserted: int = 0
    present: int = 0
    rejected: int = 0
    error: str | None = None

    @property
    def percent(self) -> int:
        if self.state == "done":
            return 100
        return min(99, self.done * 100 // self.total) if self.total else 0


@dataclass
class UploadForm:
    csrf_token: str = ""
    kind: str = ""
    file: UploadFile | None = None


def _key(import_id: str) -> str:
    return f"console:import:{import_id}"


def _folder(svc: ConsoleServices, import_id: str) -> Path:
    return svc.settings.data_path / "console-imports" / import_id


async def _save(svc: ConsoleServices, state: ImportState) -> None:
    state.updated_at = dt.datetime.now(dt.UTC)
    await svc.redis.set(_key(state.import_id), msgspec.json.encode(state), ex=KEPT_SECONDS)


async def _load(svc: ConsoleServices, import_id: str) -> ImportState | None:
    if not re.fullmatch(_ID, import_id):
        return None
    raw = await svc.redis.get(_key(import_id))
    return msgspec.json.decode(raw, type=ImportState) if raw else None


async def _run(svc: ConsoleServices, state: ImportState, kind: ImportKind, source: Path) -> None:
    """The import, its progress copied to Redis while it runs; then the rejections file."""
    folder = source.parent
    progress = ImportProgress()
    report = folder / "report.csv"
    work = asyncio.create_task(run_import(
        svc.jobs.dsn, kind, source, report=report, region=svc.settings.default_region,
        currency=svc.settings.currency, show_progress=False,
        progress=progress, tz=ZoneInfo(svc.settings.timezone),  # type: ignore[arg-type]
        dormancy_days=svc.settings.dormancy_days))
    while not work.done():
        await asyncio.wait({work}, timeout=REFRESH_SECONDS)
        state.phase, state.done, state.total = progress.phase, progress.done, progress.total
        if not work.done():
            await _save(svc, state)
    try:
        summary = work.result()
    except LoyaltyError as exc:
        state.state, state.error = "failed", exc.detail
    except Exception as exc:  # recorded for the page and logged, not swallowed
        log.exception("console import %s failed", state.import_id)
        state.state, state.error = "failed", f"{type(exc).__name__}: {exc}"[:500]
    else:
        state.state = "done"
        state.read, state.inserted = summary.read, summary.inserted
        state.present, state.rejected = summary.present, summary.rejected
        await asyncio.to_thread(write_rejections, report, folder / "rejects.csv")
    finally:
        await asyncio.to_thread(_discard, source, report)
    await _save(svc, state)


def _discard(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _store(folder: Path, content: bytes) -> Path:
    folder.mkdir(parents=True)
    source = folder / "source.csv"
    source.write_bytes(content)
    return source


def _form(request: AnyRequest, session: Any, *, status_code: int = 200,
          error: str | None = None, field: str | None = None, kind: str = "members",
          ) -> Response[str]:
    return render(request, "import.html", session=session, status_code=status_code,
                  error=error, field=field, kind=kind, kinds=IMPORT_KINDS,
                  limit_mb=UPLOAD_LIMIT // (1024 * 1024))


@get("/import")
async def import_page(request: AnyRequest) -> Response[str]:
    """The upload form: which kind of file, the file, the columns each kind takes."""
    session = await staff_session(request, ADMINS)
    return _form(request, session)


def _too_large(request: AnyRequest, _: HTTPException) -> Response[str]:
    """A file over the limit, refused before it is read: a page saying so (no form: the
    session is not read here), with the way back to the form."""
    return render(request, "import.html", status_code=413, field="file", kind="members",
                  kinds=IMPORT_KINDS, limit_mb=UPLOAD_LIMIT // (1024 * 1024),
                  error="too_large", session=None)


@post("/import", status_code=303, request_max_body_size=UPLOAD_LIMIT,
      exception_handlers={413: _too_large})
async def import_upload(
    request: AnyRequest,
    data: Annotated[UploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
) -> Response[Any]:
    """Check the file's kind and header, then start the import in the background and show
    its page; a file that cannot be imported is the form again (400) saying what to fix."""
    svc = services(request)
    session = await staff_session(request, ADMINS)
    check_csrf(request, session.csrf_token, data.csrf_token)
    kind = next((k for k in IMPORT_KINDS if k == data.kind), None)
    if kind is None:
        return _form(request, session, status_code=400, error="kind", field="kind")
    upload = data.file
    if upload is None or not upload.filename:
        return _form(request, session, status_code=400, error="no_file", field="file",
                     kind=kind)
    import_id = uuid.uuid4().hex
    folder = _folder(svc, import_id)
    source = await asyncio.to_thread(_store, folder, await upload.read())
    try:
        await asyncio.to_thread(check_import_file, kind, source)
    except InvalidInput as exc:
        await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
        return render(request, "import.html", session=session, status_code=400,
                      error="bad_file", field="file", kind=kind,
                      # Said of the file as the admin named it, not of its copy here.
                      detail=exc.detail.replace(source.name, upload.filename[:200]),
                      kinds=IMPORT_KINDS, limit_mb=UPLOAD_LIMIT // (1024 * 1024))
    state = ImportState(import_id=import_id, kind=kind, filename=upload.filename[:200],
                        started_at=dt.datetime.now(dt.UTC))
    await _save(svc, state)
    async with transaction(svc.pool) as conn:
        await record_audit(conn, actor_kind="staff", actor_id=session.principal.staff_id,
                           action="import.start", subject_kind="import", subject_id=None,
                           details={"import": import_id, "kind": kind,
                                    "file": state.filename, "via": "console"})
    task = asyncio.create_task(_run(svc, state, kind, source))
    _running.add(task)
    task.add_done_callback(_running.discard)
    return Redirect(f"/console/import/{import_id}", status_code=303)


async def _found(request: AnyRequest, import_id: str) -> ImportState | None:
    """The import's state; one whose process stopped while it ran is shown as stopped (run
    again, an import finishes what the stopped one began)."""
    state = await _load(services(request), import_id)
    if state is not None and state.state == "running" and state.updated_at is not None \
            and dt.datetime.now(dt.UTC) - state.updated_at > STALE_AFTER:
        state.state = "failed"
        state.error = "the process running it stopped before it finished"
    return state


@get("/import/{import_id:str}")
async def import_status_page(request: AnyRequest, import_id: FromPath[str]) -> Response[str]:
    """The import's page: its progress (polled while it runs), its outcome, the rejections."""
    session = await staff_session(request, ADMINS)
    state = await _found(request, import_id)
    return render(request, "import_status.html", session=session, item=state,
                  status_code=200 if state else 404)


@get("/import/{import_id:str}/progress")
async def import_progress_partial(request: AnyRequest,
                                  import_id: FromPath[str]) -> Response[str]:
    """The progress alone, for htmx: it asks again every second while the import runs."""
    session = await staff_session(request, ADMINS)
    state = await _found(request, import_id)
    return render(request, "import_progress.html", session=session, item=state,
                  status_code=200 if state else 404)


@get("/import/{import_id:str}/rejects.csv")
async def import_rejects(request: AnyRequest, import_id: FromPath[str]) -> Response[Any]:
    """The refused rows as CSV (row, field, reason), once the import is done."""
    session = await staff_session(request, ADMINS)
    state = await _found(request, import_id)
    path = _folder(services(request), import_id) / "rejects.csv"
    if state is None or state.state != "done" or not path.is_file():
        return render(request, "import_status.html", session=session, item=state,
                      status_code=404)
    return File(path, filename=f"rejects-{state.kind}-{import_id[:8]}.csv",
                media_type="text/csv; charset=utf-8")
