//! `foster-passport import-eligibility` (issue 6): MEDS-style rows become each youth's Patient
//! and child welfare episodes through the aid-code table in `conformance/aid-codes.json`. A bad
//! row is refused with its line number and changes nothing while the rest are imported; a rerun
//! of the same file changes nothing; a later file extends what is there.

mod common;

use common::{Client, Server};
use serde_json::Value;

const CIN: &str = "http://foster-passport.example/fhir/sid/medi-cal-cin";
const HEADER: &str =
    "cin,family_name,given_name,birth_date,aid_code,county,eligibility_start,eligibility_end";

fn write(server: &Server, name: &str, rows: &[&str]) -> String {
    let path = server.data_dir().join(name);
    let mut text = format!("{HEADER}\n");
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn run(server: &Server, file: &str) -> (bool, String, String) {
    let out = server.cli_output(&["import-eligibility", file]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

async fn by_cin(admin: &Client, cin: &str) -> Vec<Value> {
    let resp = admin
        .get(&format!("Patient?identifier={CIN}|{cin}"))
        .await
        .expect_status(200);
    resp.body["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"].clone())
        .collect()
}

/// `(service, start, end, county, source)` of each episode.
fn episodes(patient: &Value) -> Vec<(String, String, String, String, String)> {
    patient["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("child-welfare-episode"))
        })
        .map(|e| {
            let part = |n: &str| {
                e["extension"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["url"] == n)
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            let s = |v: &Value| v.as_str().unwrap_or("").to_string();
            (
                s(&part("service")["valueCoding"]["code"]),
                s(&part("period")["valuePeriod"]["start"]),
                s(&part("period")["valuePeriod"]["end"]),
                s(&part("county")["valueCoding"]["code"]),
                s(&part("source")["valueString"]),
            )
        })
        .collect()
}

fn owned(list: &[(&str, &str, &str, &str, &str)]) -> Vec<(String, String, String, String, String)> {
    list.iter()
        .map(|(a, b, c, d, e)| {
            (
                a.to_string(),
                b.to_string(),
                c.to_string(),
                d.to_string(),
                e.to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn eligibility_rows_become_youth_and_episodes() {
    let server = Server::start();
    let admin = server.client();
    let file = write(
        &server,
        "meds-1.csv",
        &[
            "91000001A,Lopez,Ana,2012-03-04,40,19,2024-01-01,",
            "91000002B,Nguyen,Bao,2014-07-08,03,06067,2023-05-01,",
            "91000003C,Reyes,Carl,2004-01-02,4M,34,2025-02-01,",
            // Line 5 onwards: each refused for one reason, the rest still imported.
            "9100000X,Short,Cin,2012-03-04,40,19,2024-01-01,",
            "91000005E,Bad,Date,2012-13-40,40,19,2024-01-01,",
            "91000006F,Unknown,Aid,2012-03-04,ZZ,19,2024-01-01,",
            "91000007G,Bad,County,2012-03-04,40,77,2024-01-01,",
            "91000008H,Ends,Early,2012-03-04,40,19,2024-01-01,2023-01-01",
            "91000009J,Too,Few",
            "91000001A,Lopez,Ana,2011-03-04,42,19,2025-01-01,",
            "91000010K,Lee,Dana,2013-09-10,42,10,2022-02-01,2024-06-30",
        ],
    );
    let (ok, stdout, stderr) = run(&server, &file);
    assert!(!ok, "a refused row makes the exit status non-zero");
    assert!(
        stdout.contains("created 4, updated 0, unchanged 0, rejected 7"),
        "{stdout}\n{stderr}"
    );
    for (line, why) in [
        (5, "CIN"),
        (6, "birth_date"),
        (7, "aid code `ZZ`"),
        (8, "county `77`"),
        (9, "eligibility_end is before"),
        (10, "unreadable row"),
        (11, "does not match the record"),
    ] {
        assert!(
            stderr.contains(&format!("line {line}: ")) && stderr.contains(why),
            "line {line} ({why}):\n{stderr}"
        );
    }

    let ana = by_cin(&admin, "91000001A").await;
    assert_eq!(ana.len(), 1);
    assert_eq!(
        ana[0]["birthDate"], "2012-03-04",
        "the mismatching row changed nothing"
    );
    assert_eq!(ana[0]["name"][0]["family"], "Lopez");
    assert_eq!(
        episodes(&ana[0]),
        owned(&[("foster-care", "2024-01-01", "", "06037", "40")])
    );
    let bao = by_cin(&admin, "91000002B").await;
    assert_eq!(
        episodes(&bao[0]),
        owned(&[("adoption-assistance", "2023-05-01", "", "06067", "03")])
    );
    // 4M is eligibility, not a child welfare episode.
    let carl = by_cin(&admin, "91000003C").await;
    assert_eq!(carl.len(), 1);
    assert!(episodes(&carl[0]).is_empty());
    for cin in ["91000005E", "91000006F", "91000007G", "91000008H"] {
        assert!(
            by_cin(&admin, cin).await.is_empty(),
            "{cin} was refused whole"
        );
    }
    // The episodes drive the derived status.
    let in_care = admin
        .get("Patient?child-welfare-status=in-foster-care")
        .await
        .expect_status(200);
    let ids: Vec<&str> = in_care.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [ana[0]["id"].as_str().unwrap()]);

    // The same file again: nothing changes, no new versions.
    let (_, stdout, _) = run(&server, &file);
    assert!(
        stdout.contains("created 0, updated 0, unchanged 4, rejected 7"),
        "{stdout}"
    );
    let again = by_cin(&admin, "91000001A").await;
    assert_eq!(again[0]["meta"]["versionId"], ana[0]["meta"]["versionId"]);

    // A later feed ends Ana's foster care and adds a second episode; a clean file exits 0.
    let file = write(
        &server,
        "meds-2.csv",
        &[
            "91000001A,Lopez,Ana,2012-03-04,40,19,2024-01-01,2026-06-30",
            "91000001A,Lopez,Ana,2012-03-04,04,19,2026-07-01,",
            "91000002B,Nguyen,Bao,2014-07-08,03,06067,2023-05-01,",
        ],
    );
    let (ok, stdout, stderr) = run(&server, &file);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("created 0, updated 2, unchanged 1, rejected 0"),
        "{stdout}"
    );
    let ana = by_cin(&admin, "91000001A").await;
    assert_eq!(
        episodes(&ana[0]),
        owned(&[
            ("foster-care", "2024-01-01", "2026-06-30", "06037", "40"),
            ("adoption-assistance", "2026-07-01", "", "06037", "04"),
        ])
    );
    assert_eq!(ana[0]["meta"]["versionId"], "3");
}
