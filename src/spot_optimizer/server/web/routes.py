"""The dashboard's routes: sign-in, pages, the HTML fragments the pages poll, and the two actions
(toggles, manual commands) — which call the same service functions as the operator API."""

from __future__ import annotations

import mimetypes
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from spot_optimizer.core.commands import CommandStatus, CommandType
from spot_optimizer.core.models import TOGGLE_NAMES, NoticeKind
from spot_optimizer.server.api.deps import get_session, get_settings, now
from spot_optimizer.server.errors import ApiError, Forbidden, NotFound
from spot_optimizer.server.services import agents as agent_service
from spot_optimizer.server.services import commands as command_service
from spot_optimizer.server.services import reports
from spot_optimizer.server.settings import ServerSettings
from spot_optimizer.server.web import auth
from spot_optimizer.server.web.detail import command_targets, timeline, workload_chart
from spot_optimizer.server.web.fleet import workload_views
from spot_optimizer.server.web.format import register_filters

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))
register_filters(templates.env)
router = APIRouter(include_in_schema=False)
LIST_LIMIT = 500

TOGGLE_HELP = {
    "auto_switching": "the engine moves the workload to better pools by itself",
    "auto_terminate": "zombies (replaced primaries) are terminated instead of left tagged",
    "manual_replica": "a hot standby replica is kept in another pool",
    "emergency_only": "the engine acts only on interruption and rebalance notices",
}


async def form_data(request: Request) -> dict[str, str]:
    """The url-encoded form of a POST (no multipart support needed)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


def signed_in(
    request: Request, session: Session = Depends(get_session), at: datetime = Depends(now)
) -> auth.WebSession:
    web = auth.read_session(request, session, at)
    if web is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(status_code=303, headers={"Location": "/login?next=" + quote(target, safe="")})
    return web


def csrf_checked(
    request: Request,
    form: dict[str, str] = Depends(form_data),
    session: Session = Depends(get_session),
    at: datetime = Depends(now),
) -> auth.WebSession:
    web = auth.read_session(request, session, at)
    if web is None:
        raise Forbidden("not signed in: sign in at /login first")
    try:
        auth.check_csrf(request, web, form.get(auth.CSRF_FIELD))
    except auth.CsrfRejected as exc:
        raise Forbidden(str(exc)) from exc
    return web


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


# --- sign-in -------------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(
    request: Request, next: str = "/", session: Session = Depends(get_session), at: datetime = Depends(now)
) -> Response:
    if auth.read_session(request, session, at) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_form(request, next, None, 200)


def _login_form(request: Request, next_url: str, error: str | None, status_code: int) -> Response:
    token = auth.new_login_csrf()
    response = _render(
        request, "login.html", {"login_csrf": token, "next": _safe_next(next_url), "error": error}, status_code
    )
    response.set_cookie(auth.LOGIN_CSRF_COOKIE, token, max_age=3600, **auth.cookie_flags(request))  # type: ignore[arg-type]
    return response


@router.post("/login")
def login(
    request: Request,
    form: dict[str, str] = Depends(form_data),
    session: Session = Depends(get_session),
    at: datetime = Depends(now),
) -> Response:
    try:
        auth.check_login_csrf(request, form.get(auth.CSRF_FIELD))
    except auth.CsrfRejected as exc:
        raise Forbidden(str(exc)) from exc
    token = auth.find_admin_token(session, form.get("token", "").strip())
    if token is None:
        return _login_form(request, form.get("next", "/"), "That admin token is not valid.", 401)
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        auth.make_cookie(request, token, at),
        max_age=int(auth.SESSION_LIFETIME.total_seconds()),
        **auth.cookie_flags(request),  # type: ignore[arg-type]
    )
    response.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, web: auth.WebSession = Depends(csrf_checked)) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


@router.get("/static/{name}")
def static(name: str) -> Response:
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise NotFound(f"no static file {name!r}")
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(path.read_bytes(), media_type=media, headers={"Cache-Control": "no-cache"})


# --- pages and their live fragments ----------------------------------------------------------------------


def _page(request: Request, web: auth.WebSession, template: str, live: str, **context: Any) -> HTMLResponse:
    base = {
        "csrf": web.csrf,
        "live_url": live,
        "flash": request.query_params.get("flash"),
        "error": request.query_params.get("error"),
        "path": request.url.path,
    }
    return _render(request, template, {**base, **context})


def _fleet(session: Session, settings: ServerSettings, at: datetime) -> dict[str, Any]:
    agent_service.mark_offline(session, settings, at)
    return {"views": workload_views(session, at), "now": at}


@router.get("/", response_class=HTMLResponse)
def fleet_page(
    request: Request,
    web: auth.WebSession = Depends(signed_in),
    session: Session = Depends(get_session),
    settings: ServerSettings = Depends(get_settings),
    at: datetime = Depends(now),
) -> HTMLResponse:
    return _page(request, web, "fleet.html", "/ui/fleet", title="Fleet", **_fleet(session, settings, at))


@router.get("/ui/fleet", response_class=HTMLResponse)
def fleet_fragment(
    request: Request,
    web: auth.WebSession = Depends(signed_in),
    session: Session = Depends(get_session),
    settings: ServerSettings = Depends(get_settings),
    at: datetime = Depends(now),
) -> HTMLResponse:
    return _render(request, "_fleet.html", {"csrf": web.csrf, **_fleet(session, settings, at)})


def _workload(session: Session, settings: ServerSettings, name: str, at: datetime) -> dict[str, Any]:
    agent_service.mark_offline(session, settings, at)
    views = workload_views(session, at, only=name)
    if not views:
        raise NotFound(f"unknown workload {name!r}")
    view = views[0]
    chart, keys = workload_chart(session, view, at)
    return {
        "view": view,
        "chart": chart,
        "timeline": timeline(session, name),
        "targets": command_targets(view, keys),
        "toggle_names": TOGGLE_NAMES,
        "toggle_help": TOGGLE_HELP,
        "now": at,
    }


@router.get("/workloads/{name}", response_class=HTMLResponse)
def workload_page(
    name: str,
    request: Request,
    web: auth.WebSession = Depends(signed_in),
    session: Session = Depends(get_session),
    settings: ServerSettings = Depends(get_settings),
    at: datetime = Depends(now),
) -> HTMLResponse:
    context = _workload(session, settings, name, at)
    live = "/ui/workloads/" + quote(name, safe="")
    return _page(request, web, "workload.html", live, title=f"Workload {name}", **context)


@router.get("/ui/workloads/{name}", response_class=HTMLResponse)
def workload_fragment(
    name: str,
    request: Request,
    web: auth.WebSession = Depends(signed_in),
    session: Session = Depends(get_session),
    settings: ServerSettings = Depends(get_settings),
    at: datetime = Depends(now),
) -> HTMLResponse:
    context = _workload(session, settings, name, at)
    return _render(request, "_workload.html", {"csrf": web.csrf, "path": f"/workloads/{name}", **context})


def _filters(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    return {n: request.query_params.get(n, "").strip() for n in names}


def _notices(session: Session, f: dict[str, str]) -> dict[str, Any]:
    rows = reports.list_notices(session, workload=f["workload"] or None, agent_id=f["agent"] or None)
    rows = [r for r in rows if not f["kind"] or r.kind == f["kind"]]
    rows.reverse()
    return {"notices": rows[:LIST_LIMIT], "filters": f}


def _options(session: Session) -> dict[str, Any]:
    return {
        "workload_names": [w.name for w in agent_service.list_workloads(session)],
        "agent_rows": agent_service.list_agents(session),
    }


@router.get("/notices", response_class=HTMLResponse)
def notices_page(
    request: Request, web: auth.WebSession = Depends(signed_in), session: Session = Depends(get_session)
) -> HTMLResponse:
    f = _filters(request, ("workload", "agent", "kind"))
    live = "/ui/notices?" + urlencode(f)
    kinds = [k.value for k in NoticeKind]
    return _page(request, web, "notices.html", live, title="Notices", kinds=kinds, **_options(session),
                 **_notices(session, f))


@router.get("/ui/notices", response_class=HTMLResponse)
def notices_fragment(
    request: Request, web: auth.WebSession = Depends(signed_in), session: Session = Depends(get_session)
) -> HTMLResponse:
    f = _filters(request, ("workload", "agent", "kind"))
    return _render(request, "_notices.html", _notices(session, f))


def _commands(session: Session, f: dict[str, str], at: datetime) -> dict[str, Any]:
    command_service.expire_due(session, at)
    rows = command_service.list_commands(
        session, agent_id=f["agent"] or None, workload=f["workload"] or None, status=f["status"] or None,
        limit=10_000,
    )
    rows = [r for r in rows if not f["kind"] or r.type == f["kind"]]
    rows.reverse()
    return {"commands": rows[:LIST_LIMIT], "filters": f}


@router.get("/commands", response_class=HTMLResponse)
def commands_page(
    request: Request,
    web: auth.WebSession = Depends(signed_in),
    session: Session = Depends(get_session),
    at: datetime = Depends(now),
) -> HTMLResponse:
    f = _filters(request, ("workload", "agent", "status", "kind"))
    live = "/ui/commands?" + urlencode(f)
    return _page(
        request, web, "commands.html", live, title="Commands",
        statuses=[s.value for s in CommandStatus], kinds=[t.value for t in CommandType],
        **_options(session), **_commands(session, f, at),
    )


@router.get("/ui/commands", response_class=HTMLResponse)
def commands_fragment(
    request: Request,
    web: auth.WebSession = Depends(signed_in),
    session: Session = Depends(get_session),
    at: datetime = Depends(now),
) -> HTMLResponse:
    f = _filters(request, ("workload", "agent", "status", "kind"))
    return _render(request, "_commands.html", _commands(session, f, at))


# --- actions: a confirmation step first, then the same service call as the operator API ------------------


def _back(form: dict[str, str], **message: str) -> RedirectResponse:
    target = _safe_next(form.get("back")).split("?")[0]
    return RedirectResponse(target + "?" + urlencode(message), status_code=303)


@router.post("/agents/{agent_id}/toggles")
def set_toggle(
    agent_id: str,
    request: Request,
    web: auth.WebSession = Depends(csrf_checked),
    form: dict[str, str] = Depends(form_data),
    session: Session = Depends(get_session),
    at: datetime = Depends(now),
) -> Response:
    name, value = form.get("name", ""), form.get("value", "")
    if name not in TOGGLE_NAMES or value not in ("on", "off"):
        return _back(form, error=f"unknown toggle {name!r} or value {value!r}")
    agent = agent_service.get_agent(session, agent_id)
    if form.get("confirmed") != "yes":
        question = f"Turn {name} {value.upper()} for agent {agent.agent_id} ({agent.instance_id})?"
        return _render(request, "confirm.html", {
            "csrf": web.csrf, "title": "Confirm toggle", "question": question,
            "detail": f"With {name} on, {TOGGLE_HELP[name]}.", "action": request.url.path,
            "fields": {"name": name, "value": value, "back": form.get("back", "/")}, "back": form.get("back", "/"),
        })
    agent_service.set_toggles(session, agent_id, {name: value == "on"}, at)
    return _back(form, flash=f"{name} is now {value} for agent {agent_id}; it reaches the agent at its next heartbeat")


COMMAND_FIELDS = ("instance_type", "az", "market", "instance_id", "old_instance_id")


@router.post("/workloads/{name}/commands")
def issue_command(
    name: str,
    request: Request,
    web: auth.WebSession = Depends(csrf_checked),
    form: dict[str, str] = Depends(form_data),
    session: Session = Depends(get_session),
    settings: ServerSettings = Depends(get_settings),
    at: datetime = Depends(now),
) -> Response:
    try:
        command_type = CommandType(form.get("type", ""))
    except ValueError:
        return _back(form, error=f"unknown command type {form.get('type')!r}")
    params: dict[str, Any] = {k: form[k] for k in COMMAND_FIELDS if form.get(k)}
    if command_type == CommandType.LAUNCH:
        params.setdefault("role", "replica")
    agent_id = form.get("agent_id", "")
    if form.get("confirmed") != "yes":
        summary = ", ".join(f"{k}={v}" for k, v in params.items())
        return _render(request, "confirm.html", {
            "csrf": web.csrf, "title": "Confirm command",
            "question": f"Send {command_type.value} ({summary}) to agent {agent_id}?",
            "detail": f"Workload {name}. The command is stored now and delivered at the agent's next heartbeat.",
            "action": request.url.path,
            "fields": {"type": command_type.value, "agent_id": agent_id, "back": form.get("back", "/"), **params},
            "back": form.get("back", "/"),
        })
    try:
        agent = agent_service.get_agent(session, agent_id)
        if agent.workload != name:
            raise Forbidden(f"agent {agent_id} belongs to workload {agent.workload!r}, not {name!r}")
        row = command_service.issue_command(
            session, agent_id=agent_id, command_type=command_type, params=params, settings=settings, now=at,
            reason="manual (dashboard)",
        )
    except ApiError as exc:
        session.rollback()
        return _back(form, error=exc.message)
    return _back(form, flash=f"command {row.command_id} ({row.type}) issued to agent {agent_id}")
