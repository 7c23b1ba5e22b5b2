// The SMART JS client (npm fhirclient@2.6.3, its browser bundle) in headless Debian Chromium,
// driven by npm playwright-core@1.65.1: a standalone launch with PKCE against a FHIR server, as a
// person would do it (the app's launch page, our login page, our approval page, the app's
// redirect page).
//
//   node smart_js.js NODE_DIR CONFIG_JSON
//
// NODE_DIR holds node_modules/{fhirclient,playwright-core}. CONFIG_JSON: {iss, clientId, scope,
// username, password, patient, otherPatient, chromium, timeoutMs} or {selfTest: true, chromium}
// (then a fake authorization server from fake_smart_server.js stands in for ours).
//
// Protocol with the test: serve the app on a free 127.0.0.1 port and print
//   {"event":"listening","origin":...,"launch_url":...,"redirect_uri":...}
// then wait for a line `go` on stdin (the test registers the client with that redirect_uri),
// run the launch, print {"event":"result","ok":...} and exit (0 when ok).
"use strict";

const fs = require("fs");
const http = require("http");
const path = require("path");
const readline = require("readline");

const [nodeDirArg, configJson] = process.argv.slice(2);
if (!nodeDirArg || !configJson) {
  console.error("usage: node smart_js.js NODE_DIR CONFIG_JSON");
  process.exit(2);
}
const nodeDir = path.resolve(nodeDirArg);
const config = JSON.parse(configJson);
const pages = path.join(__dirname, "smart_js");
const fhirClientJs = path.join(nodeDir, "node_modules/fhirclient/build/fhir-client.js");
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8" };

const report = { event: "result", ok: false, navigations: [], token: [], fhir: [], console: [], pageErrors: [], failedRequests: [] };
let browser = null;

function emit(code) {
  process.stdout.write(JSON.stringify(report) + "\n", () => process.exit(code));
}

async function fail(step, error, page) {
  report.failedStep = step;
  report.error = String((error && error.stack) || error).slice(0, 4000);
  if (page) {
    try {
      report.pageUrl = page.url();
      report.pageText = (await page.evaluate(() => (document.body ? document.body.innerText : ""))).slice(0, 3000);
      report.pageHtml = (await page.content()).slice(0, 4000);
    } catch (_) {
      // the page may be gone
    }
  }
  if (browser) await browser.close().catch(() => {});
  emit(1);
}

function serveApp(appConfig) {
  // appConfig() is read per request: the redirect URI depends on the port chosen at listen time.
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    let file = null;
    if (url.pathname === "/launch.html" || url.pathname === "/redirect.html") file = path.join(pages, url.pathname);
    if (url.pathname === "/fhir-client.js") file = fhirClientJs;
    if (url.pathname === "/config.json") {
      res.writeHead(200, { "Content-Type": "application/json", "Cache-Control": "no-store" });
      return res.end(JSON.stringify(appConfig()));
    }
    if (!file) {
      res.writeHead(404, { "Content-Type": "text/plain" });
      return res.end("not found");
    }
    fs.readFile(file, (err, data) => {
      if (err) {
        res.writeHead(500, { "Content-Type": "text/plain" });
        return res.end(String(err));
      }
      res.writeHead(200, { "Content-Type": TYPES[path.extname(file)] || "application/octet-stream", "Cache-Control": "no-store" });
      res.end(data);
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

function query(u) {
  const out = {};
  for (const [k, v] of new URL(u).searchParams) out[k] = v;
  return out;
}

async function main() {
  if (!fs.existsSync(fhirClientJs)) throw new Error(`${fhirClientJs} is missing: npm install fhirclient@2.6.3 into ${nodeDir}`);
  const { chromium } = require(path.join(nodeDir, "node_modules/playwright-core"));

  let fake = null;
  if (config.selfTest) {
    fake = await require("./fake_smart_server.js").start();
    Object.assign(config, {
      iss: fake.base,
      clientId: "self-test-app",
      scope: "launch/patient openid fhirUser patient/*.rs",
      username: fake.user.username,
      password: fake.user.password,
      patient: fake.user.patient,
      otherPatient: "someone-else",
    });
  }

  let appConfig = null;
  const appServer = await serveApp(() => appConfig);
  const origin = `http://127.0.0.1:${appServer.address().port}`;
  const redirectUri = origin + "/redirect.html";
  appConfig = {
    iss: config.iss,
    clientId: config.clientId,
    scope: config.scope,
    redirectUri,
    patient: config.patient,
    otherPatient: config.otherPatient,
  };

  process.stdout.write(JSON.stringify({ event: "listening", origin, launch_url: origin + "/launch.html", redirect_uri: redirectUri }) + "\n");
  const rl = readline.createInterface({ input: process.stdin });
  const line = await new Promise((resolve) => {
    rl.once("line", resolve);
    rl.once("close", () => resolve(null));
  });
  rl.close();
  if (line === null || line.trim() !== "go") {
    report.error = `expected \`go\` on stdin, got ${JSON.stringify(line)}`;
    return emit(1);
  }

  const timeoutMs = config.timeoutMs || 90000;
  setTimeout(() => fail("overall timeout", new Error(`no result within ${timeoutMs} ms`), null), timeoutMs).unref();

  report.chromium = config.chromium;
  browser = await chromium.launch({
    executablePath: config.chromium,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    timeout: 30000,
  });
  report.browserVersion = browser.version();
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(20000);

  const fhirBase = config.iss.replace(/\/+$/, "");
  page.on("request", (req) => {
    const u = req.url();
    if (req.isNavigationRequest() && req.frame() === page.mainFrame()) {
      report.navigations.push({ method: req.method(), url: u.split("?")[0] });
      if (/\/authorize(\?|$)/.test(u.split("#")[0]) && req.method() === "GET" && !report.authorize) {
        const q = query(u);
        report.authorize = {
          url: u.split("?")[0],
          params: Object.fromEntries(Object.entries(q).map(([k, v]) => [k, k === "code_challenge" || k === "state" ? `<${v.length} chars>` : v])),
          paramNames: Object.keys(q).sort(),
        };
      }
    }
    if (req.method() === "POST" && report.tokenUri === undefined && /\/token$/.test(u.split("?")[0]) && !u.startsWith(origin)) {
      report.tokenUri = u;
    }
  });
  page.on("requestfinished", async (req) => {
    const u = req.url();
    const resp = await req.response().catch(() => null);
    const headers = resp ? await resp.allHeaders().catch(() => ({})) : {};
    if (req.method() === "POST" && u === report.tokenUri) {
      const form = new URLSearchParams(req.postData() || "");
      report.token.push({
        url: u,
        status: resp && resp.status(),
        paramNames: [...form.keys()].sort(),
        grant_type: form.get("grant_type"),
        client_id: form.get("client_id"),
        code_verifier_length: (form.get("code_verifier") || "").length,
        allowOrigin: headers["access-control-allow-origin"] || null,
        cacheControl: headers["cache-control"] || null,
      });
    } else if (u.startsWith(fhirBase + "/")) {
      const h = req.headers();
      report.fhir.push({
        method: req.method(),
        path: u.slice(fhirBase.length),
        status: resp && resp.status(),
        bearer: typeof h.authorization === "string" && h.authorization.startsWith("Bearer "),
        allowOrigin: headers["access-control-allow-origin"] || null,
      });
    }
  });
  page.on("requestfailed", (req) => report.failedRequests.push({ method: req.method(), url: req.url().split("?")[0], failure: req.failure() && req.failure().errorText }));
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning") report.console.push(`${msg.type()}: ${msg.text()}`.slice(0, 1000));
  });
  page.on("pageerror", (err) => report.pageErrors.push(String(err).slice(0, 1000)));

  let step = "open the app's launch page";
  try {
    await page.goto(origin + "/launch.html");
    step = "wait for the login page (input[name=username])";
    await page.waitForSelector("input[name=username], body[data-error]", { state: "attached" });
    const launchError = await page.evaluate(() => (document.body && document.body.dataset.error) || null);
    if (launchError) throw new Error(`FHIR.oauth2.authorize failed: ${launchError}`);
    report.loginPage = page.url().split("?")[0];
    step = "fill the login form";
    await page.fill("input[name=username]", config.username);
    await page.fill("input[name=password]", config.password);
    step = "click #login and wait for the approval page (#approve)";
    await Promise.all([page.waitForNavigation({ waitUntil: "domcontentloaded" }), page.click("#login")]);
    await page.waitForSelector("#approve", { state: "attached" });
    const patientChoices = await page.evaluate(() => {
      const s = document.querySelector("select#patient");
      return s ? [...s.options].map((o) => o.value) : null;
    });
    report.patientChoices = patientChoices;
    if (patientChoices) {
      step = "pick the patient in select#patient";
      const want = patientChoices.find((v) => v === config.patient || v.endsWith("/" + config.patient));
      if (!want) throw new Error(`select#patient offers ${JSON.stringify(patientChoices)}, not ${config.patient}`);
      await page.selectOption("select#patient", want);
    }
    step = "click #approve and wait for the app's redirect page to finish (#result[data-done])";
    await page.click("#approve");
    await page.waitForSelector("#result[data-done]", { state: "attached", timeout: 30000 });
    report.finalUrl = page.url().split("?")[0];
    report.app = JSON.parse(await page.textContent("#result"));
  } catch (e) {
    return fail(step, e, page);
  }
  if (fake) report.fakeSeen = { token: fake.seen.token, fhir: fake.seen.fhir };
  await browser.close();
  report.ok = report.app && report.app.ok === true;
  emit(report.ok ? 0 : 1);
}

main().catch((e) => fail("setup", e, null));
