// A tiny stand-in for our SMART authorization server and FHIR API, shaped like the contract the
// real server follows (discovery, login page, approval page, PKCE S256 token exchange, CORS,
// patient-scoped reads). It only exists so that `smart_js.js --self-test` can prove the browser
// harness (Chromium + playwright-core + fhirclient.js) works without the real server; the real
// tests never use it.
"use strict";

const crypto = require("crypto");
const http = require("http");

const USER = { username: "youth", password: "secret", patient: "youth-1" };

function b64url(buf) {
  return Buffer.from(buf).toString("base64").replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function esc(s) {
  return String(s).replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;");
}

function hidden(params) {
  return Object.entries(params)
    .map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}">`)
    .join("\n");
}

function readBody(req) {
  return new Promise((resolve) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString()));
  });
}

function start() {
  const codes = new Map();
  const tokens = new Map();
  const seen = { authorize: [], token: [], fhir: [] };
  const server = http.createServer(async (req, res) => {
    const origin = `http://127.0.0.1:${server.address().port}`;
    const base = origin + "/fhir";
    const url = new URL(req.url, origin);
    const cors = {
      "Access-Control-Allow-Origin": req.headers.origin || "*",
      "Access-Control-Allow-Headers": "authorization, accept, content-type",
      "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
      Vary: "Origin",
    };
    const send = (status, body, type = "application/json", extra = {}) => {
      res.writeHead(status, { "Content-Type": type, ...cors, ...extra });
      res.end(typeof body === "string" ? body : JSON.stringify(body));
    };
    if (req.method === "OPTIONS") return send(204, "");

    if (url.pathname === "/fhir/.well-known/smart-configuration") {
      return send(200, {
        authorization_endpoint: origin + "/auth/authorize",
        token_endpoint: origin + "/auth/token",
        grant_types_supported: ["authorization_code"],
        code_challenge_methods_supported: ["S256"],
        capabilities: ["launch-standalone", "client-public", "context-standalone-patient", "permission-v2"],
      });
    }
    if (url.pathname === "/auth/authorize") {
      const form = req.method === "POST" ? new URLSearchParams(await readBody(req)) : url.searchParams;
      const p = Object.fromEntries(form);
      if (req.method === "GET") {
        seen.authorize.push(req.url);
        const keep = ["response_type", "client_id", "redirect_uri", "scope", "state", "aud", "code_challenge", "code_challenge_method"];
        const params = Object.fromEntries(keep.filter((k) => p[k] !== undefined).map((k) => [k, p[k]]));
        return send(
          200,
          `<!doctype html><html><body><form method="post" action="/auth/authorize">${hidden(params)}
<input name="username"><input name="password" type="password">
<button id="login" type="submit">Sign in</button></form></body></html>`,
          "text/html; charset=utf-8"
        );
      }
      if (p.username !== undefined) {
        if (p.username !== USER.username || p.password !== USER.password) {
          return send(200, "<html><body>bad credentials</body></html>", "text/html");
        }
        const request = { ...p };
        delete request.username;
        delete request.password;
        return send(
          200,
          `<!doctype html><html><body><form method="post" action="/auth/authorize">
${hidden({ request: JSON.stringify(request) })}<ul><li>${esc(p.scope)}</li></ul>
<button id="approve" name="decision" value="approve" type="submit">Allow</button>
<button id="deny" name="decision" value="deny">Deny</button></form></body></html>`,
          "text/html; charset=utf-8"
        );
      }
      const request = JSON.parse(p.request);
      const target = new URL(request.redirect_uri);
      if (p.decision !== "approve") {
        target.searchParams.set("error", "access_denied");
      } else {
        const code = b64url(crypto.randomBytes(24));
        codes.set(code, request);
        target.searchParams.set("code", code);
      }
      target.searchParams.set("state", request.state);
      res.writeHead(302, { Location: target.toString() });
      return res.end();
    }
    if (url.pathname === "/auth/token" && req.method === "POST") {
      const p = Object.fromEntries(new URLSearchParams(await readBody(req)));
      seen.token.push(Object.keys(p).sort());
      const request = codes.get(p.code);
      codes.delete(p.code);
      const challenge = p.code_verifier && b64url(crypto.createHash("sha256").update(p.code_verifier).digest());
      if (!request || request.code_challenge !== challenge || request.client_id !== p.client_id || request.redirect_uri !== p.redirect_uri) {
        return send(400, { error: "invalid_grant" });
      }
      const token = b64url(crypto.randomBytes(24));
      tokens.set(token, USER.patient);
      const claims = { iss: base, sub: USER.username, aud: p.client_id, fhirUser: `${base}/Patient/${USER.patient}` };
      const idToken = [b64url(JSON.stringify({ alg: "none" })), b64url(JSON.stringify(claims)), ""].join(".");
      return send(
        200,
        { access_token: token, token_type: "Bearer", expires_in: 3600, scope: request.scope, patient: USER.patient, id_token: idToken },
        "application/json",
        { "Cache-Control": "no-store", Pragma: "no-cache" }
      );
    }
    if (url.pathname.startsWith("/fhir/")) {
      const auth = req.headers.authorization || "";
      const patient = tokens.get(auth.replace(/^Bearer /, ""));
      seen.fhir.push({ path: url.pathname + url.search, bearer: auth.startsWith("Bearer ") });
      if (!patient) return send(401, { resourceType: "OperationOutcome", issue: [{ severity: "error", code: "login" }] }, "application/fhir+json");
      const m = url.pathname.match(/^\/fhir\/Patient\/([^/]+)$/);
      if (m) {
        if (m[1] !== patient) return send(403, { resourceType: "OperationOutcome", issue: [{ severity: "error", code: "forbidden" }] }, "application/fhir+json");
        return send(200, { resourceType: "Patient", id: patient, name: [{ family: "Fake" }] }, "application/fhir+json");
      }
      if (url.pathname === "/fhir/Observation") {
        const entry = url.searchParams.get("patient") === patient ? [{ resource: { resourceType: "Observation", id: "obs-1", status: "final", code: { text: "x" }, subject: { reference: `Patient/${patient}` } } }] : [];
        return send(200, { resourceType: "Bundle", type: "searchset", total: entry.length, entry }, "application/fhir+json");
      }
      return send(404, { resourceType: "OperationOutcome", issue: [{ severity: "error", code: "not-found" }] }, "application/fhir+json");
    }
    send(404, "not found", "text/plain");
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const origin = `http://127.0.0.1:${server.address().port}`;
      resolve({ base: origin + "/fhir", origin, seen, user: USER, close: () => server.close() });
    });
  });
}

module.exports = { start };
