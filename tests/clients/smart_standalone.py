"""SMART standalone patient launch with PKCE, done by the SMART Python client (PyPI
fhirclient==4.4.0), which nobody here wrote.

fhirclient discovers the OAuth endpoints from the CapabilityStatement's `oauth-uris` extension,
builds the authorize URL (PKCE S256, `aud` = api_base, `launch/patient` prepended to the scope),
and exchanges the code in `handle_callback`. This script plays the person at the browser: it GETs
the authorize URL, fills the login form, approves (smart_forms.walk), and hands the 302 Location
to fhirclient. Then it reads through fhirclient's models, which parse every answer strictly.

Prints one JSON report line on stdout; exits 1 when a required step failed (optional checks
record their own ok/error and are judged by the Rust test).
"""

import argparse
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from fhirclient import client as fhir_client
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient

from smart_common import HTTP_TIMEOUT, attempt, http_status, run_main, spy_token_endpoint, token_shape
from smart_forms import walk


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--api-base", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--redirect-uri", required=True)
    p.add_argument("--scope", required=True)
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--patient", required=True, help="id of the patient the user should get")
    p.add_argument("--other-patient", required=True, help="id of a patient that must stay unreadable")
    return p.parse_args()


def verify_id_token(api_base, client_id, id_token):
    """Checks the id_token with PyJWT against the keys the server publishes (jwks_uri of
    .well-known/smart-configuration), audience = client_id, issuer = the advertised issuer."""
    conf = requests.get(
        api_base.rstrip("/") + "/.well-known/smart-configuration", timeout=HTTP_TIMEOUT
    ).json()
    header = jwt.get_unverified_header(id_token)
    jwks = requests.get(conf["jwks_uri"], headers={"Accept": "application/json"}, timeout=HTTP_TIMEOUT).json()
    keys = [k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.public_key_use in (None, "sig")]
    kid = header.get("kid")
    matching = [k for k in keys if k.key_id == kid] if kid else keys
    if len(matching) != 1:
        raise Exception(f"id_token kid {kid!r}: {len(matching)} matching keys in {conf['jwks_uri']}")
    claims = jwt.decode(
        id_token,
        matching[0].key,
        algorithms=[header["alg"]],
        audience=client_id,
        issuer=conf.get("issuer"),
        leeway=60,
    )
    return {"header": header, "claims": claims, "issuer": conf.get("issuer"), "jwks_uri": conf["jwks_uri"]}


def run(report, a):
    saved = {}
    settings = {
        "app_id": a.client_id,
        "api_base": a.api_base,
        "redirect_uri": a.redirect_uri,
        "scope": a.scope,
    }
    smart = fhir_client.FHIRClient(settings=settings, save_func=lambda state: saved.update(state))
    token_log = []
    report["token_requests"] = token_log
    spy_token_endpoint(smart, token_log)

    # 1. Discovery (GET metadata, parsed strictly as an R4 CapabilityStatement) and the URL.
    authorize_url = smart.authorize_url
    auth = smart.server.auth
    report["discovered"] = {
        "auth_type": auth.auth_type,
        "authorize_uri": getattr(auth, "_authorize_uri", None),
        "token_uri": getattr(auth, "_token_uri", None),
    }
    if auth.auth_type != "oauth2":
        raise Exception(
            "fhirclient found no OAuth endpoints: the CapabilityStatement needs "
            "rest[0].security.extension with url "
            "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris "
            "holding `authorize` and `token` valueUri sub-extensions"
        )
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
    report["authorize_request"] = {
        "url": authorize_url.split("?")[0],
        **{k: v for k, v in query.items() if k not in ("state", "code_challenge")},
        "has_state": "state" in query,
        "has_code_challenge": "code_challenge" in query,
    }

    # 2. The person logs in and approves; the redirect is not followed.
    session = requests.Session()
    callback, trail = walk(session, authorize_url, a.redirect_uri, a.username, a.password, patient=a.patient)
    report["login_trail"] = trail
    cb = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    report["callback"] = {
        "has_code": "code" in cb,
        "state_matches": cb.get("state") == query.get("state"),
        "error": cb.get("error"),
        "error_description": cb.get("error_description"),
    }

    # 3. fhirclient exchanges the code (client_id, code, redirect_uri, state, code_verifier).
    smart.handle_callback(callback)
    context = dict(smart.launch_context or {})
    report["launch_context"] = token_shape(context)
    report["patient_id"] = smart.patient_id
    report["has_refresh_token"] = smart.server.auth.refresh_token is not None
    server = smart.server

    # 4. Reads through fhirclient's models.
    attempt(report, "read_patient", lambda: Patient.read(a.patient, server).as_json())
    attempt(report, "client_patient", lambda: smart.patient.as_json() if smart.patient else None)
    attempt(
        report,
        "search_observations",
        lambda: [
            {"id": o.id, "subject": o.subject.reference if o.subject else None}
            for o in Observation.where(struct={"patient": a.patient}).perform_resources_iter(server)
        ],
    )
    attempt(
        report,
        "search_patients",
        lambda: [p.id for p in Patient.where(struct={}).perform_resources_iter(server)],
    )
    try:
        other = Patient.read(a.other_patient, server)
        report["other_patient"] = {"denied": False, "id": other.id}
    except Exception as e:  # noqa: BLE001
        report["other_patient"] = {"denied": True, "status": http_status(e), "exception": type(e).__name__}

    # 5. The id_token (openid fhirUser), checked with PyJWT against the published keys.
    if isinstance(context.get("id_token"), str):
        attempt(report, "id_token", lambda: verify_id_token(a.api_base, a.client_id, context["id_token"]))
    else:
        report["id_token"] = {"ok": False, "error": {"message": "no id_token in the token response"}}

    # 6. Refresh (offline_access) with fhirclient's reauthorize(), then read again.
    def refresh():
        before = server.auth.access_token
        renewed = smart.reauthorize()
        after = server.auth.access_token
        patient = Patient.read(a.patient, server)
        return {
            "reauthorized": renewed,
            "new_access_token": bool(after) and after != before,
            "scope": (smart.launch_context or {}).get("scope"),
            "patient_after_refresh": patient.id,
        }

    attempt(report, "refresh", refresh)


if __name__ == "__main__":
    args = parse_args()
    run_main(lambda report: run(report, args))
