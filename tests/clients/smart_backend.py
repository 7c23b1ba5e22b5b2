"""SMART Backend Services (client_credentials + private_key_jwt) done by the SMART Python client
(PyPI fhirclient==4.4.0) with an assertion signed by PyJWT.

fhirclient 4.4.0 supports this through its `jwt_token` setting: a ready-made client assertion it
sends as `client_assertion` (with `client_assertion_type=...jwt-bearer`,
`grant_type=client_credentials`, `scope`) to the token endpoint it found in the
CapabilityStatement's `oauth-uris` extension, when `FHIRClient.authorize()` is called after
`prepare()`. The assertion is static, so a fresh one (new `jti`) is built per token request.

fhirclient prepends `launch/patient` to the scope unless told it does not want a patient
(`wants_patient = False`), which a backend app sets.

Prints one JSON report line on stdout; exits 1 when a required step failed.
"""

import argparse
import time
import uuid

import jwt
import requests
from fhirclient import client as fhir_client
from fhirclient.models.patient import Patient

from smart_common import HTTP_TIMEOUT, attempt, describe, http_status, run_main, spy_token_endpoint

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--api-base", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--key", required=True, help="PKCS#8 private key PEM (from `keygen`)")
    p.add_argument("--kid", required=True)
    p.add_argument("--alg", required=True, choices=["RS384", "ES384"])
    p.add_argument("--scope", required=True)
    p.add_argument("--patient", required=True, help="id of a Patient to read and search for")
    return p.parse_args()


def assertion(a, key_pem, audience, lifetime=300):
    """The SMART client assertion: header {alg, kid, typ: JWT}; claims {iss, sub, aud, exp, jti},
    as Inferno builds it (exp = now + 300 s, no iat)."""
    claims = {
        "iss": a.client_id,
        "sub": a.client_id,
        "aud": audience,
        "exp": int(time.time()) + lifetime,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key_pem, algorithm=a.alg, headers={"kid": a.kid, "typ": "JWT"})


def new_client(a, jwt_token):
    settings = {"app_id": a.client_id, "api_base": a.api_base, "scope": a.scope, "jwt_token": jwt_token}
    smart = fhir_client.FHIRClient(settings=settings, save_func=lambda state: None)
    smart.wants_patient = False
    return smart


def run(report, a):
    with open(a.key, "rb") as f:
        key_pem = f.read()

    # 1. Discovery: the token endpoint from .well-known (what the backend-services spec names)
    #    and the one fhirclient finds in the CapabilityStatement; they must agree.
    conf = requests.get(
        a.api_base.rstrip("/") + "/.well-known/smart-configuration",
        headers={"Accept": "application/json"},
        timeout=HTTP_TIMEOUT,
    )
    conf.raise_for_status()
    well_known = conf.json()
    token_endpoint = well_known["token_endpoint"]
    report["well_known"] = {
        k: well_known.get(k)
        for k in (
            "token_endpoint",
            "grant_types_supported",
            "token_endpoint_auth_methods_supported",
            "token_endpoint_auth_signing_alg_values_supported",
        )
    }

    smart = new_client(a, assertion(a, key_pem, token_endpoint))
    token_log = []
    report["token_requests"] = token_log
    spy_token_endpoint(smart, token_log)
    smart.prepare()  # GET metadata, parsed strictly as an R4 CapabilityStatement
    auth = smart.server.auth
    report["discovered"] = {"auth_type": auth.auth_type, "token_uri": getattr(auth, "_token_uri", None)}
    if auth.auth_type != "oauth2":
        raise Exception(
            "fhirclient found no OAuth endpoints in the CapabilityStatement "
            "(rest[0].security.extension oauth-uris with `token`)"
        )
    if auth._token_uri != token_endpoint:
        raise Exception(
            f"CapabilityStatement oauth-uris token {auth._token_uri!r} differs from "
            f".well-known token_endpoint {token_endpoint!r}"
        )
    report["requested_scope"] = smart.desired_scope

    # 2. Token request by fhirclient.
    smart.authorize()
    context = dict(smart.launch_context or {})
    report["token"] = context
    report["expires_in_s"] = (
        round((auth.expires_at.timestamp() - time.time())) if auth.expires_at else None
    )
    report["has_refresh_token"] = auth.refresh_token is not None
    server = smart.server

    # 3. Read and search through fhirclient's models.
    attempt(report, "read_patient", lambda: Patient.read(a.patient, server).as_json())
    attempt(
        report,
        "search_patient",
        lambda: [p.id for p in Patient.where(struct={"_id": a.patient}).perform_resources_iter(server)],
    )

    # 4. The same assertion again (same jti): the server SHALL reject a replayed jti.
    replay = new_client(a, smart.jwt_token)
    replay.prepare()
    try:
        replay.authorize()
        report["replay"] = {"rejected": False}
    except Exception as e:  # noqa: BLE001
        d = describe(e)
        report["replay"] = {"rejected": True, "status": http_status(e), "error": d["message"], "response": d.get("response")}

    # 5. A fresh assertion works again (the replay check did not lock the client out).
    again = new_client(a, assertion(a, key_pem, token_endpoint))
    again.prepare()
    attempt(report, "second_token", lambda: bool(again.authorize() or again.server.auth.access_token))


if __name__ == "__main__":
    args = parse_args()
    run_main(lambda report: run(report, args))
