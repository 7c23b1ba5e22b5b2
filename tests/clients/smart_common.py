"""Helpers shared by the Python SMART client scripts: recording the token endpoint traffic of a
`fhirclient.client.FHIRClient`, describing failures, printing the one-line JSON report."""

import json
import sys
import time
import traceback

import requests

HTTP_TIMEOUT = 30


def response_summary(resp, limit=3000):
    if resp is None:
        return None
    text = resp.text or ""
    return {
        "status": resp.status_code,
        "url": resp.url,
        "content_type": resp.headers.get("Content-Type"),
        "www_authenticate": resp.headers.get("WWW-Authenticate"),
        "body": text if len(text) <= limit else text[:limit] + "...",
    }


def describe(exc):
    """A JSON-able description of an exception, with the HTTP response when it carries one
    (fhirclient's FHIRUnauthorizedException & co., requests.HTTPError)."""
    out = {"type": type(exc).__name__, "message": str(exc)[:3000]}
    resp = getattr(exc, "response", None)
    if isinstance(resp, requests.Response):
        out["response"] = response_summary(resp)
    for attr in ("trail", "body"):
        if getattr(exc, attr, None) is not None:
            out[attr] = getattr(exc, attr)
    out["traceback"] = traceback.format_exc(limit=8)[-4000:]
    return out


def token_shape(body):
    """The token response with secrets replaced by their presence and length."""
    if not isinstance(body, dict):
        return body
    out = {}
    for key, value in body.items():
        if key in ("access_token", "refresh_token", "id_token") and isinstance(value, str):
            out[key] = {"present": True, "length": len(value)}
        else:
            out[key] = value
    return out


def spy_token_endpoint(client, log):
    """Records every form POST fhirclient makes (token requests) without changing them: the
    parameter names and non-secret values, the status and the response body shape."""
    server = client.server
    original = server.post_as_form

    def post_as_form(url, formdata, auth=None):
        entry = {
            "url": url,
            "at": time.time(),
            "params": {
                k: (v if k in ("grant_type", "scope", "redirect_uri", "client_id", "client_assertion_type") else "<%d chars>" % len(str(v)))
                for k, v in formdata.items()
            },
            "basic_auth": auth is not None,
        }
        log.append(entry)
        try:
            res = original(url, formdata, auth)
        except requests.HTTPError as e:
            entry["response"] = response_summary(e.response)
            raise
        entry["status"] = res.status_code
        entry["cache_control"] = res.headers.get("Cache-Control")
        entry["pragma"] = res.headers.get("Pragma")
        try:
            entry["body"] = token_shape(res.json())
        except ValueError:
            entry["body"] = res.text[:2000]
        return res

    server.post_as_form = post_as_form


def attempt(out, key, fn):
    """Runs `fn`; stores {"ok": true, "value": ...} or {"ok": false, "error": ...} under `key`."""
    try:
        value = fn()
        out[key] = {"ok": True, "value": value}
        return value
    except Exception as e:  # noqa: BLE001 - everything is reported
        out[key] = {"ok": False, "error": describe(e)}
        return None


def http_status(exc):
    resp = getattr(exc, "response", None)
    return resp.status_code if isinstance(resp, requests.Response) else None


def finish(report):
    print(json.dumps(report, default=str))
    sys.stdout.flush()
    sys.exit(0 if report.get("ok") else 1)


def run_main(body):
    report = {"ok": False}
    try:
        body(report)
        report["ok"] = True
    except Exception as e:  # noqa: BLE001 - the Rust side prints the report
        report["error"] = describe(e)
    finish(report)
