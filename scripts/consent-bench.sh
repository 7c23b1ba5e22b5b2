#!/usr/bin/env bash
# The consent benchmark (issue 5): the same read and search workloads by the custodian and by a
# provider whose access every youth's privacy Consent decides, on one server and database.
#   scripts/consent-bench.sh [PATIENTS] [DATABASE_URL]
# Needs the release build (cargo build --release --bin foster-passport --bin foster-passport-bench).
# Prints the bench's tables; copy them into BENCHMARKS.md with the machine and the commit.
set -euo pipefail
cd "$(dirname "$0")/.."
patients=${1:-10000}
work=$(mktemp -d /tmp/consent-bench.XXXX)
database=${2:-sqlite://$work/bench.db}
bin=target/release/foster-passport
bench=target/release/foster-passport-bench
port=18201
base=http://127.0.0.1:$port/fhir
FP_LOG=warn $bin serve --database "$database" --listen 127.0.0.1:$port >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
trap 'exit 143' INT TERM
for _ in $(seq 1 100); do grep -q listening "$work/server.log" && break; sleep 0.1; done
grep -q listening "$work/server.log" || { cat "$work/server.log" >&2; exit 1; }
$bin keygen --alg es384 --out "$work/custodian" >/dev/null
$bin keygen --alg es384 --out "$work/provider" >/dev/null
$bin client add --database "$database" --id bench-custodian --scope 'system/*.cruds' \
  --role custodian --jwks "$work/custodian.jwks.json" >/dev/null
$bin client add --database "$database" --id bench-provider --scope 'system/*.rs' \
  --role provider --organization Organization/bench-provider --purpose TREAT \
  --jwks "$work/provider.jwks.json" >/dev/null
token() {
  $bin token --token-url "http://127.0.0.1:$port/auth/token" --client-id "bench-$1" \
    --key "$work/$1" --scope "$2"
}
run() {
  echo "### as the $1"
  FP_BENCH_TOKEN=$(token "$1" "$2") $bench --target "$base" --patients "$patients" \
    --workloads read,search-identifier,search-careteam --duration 10s --no-write-results "${@:3}" \
    | sed -n '/^| Workload/,$p'
}
# Load the record as the custodian (the bench loads before it measures), then give every youth
# a privacy Consent releasing her record to the provider's organization for treatment.
FP_BENCH_TOKEN=$(token custodian 'system/*.cruds') $bench --target "$base" --patients "$patients" \
  --workloads read --duration 1s --warmup 0s --no-write-results >/dev/null
admin=$(token custodian 'system/*.cruds')
python3 - "$base" "$admin" "$patients" <<'PY'
import json, sys, urllib.request
base, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def post(bundle):
    req = urllib.request.Request(base, data=json.dumps(bundle).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 200, r.status
entries = [{"resource": {"resourceType": "Organization", "id": "bench-provider", "name": "Bench clinic"},
            "request": {"method": "PUT", "url": "Organization/bench-provider"}}]
for i in range(n):
    pid = f"fpb-{i:06d}"
    consent = {"resourceType": "Consent", "id": f"consent-{pid}", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{pid}"},
        "provision": {"type": "permit",
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                       "reference": {"reference": "Organization/bench-provider"}}],
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]}}
    entries.append({"resource": consent, "request": {"method": "PUT", "url": f"Consent/consent-{pid}"}})
    if len(entries) >= 500:
        post({"resourceType": "Bundle", "type": "transaction", "entry": entries}); entries = []
if entries:
    post({"resourceType": "Bundle", "type": "transaction", "entry": entries})
PY
# After a bulk load PostgreSQL plans with the statistics of nearly empty tables until autovacuum
# gets to them; an operator runs ANALYZE after a bulk import, and so does the bench.
case $database in postgres*) psql "$database" -qc ANALYZE ;; esac
run custodian 'system/*.cruds' --no-load
run provider 'system/*.rs' --no-load
run custodian 'system/*.cruds' --no-load
