"""The web console's plumbing: pages behind a session cookie, forms with CSRF tokens, HTML
from autoescaping jinja2 templates, and error pages instead of stack traces.

The session cookie holds the same kind of token the API takes as a bearer token (see
`signin`), so `auth.verify` decides for both. Console routes have no API Gateway authorizer,
because browsers send cookies, not Authorization headers: every page checks the session and
the role in code, and `Console.roles` lists them so that a test can enumerate every route.

Pages are server-rendered; the Content-Security-Policy admits scripts and styles from the
console's own static files only, so even text that escaped escaping could not run.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from chalice.app import Chalice, Request, Response

from chalicelib import auth, notices
from chalicelib.audit import AuditLog, audited, record_action
from chalicelib.config import settings
from chalicelib.errors import Forbidden, ForewarnError, NotFound, Unauthorized
from chalicelib.http import current_request, json_response, log_unexpected

log = logging.getLogger(__name__)

SESSION_COOKIE = "fw_session"
# Before sign-in there is no session to derive a CSRF token from: a random cookie stands in.
SIGNIN_COOKIE = "fw_signin"
CSRF_FIELD = "csrf"
FORM = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 64_000
SIGN_IN = "/console/sign-in"
HOME = "/console"
STATIC = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript"}

_PATH_PARAM = re.compile(r"\{([^}]+)\}")
HTML_HEADERS: dict[str, str | list[str]] = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class PageRequest:
    """What a page handler gets: who asks, and the query and form fields (strings)."""

    principal: auth.Principal
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    template: str
    context: Mapping[str, Any] = field(default_factory=dict)
    status: int = 200


@dataclass(frozen=True)
class Redirect:
    """303 to a console path (after a form, so that reloading does not post it again)."""

    path: str
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Json:
    """Data for the console's own scripts (a live count), behind the same session."""

    body: Any


Result = Page | Redirect | Json
PageHandler = Callable[..., Result]


def base_path() -> str:
    """The path prefix the console is served under (API Gateway's stage, e.g. `/api`)."""
    return urlsplit(settings().public_url).path.rstrip("/")


def url(path: str, query: Mapping[str, str] | None = None) -> str:
    suffix = f"?{urlencode(query)}" if query else ""
    return f"{base_path()}{path}{suffix}"


def local_path(value: str | None, default: str = HOME) -> str:
    """A console path to return to; anything else (another site, `//host`) is refused."""
    text = value or ""
    path = text.partition("?")[0]
    if not path.startswith("/console") or "//" in path or "\\" in text:
        return default
    return text


def csrf_token(secret: str) -> str:
    return hmac.new(secret.encode(), b"forewarn-console-csrf", hashlib.sha256).hexdigest()


def set_cookie(name: str, value: str, max_age: int) -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Lax, Secure when served over https."""
    flags = f"Path={base_path() or '/'}; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    if settings().public_url.startswith("https://"):
        flags += "; Secure"
    return f"{name}={value}; {flags}"


@functools.cache
def _environment() -> Any:
    import jinja2

    folders = [os.path.join(root, "_console") for root in notices.template_dirs()]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folders),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["url"] = url
    return env


def render(template: str, context: Mapping[str, Any]) -> str:
    return str(_environment().get_template(template).render(**context))


class Console:
    def __init__(self, app: Chalice, audit: Callable[[], AuditLog]) -> None:
        self.app = app
        self.audit = audit
        self.roles: dict[str, dict[str, tuple[str, ...]]] = {}
        # Routes anyone may reach: the sign-in page and the static files.
        self.public: set[str] = set()

    # -- registration ------------------------------------------------------------------------

    def page(
        self, path: str, *, methods: tuple[str, ...] = ("GET",), roles: tuple[str, ...]
    ) -> Callable[[PageHandler], PageHandler]:
        """A page for signed-in users of `roles`; POST pages need the form's CSRF token."""

        def register(handler: PageHandler) -> PageHandler:
            for method in methods:
                self.roles.setdefault(path, {})[method] = roles

            @functools.wraps(handler)
            def view(**params: str) -> Response:
                return self._guarded(
                    handler.__name__, lambda: self._serve(handler, path, roles, params)
                )

            self.app.route(path, methods=list(methods), content_types=_content_types(methods))(view)
            return handler

        return register

    def public_page(
        self, path: str, *, methods: tuple[str, ...] = ("GET",)
    ) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
        def register(handler: Callable[..., Response]) -> Callable[..., Response]:
            self.public.add(path)

            @functools.wraps(handler)
            def view(**params: str) -> Response:
                return self._guarded(handler.__name__, lambda: handler(**params))

            self.app.route(path, methods=list(methods), content_types=_content_types(methods))(view)
            return handler

        return register

    # -- requests ------------------------------------------------------------------------------

    @property
    def request(self) -> Request:
        return current_request(self.app)

    def cookie(self, name: str) -> str | None:
        header = self.request.headers.get("cookie") or ""
        try:
            jar = SimpleCookie(header)
        except CookieError:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel and morsel.value else None

    def path(self) -> str:
        """The path asked for: Chalice's `request.path` is the route, `{name}`s and all."""
        params = self.request.uri_params or {}
        return _PATH_PARAM.sub(
            lambda m: quote(str(params.get(m.group(1), "")), safe=""), self.request.path
        )

    def query(self) -> dict[str, str]:
        params: Mapping[str, str] = self.request.query_params or {}
        return {str(k): str(v) for k, v in params.items()}

    def form(self) -> dict[str, str]:
        raw = self.request.raw_body or b""
        if len(raw) > MAX_FORM_BYTES:
            raise FormError(f"the form is larger than {MAX_FORM_BYTES} bytes")
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=200)
        except (UnicodeDecodeError, ValueError):
            raise FormError("the form could not be read") from None
        return dict(pairs)

    def principal(self) -> tuple[auth.Principal, str]:
        token = self.cookie(SESSION_COOKIE)
        if not token:
            raise Unauthorized("sign in first")
        return auth.verify(f"Bearer {token}", settings()), token

    # -- signing in and out ------------------------------------------------------------------

    def sign_in(self, authenticate: Callable[[str, str], str]) -> Response:
        """The sign-in form (GET) and its submission (POST)."""
        request = self.request
        nonce = self.cookie(SIGNIN_COOKIE)
        back = local_path(self.query().get("next"))
        if request.method != "POST":
            return self._sign_in_form(nonce or new_signin_secret(), back, "", 200)
        form = self.form()
        back = local_path(form.get("next"))
        username = form.get("username", "")
        if not nonce or not hmac.compare_digest(form.get(CSRF_FIELD, ""), csrf_token(nonce)):
            message = "the sign-in form expired; please try again"
            return self._sign_in_form(new_signin_secret(), back, username, 400, message)
        try:
            token = authenticate(username, form.get("password", ""))
            principal = auth.verify(f"Bearer {token}", settings())
        except Unauthorized as exc:
            return self._sign_in_form(nonce, back, username, 401, exc.message)
        record_action(self.audit, principal, "sign in", {}, outcome="ok")
        from chalicelib.signin import SESSION_SECONDS

        cookies = [
            set_cookie(SESSION_COOKIE, token, SESSION_SECONDS),
            set_cookie(SIGNIN_COOKIE, "", 0),
        ]
        return redirect(url(back), cookies)

    def _sign_in_form(
        self, nonce: str, back: str, username: str, status: int, message: str = ""
    ) -> Response:
        context = {
            "title": "Sign in",
            "csrf": csrf_token(nonce),
            "next": back,
            "username": username,
            "message": message,
        }
        response = self.html("sign_in.html.j2", context, status)
        response.headers["Set-Cookie"] = set_cookie(SIGNIN_COOKIE, nonce, 1800)
        return response

    def sign_out(self) -> Response:
        token = self.cookie(SESSION_COOKIE)
        form = self.form()
        if not token or not hmac.compare_digest(form.get(CSRF_FIELD, ""), csrf_token(token)):
            return redirect(url(SIGN_IN))
        try:
            principal = auth.verify(f"Bearer {token}", settings())
        except Unauthorized:
            return redirect(url(SIGN_IN), [set_cookie(SESSION_COOKIE, "", 0)])
        record_action(self.audit, principal, "sign out", {}, outcome="ok")
        return redirect(url(SIGN_IN), [set_cookie(SESSION_COOKIE, "", 0)])

    def unsubscribe(
        self, check: Callable[[str | None], str], act: Callable[[str | None], str]
    ) -> Response:
        """A customer's unsubscribe link: GET asks (mail scanners open links), POST acts,
        also as a mail client's one-click unsubscribe (RFC 8058)."""
        token = self.query().get("t")
        done = self.request.method == "POST"
        address = act(token) if done else check(token)
        context = {"title": "Unsubscribed" if done else "Unsubscribe", "done": done}
        return self.html("unsubscribe.html.j2", {**context, "address": address, "token": token})

    def static(self, name: str) -> Response:
        content_type = STATIC.get(name)
        if content_type is None:
            raise NotFound(f"no file {name}")
        for root in notices.template_dirs():
            path = os.path.join(root, "_console", "static", name)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as handle:
                    body = handle.read()
                headers: dict[str, str | list[str]] = {
                    "Content-Type": content_type,
                    "Cache-Control": "public, max-age=300",
                }
                return Response(body=body, status_code=200, headers=headers)
        raise NotFound(f"no file {name}")

    # -- serving -------------------------------------------------------------------------------

    def _serve(
        self,
        handler: PageHandler,
        route: str,
        roles: tuple[str, ...],
        params: Mapping[str, str],
    ) -> Response:
        request = self.request
        try:
            principal, token = self.principal()
        except Unauthorized:
            return self._to_sign_in(request)
        csrf = csrf_token(token)
        context = {"principal": principal, "csrf": csrf, "nav": _nav(principal)}
        try:
            principal.require(roles)
        except Forbidden as exc:
            return self.html("error.html.j2", {**context, "title": "Not for your role"}, 403, exc)
        form: dict[str, str] = {}
        if request.method == "POST":
            form = self.form()
            if not hmac.compare_digest(form.get(CSRF_FIELD, ""), csrf):
                raise FormError("this form has expired; reload the page and try again")
        page = PageRequest(principal, local_path(self.path()), self.query(), form)
        if request.method != "POST":
            result = handler(page, **params)
        else:
            action = f"POST {route}"
            result = audited(self.audit, principal, action, params, lambda: handler(page, **params))
        if isinstance(result, Redirect):
            return redirect(url(result.path, result.query))
        if isinstance(result, Json):
            return json_response(result.body)
        return self.html(result.template, {**context, **result.context}, result.status)

    def _to_sign_in(self, request: Request) -> Response:
        query = self.query()
        here = f"{self.path()}?{urlencode(query)}" if query else self.path()
        back = local_path(here) if request.method == "GET" else HOME
        response = redirect(url(SIGN_IN, {"next": back} if back != HOME else None))
        # A stale or forged session cookie goes; a missing one stays missing.
        if self.cookie(SESSION_COOKIE):
            response.headers["Set-Cookie"] = set_cookie(SESSION_COOKIE, "", 0)
        return response

    def _guarded(self, name: str, serve: Callable[[], Response]) -> Response:
        try:
            return serve()
        except FormError as exc:
            return self.html("error.html.j2", {"title": "Form not accepted"}, 400, exc)
        except ForewarnError as exc:
            titles = {400: "Not accepted", 404: "Not found", 409: "Changed meanwhile"}
            title = titles.get(exc.status, "Not possible")
            return self.html("error.html.j2", {"title": title}, exc.status, exc)
        except Exception as exc:
            log_unexpected(name, exc)
            failure = ForewarnError("something went wrong; it is logged")
            return self.html("error.html.j2", {"title": "Something went wrong"}, 500, failure)

    def html(
        self,
        template: str,
        context: Mapping[str, Any],
        status: int = 200,
        error: Exception | None = None,
    ) -> Response:
        full = {"principal": None, "nav": [], "csrf": "", **context}
        if error is not None:
            full["message"] = getattr(error, "message", str(error))
        return Response(body=render(template, full), status_code=status, headers=dict(HTML_HEADERS))


class FormError(ForewarnError):
    status = 400
    code = "bad_form"


def _content_types(methods: tuple[str, ...]) -> list[str]:
    # Chalice takes a request without Content-Type (a browser's GET) as JSON.
    return [FORM, "application/json"] if "GET" in methods else [FORM]


def redirect(location: str, cookies: list[str] | None = None) -> Response:
    headers: dict[str, str | list[str]] = {"Location": location, "Cache-Control": "no-store"}
    if cookies:
        headers["Set-Cookie"] = cookies
    return Response(body="", status_code=303, headers=headers)


def new_signin_secret() -> str:
    return secrets.token_urlsafe(24)


_NAV = (
    ("Dashboard", HOME, (auth.OPS, auth.SOCIAL)),
    ("Flagged posts", "/console/flags", (auth.OPS, auth.SOCIAL)),
    ("New broadcast", "/console/broadcasts/new", (auth.OPS,)),
    ("Customer lookup", "/console/customers", (auth.OPS,)),
    ("Audit log", "/console/audit", (auth.OPS,)),
)


def _nav(principal: auth.Principal) -> list[tuple[str, str]]:
    admitted = (r for r in _NAV if principal.role == auth.ADMIN or principal.role in r[2])
    return [(label, path) for label, path, _ in admitted]
