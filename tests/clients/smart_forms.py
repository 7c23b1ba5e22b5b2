"""Drives an authorization server's HTML login and approval pages the way a person's browser
would, without a browser: parse every <form>, submit all of its fields (hidden ones included)
plus the credentials or the approval decision, and stop at the 302 to the app's redirect_uri.

Used by smart_standalone.py; `python smart_forms.py --self-test` checks the walker against a
small fake authorization server built on the contract (login form -> approval form -> 302).
"""

import json
import sys
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

REDIRECT_STATUSES = (301, 302, 303, 307, 308)
HTTP_TIMEOUT = 30


class WalkError(Exception):
    """The pages did not lead to the redirect_uri; carries the trail for the report."""

    def __init__(self, message, trail, body=None):
        super().__init__(message)
        self.trail = trail
        self.body = body


class FormParser(HTMLParser):
    """Collects every form: action, method, fields (inputs, selects, textareas) and buttons."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms = []
        self._form = None
        self._select = None
        self._option = None
        self._textarea = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._form = {
                "action": a.get("action", ""),
                "method": (a.get("method") or "get").lower(),
                "id": a.get("id"),
                "inputs": [],
                "selects": [],
                "buttons": [],
            }
            self.forms.append(self._form)
            return
        if self._form is None:
            return
        if tag == "input":
            kind = (a.get("type") or "text").lower()
            entry = {
                "name": a.get("name"),
                "type": kind,
                "value": a.get("value", "on" if kind in ("checkbox", "radio") else ""),
                "checked": "checked" in a,
                "id": a.get("id"),
            }
            if kind in ("submit", "image"):
                self._form["buttons"].append(
                    {"id": a.get("id"), "name": a.get("name"), "value": a.get("value", ""), "type": "submit"}
                )
            else:
                self._form["inputs"].append(entry)
        elif tag == "button":
            self._form["buttons"].append(
                {
                    "id": a.get("id"),
                    "name": a.get("name"),
                    "value": a.get("value", ""),
                    "type": (a.get("type") or "submit").lower(),
                }
            )
        elif tag == "select":
            self._select = {"name": a.get("name"), "id": a.get("id"), "options": []}
            self._form["selects"].append(self._select)
        elif tag == "option" and self._select is not None:
            self._option = {"value": a.get("value"), "selected": "selected" in a, "text": ""}
            self._select["options"].append(self._option)
        elif tag == "textarea":
            self._textarea = {"name": a.get("name"), "type": "textarea", "value": "", "checked": False, "id": a.get("id")}
            self._form["inputs"].append(self._textarea)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
            self._option = None
        elif tag == "option":
            self._option = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._option is not None:
            self._option["text"] += data
        elif self._textarea is not None:
            self._textarea["value"] += data


def parse_forms(html):
    parser = FormParser()
    parser.feed(html)
    parser.close()
    for form in parser.forms:
        for select in form["selects"]:
            for option in select["options"]:
                if option["value"] is None:
                    option["value"] = option["text"].strip()
    return parser.forms


def option_value(select, wanted=None):
    """The option a person would leave or pick: `wanted` (an id or a `Type/id` reference) when
    offered, else the selected one, else the first."""
    options = select["options"]
    if not options:
        return None
    if wanted:
        for option in options:
            value = option["value"]
            if value == wanted or value.endswith("/" + wanted) or wanted.endswith("/" + value):
                return value
    for option in options:
        if option["selected"]:
            return option["value"]
    return options[0]["value"]


def form_data(form, overrides, button, pick=None):
    """What a browser submits: successful controls in document order, `overrides` replacing
    values by name, and the clicked button's name/value."""
    data = []
    seen = set()
    for field in form["inputs"]:
        name = field["name"]
        if not name or field["type"] in ("button", "reset", "file"):
            continue
        if field["type"] in ("checkbox", "radio") and not field["checked"]:
            continue
        value = overrides.get(name, field["value"])
        seen.add(name)
        data.append((name, value))
    for select in form["selects"]:
        name = select["name"]
        if not name:
            continue
        value = overrides.get(name, option_value(select, (pick or {}).get(name)))
        seen.add(name)
        if value is not None:
            data.append((name, value))
    for name, value in overrides.items():
        if name not in seen:
            data.append((name, value))
    if button is not None and button.get("name"):
        data.append((button["name"], button.get("value", "")))
    return data


def has_field(form, name):
    return any(f["name"] == name for f in form["inputs"])


def find_button(form, button_id, decision=None):
    for button in form["buttons"]:
        if button.get("id") == button_id:
            return button
    if decision is not None:
        for button in form["buttons"]:
            if button.get("name") == "decision" and button.get("value") == decision:
                return button
    return None


def excerpt(text, limit=3000):
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


def walk(session, authorize_url, redirect_uri, username, password, patient=None, max_steps=10):
    """GET the authorize URL, log in, approve, and return (callback URL, trail). The callback is
    the first redirect whose Location starts with `redirect_uri`; it is never requested."""
    trail = []
    resp = session.get(authorize_url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    posted = {"login": 0, "approve": 0}
    for _ in range(max_steps):
        step = {"method": resp.request.method, "url": resp.url.split("?")[0], "status": resp.status_code}
        trail.append(step)
        if resp.status_code in REDIRECT_STATUSES:
            location = resp.headers.get("Location")
            if not location:
                raise WalkError(f"{resp.status_code} without a Location header", trail, excerpt(resp.text))
            target = urljoin(resp.url, location)
            step["location"] = target.split("?")[0]
            if target.startswith(redirect_uri):
                return target, trail
            resp = session.get(target, allow_redirects=False, timeout=HTTP_TIMEOUT)
            continue
        if resp.status_code != 200:
            raise WalkError(
                f"{resp.request.method} {resp.url} answered {resp.status_code}, expected a 200 page "
                "or a redirect to the redirect_uri",
                trail,
                excerpt(resp.text),
            )
        forms = parse_forms(resp.text)
        login = next((f for f in forms if has_field(f, "username")), None)
        approval = next((f for f in forms if find_button(f, "approve", "approve") is not None), None)
        if login is not None:
            posted["login"] += 1
            if posted["login"] > 1:
                raise WalkError("the login page came back after logging in (credentials rejected?)", trail, excerpt(resp.text))
            button = find_button(login, "login") or next(iter(login["buttons"]), None)
            data = form_data(login, {"username": username, "password": password}, button)
            step["submitted"] = "login"
            form = login
        elif approval is not None:
            posted["approve"] += 1
            if posted["approve"] > 1:
                raise WalkError("the approval page came back after approving", trail, excerpt(resp.text))
            button = find_button(approval, "approve", "approve")
            pick = {"patient": patient} if patient else None
            data = form_data(approval, {}, button, pick)
            if not any(name == "decision" for name, _ in data):
                data.append(("decision", "approve"))
            step["submitted"] = "approve"
            step["fields"] = sorted({name for name, _ in data})
            step["selects"] = {s["name"]: [o["value"] for o in s["options"]] for s in approval["selects"]}
            form = approval
        else:
            raise WalkError("the page has neither a login form (input name=username) nor an approval form (#approve)", trail, excerpt(resp.text))
        action = urljoin(resp.url, form["action"] or resp.url)
        if form["method"] == "post":
            resp = session.post(action, data=data, allow_redirects=False, timeout=HTTP_TIMEOUT)
        else:
            sep = "&" if urlsplit(action).query else "?"
            resp = session.get(action.split("#")[0] + sep + urlencode(data), allow_redirects=False, timeout=HTTP_TIMEOUT)
    raise WalkError(f"no redirect to {redirect_uri} after {max_steps} pages", trail)


# ---------------------------------------------------------------------------------------------
# Self-test: a fake authorization server shaped like the contract.
# ---------------------------------------------------------------------------------------------

LOGIN_PAGE = """<!doctype html><html><head><title>Sign in</title></head><body>
<h1>Sign in</h1>
<form method="post" action="/auth/authorize">
  <input type="hidden" name="response_type" value="code">
  <input type="hidden" name="client_id" value="{client_id}">
  <input type="hidden" name="redirect_uri" value="{redirect_uri}">
  <input type="hidden" name="scope" value="{scope}">
  <input type="hidden" name="state" value="{state}">
  <input type="hidden" name="aud" value="{aud}">
  <input type="hidden" name="code_challenge" value="{challenge}">
  <input type="hidden" name="code_challenge_method" value="S256">
  <label>User <input name="username" autocomplete="username"></label>
  <label>Password <input name="password" type="password"></label>
  <input type="checkbox" name="remember">
  <button id="login" type="submit">Sign in</button>
</form></body></html>"""

APPROVAL_PAGE = """<!doctype html><html><body>
<form method="post" action="/auth/authorize">
  <input type="hidden" name="request" value="{request}">
  <ul><li>launch/patient</li><li>patient/*.rs</li></ul>
  <select id="patient" name="patient">
    <option value="Patient/sibling">Sibling</option>
    <option value="Patient/youth-1">Youth</option>
  </select>
  <textarea name="note">a &amp; b</textarea>
  <button id="approve" name="decision" value="approve" type="submit">Allow</button>
  <button id="deny" name="decision" value="deny">Deny</button>
</form></body></html>"""


def self_test():
    import http.server
    import threading

    import requests

    seen = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send_page(self, status, body, headers=()):
            raw = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            q = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            if not self.path.startswith("/auth/authorize"):
                return self.send_page(404, "nope")
            seen["authorize"] = q
            self.send_page(
                200,
                LOGIN_PAGE.format(
                    client_id=q["client_id"],
                    redirect_uri=q["redirect_uri"],
                    scope=q["scope"],
                    state=q["state"],
                    aud=q["aud"],
                    challenge=q["code_challenge"],
                ),
                [("Set-Cookie", "csrf=abc; Path=/; HttpOnly")],
            )

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
            if "username" in form:
                seen["login"] = form
                seen["login_cookie"] = self.headers.get("Cookie")
                if form["username"] != ["youth"] or form["password"] != ["secret"]:
                    return self.send_page(200, LOGIN_PAGE.format(**{k: "" for k in ("client_id", "redirect_uri", "scope", "state", "aud", "challenge")}))
                token = json.dumps({"state": form["state"][0], "redirect_uri": form["redirect_uri"][0]})
                return self.send_page(200, APPROVAL_PAGE.format(request=token.replace('"', "&quot;")))
            seen["approve"] = form
            request = json.loads(form["request"][0])
            location = request["redirect_uri"] + "?" + urlencode({"code": "c0de", "state": request["state"]})
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    redirect_uri = "http://127.0.0.1:9/callback"
    authorize = origin + "/auth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": "app",
            "redirect_uri": redirect_uri,
            "scope": "launch/patient patient/*.rs",
            "state": "st&te=1",
            "aud": origin + "/fhir",
            "code_challenge": "abc",
            "code_challenge_method": "S256",
        }
    )
    problems = []
    try:
        callback, trail = walk(requests.Session(), authorize, redirect_uri, "youth", "secret", patient="youth-1")
        got = parse_qs(urlsplit(callback).query)
        if got != {"code": ["c0de"], "state": ["st&te=1"]}:
            problems.append(f"callback query {got}")
        login = seen.get("login", {})
        for name, want in [("client_id", "app"), ("scope", "launch/patient patient/*.rs"), ("state", "st&te=1"), ("code_challenge_method", "S256"), ("password", "secret")]:
            if login.get(name) != [want]:
                problems.append(f"login form field {name}: {login.get(name)} != {want}")
        if "remember" in login:
            problems.append("an unchecked checkbox was submitted")
        if seen.get("login_cookie") != "csrf=abc":
            problems.append(f"cookie not kept: {seen.get('login_cookie')}")
        approve = seen.get("approve", {})
        if approve.get("decision") != ["approve"]:
            problems.append(f"decision {approve.get('decision')}")
        if approve.get("patient") != ["Patient/youth-1"]:
            problems.append(f"patient pick {approve.get('patient')}")
        if approve.get("note") != ["a & b"]:
            problems.append(f"textarea {approve.get('note')}")
        if [s.get("submitted") for s in trail] != ["login", "approve", None]:
            problems.append(f"trail {trail}")
        try:
            walk(requests.Session(), authorize, redirect_uri, "youth", "wrong")
            problems.append("wrong password did not fail")
        except WalkError as e:
            if "login page came back" not in str(e):
                problems.append(f"wrong password error: {e}")
    except WalkError as e:
        problems.append(f"walk failed: {e}; trail {e.trail}; body {e.body}")
    finally:
        httpd.shutdown()
    print(json.dumps({"ok": not problems, "problems": problems}))
    return 0 if not problems else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    print("usage: smart_forms.py --self-test", file=sys.stderr)
    sys.exit(2)
