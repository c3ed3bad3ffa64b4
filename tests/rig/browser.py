"""Play the browser at an authorization server's own pages (the pages a real user sees after the
gateway redirected the browser there): log in and consent, confirm a device user code, confirm
a logout. Plain HTTP with a cookie session; HTML forms are read with the standard library.

    login_to_redirect(session, url, redirect_prefix, user="alice", rig_user=False) -> final URL
    confirm_device_code(verification_uri, user_code, user="alice", which="as1") -> last page
    confirm_logout(session, url) -> (status, Location or None) of the AS's logout answer
    submit_forms(session, response, fill=None) -> the response after the page's forms

as1 (oidc-provider): its default pages (devInteractions login accepting any login/password,
and the rig's `acr` select: login_to_redirect(acr=...), consent, device code input and confirm, logout confirm with xsrf). as2 (django-oauth-toolkit):
the rig logs a user in with the `X-Rig-User` header; DOT's device page is a Django form
(`user_code`, with csrftoken), its consent page an allow form, its logout page a confirm form.
Nothing here logs tokens, codes or secrets.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import requests

TIMEOUT = 15


class _Forms(HTMLParser):
    """Every <form> of a page: action, method and its named inputs' values (buttons included,
    as a browser sends the one clicked; the caller picks)."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self._current: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._current = {"action": a.get("action") or "", "method": (a.get("method") or "get").lower(),
                             "fields": {}, "buttons": {}, "id": a.get("id")}
            self.forms.append(self._current)
        elif tag in ("input", "button") and self._current is not None and a.get("name"):
            kind = (a.get("type") or ("submit" if tag == "button" else "text")).lower()
            if kind == "submit":
                self._current["buttons"][a["name"]] = a.get("value") or ""
            elif kind not in ("checkbox", "radio") or "checked" in a:
                self._current["fields"][a["name"]] = a.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


def forms(html: str) -> list[dict]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def submit(session: requests.Session, page: requests.Response, form: dict, values: dict | None = None,
           headers: dict | None = None) -> requests.Response:
    """Submit `form` of `page` (its fields plus `values`), without following redirects."""
    data = {**form["fields"], **(values or {})}
    action = urljoin(page.url, form["action"] or page.url)
    if form["method"] == "post":
        return session.post(action, data=data, headers=headers, allow_redirects=False, timeout=TIMEOUT)
    return session.get(action, params=data, headers=headers, allow_redirects=False, timeout=TIMEOUT)


def follow(session: requests.Session, r: requests.Response, stop_prefix: str | None = None,
           headers: dict | None = None, steps: int = 10) -> requests.Response | str:
    """Follow redirects by hand; returns the first URL starting with stop_prefix (not
    fetched: it is the client's), else the first non-redirect response."""
    for _ in range(steps):
        if r.status_code not in (301, 302, 303, 307, 308):
            return r
        nxt = urljoin(r.url, r.headers["location"])
        if stop_prefix and nxt.startswith(stop_prefix):
            return nxt
        r = session.get(nxt, headers=headers, allow_redirects=False, timeout=TIMEOUT)
    raise RuntimeError("too many redirects")


def _oidc_interaction(session: requests.Session, page: requests.Response, user: str,
                      acr: str | None = None) -> requests.Response:
    """One oidc-provider devInteractions page (login or consent): submit its form (the login
    with `acr` from the rig's select, when given)."""
    form = next(f for f in forms(page.text) if "prompt" in f["fields"])
    values = {"login": user, "password": "any"} if form["fields"]["prompt"] == "login" else {}
    if values and acr is not None:
        values["acr"] = acr
    return submit(session, page, form, values)


def login_to_redirect(session: requests.Session, url: str, redirect_prefix: str, user: str = "alice",
                      rig_user: bool = False, acr: str | None = None) -> str:
    """From the AS's authorization URL (the gateway's Location) to the client's redirect URI:
    as1 logs in (with `acr` chosen on its login page, when given) and consents through
    devInteractions; as2 (rig_user=True) is logged in by X-Rig-User (dot-code needs no
    consent; other DOT clients get DOT's allow form)."""
    headers = {"X-Rig-User": user} if rig_user else None
    r = session.get(url, headers=headers, allow_redirects=False, timeout=TIMEOUT)
    for _ in range(12):
        got = follow(session, r, redirect_prefix, headers)
        if isinstance(got, str):
            return got
        r = got
        if r.status_code != 200:
            raise RuntimeError(f"the AS answered {r.status_code} at {urlsplit(r.url).path}: {r.text[:300]}")
        if "/interaction/" in urlsplit(r.url).path:
            r = _oidc_interaction(session, r, user, acr)
            continue
        page_forms = [f for f in forms(r.text) if f["method"] == "post"]
        if not page_forms:
            raise RuntimeError(f"no form at {urlsplit(r.url).path}")
        form = page_forms[0]
        # DOT's consent form: "allow" button
        values = {"allow": "Authorize"} if "allow" in form["buttons"] else {}
        r = submit(session, r, form, values, headers=headers)
    raise RuntimeError("the authorization flow did not reach the redirect URI")


def confirm_device_code(verification_uri: str, user_code: str, user: str = "alice", which: str = "as1") -> requests.Response:
    """RFC 8628 §3.3: the user opens the verification URI, enters the user code, logs in and
    approves. as1 (oidc-provider): GET /device (input form with xsrf), POST the code, POST the
    confirm form, then devInteractions login + consent, ending on its success page. as2 (DOT):
    GET /o/device/ logged in by X-Rig-User, POST the code (Django form with csrf), then DOT's
    confirm form. Returns the last page (200)."""
    headers = {"X-Rig-User": user} if which == "as2" else None
    with requests.Session() as s:
        page = s.get(verification_uri, headers=headers, timeout=TIMEOUT)
        if page.status_code != 200:
            raise RuntimeError(f"the AS answered {page.status_code} at {urlsplit(page.url).path}")
        form = next(f for f in forms(page.text) if "user_code" in f["fields"])
        extra = {"Referer": page.url, **(headers or {})}
        r = submit(s, page, form, {"user_code": user_code}, headers=extra)
        for _ in range(12):
            got = follow(s, r, None, headers)
            r = got
            if r.status_code != 200:
                raise RuntimeError(f"the AS answered {r.status_code} at {urlsplit(r.url).path}: {r.text[:300]}")
            if "/interaction/" in urlsplit(r.url).path:
                r = _oidc_interaction(s, r, user)
                continue
            page_forms = [f for f in forms(r.text) if f["method"] == "post"]
            if not page_forms:
                return r  # the success page
            form = page_forms[0]
            values = {}
            if "confirm" in form["fields"] or "confirm" in form["buttons"]:
                values["confirm"] = form["fields"].get("confirm") or form["buttons"].get("confirm") or "yes"
            elif "action" in form["buttons"]:  # DOT's device confirm form: Approve / Deny
                values["action"] = "accept"
            elif "abort" in form["fields"]:  # oidc-provider's own cancel form
                continue
            r = submit(s, r, form, values, headers={"Referer": r.url, **(headers or {})})
    raise RuntimeError("the device confirmation did not finish")


def confirm_logout(session: requests.Session, url: str, headers: dict | None = None) -> tuple[int, str | None, requests.Response]:
    """RP-initiated logout at the AS: open its end-session URL (the gateway's Location), submit
    its confirm form (oidc-provider: xsrf + logout=yes; DOT: its allow button) and return the
    AS's answer: (status, Location or None, response)."""
    page = session.get(url, headers=headers, allow_redirects=False, timeout=TIMEOUT)
    page = follow(session, page, "http://127.0.0.1/", headers)
    if isinstance(page, str):  # the AS logged out without asking
        return 302, page, None  # type: ignore[return-value]
    if page.status_code != 200:  # (not raise_for_status: its message would carry the query)
        raise RuntimeError(f"the AS answered {page.status_code} at {urlsplit(page.url).path}: {page.text[:200]}")
    form = next(f for f in forms(page.text) if f["method"] == "post")
    values = {}
    if "xsrf" in form["fields"]:
        values["logout"] = "yes"
    elif "allow" in form["buttons"]:
        values["allow"] = form["buttons"]["allow"] or "Yes"
    r = submit(session, page, form, values, headers={"Referer": page.url, **(headers or {})})
    return r.status_code, r.headers.get("location"), r
