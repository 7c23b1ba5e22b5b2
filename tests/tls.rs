//! HTTPS through rustls (issue 2: "With `--tls-cert FILE --tls-key FILE` it serves HTTPS through
//! rustls (and prints `https://` in the listening line)"; FHIR R4 security.html: "All exchange
//! of production data should be secured using TLS/SSL (e.g. HTTPS)").
//!
//! The certificate is generated at test time with rcgen for 127.0.0.1 and localhost; the client
//! trusts only that certificate.

mod common;

use common::Server;

fn self_signed() -> (String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("generate a self-signed certificate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_fhir_over_https_with_a_generated_certificate() {
    let (cert, key) = self_signed();
    let server = Server::builder().tls(cert, key).start();
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "listening line: {}",
        server.base
    );

    let client = server.client();
    let created = client.create(&common::patient("Secure")).await;
    let id = created["id"].as_str().unwrap();
    let read = client
        .get(&format!("Patient/{id}"))
        .await
        .expect_status(200);
    assert_eq!(read.body["name"][0]["family"], "Secure");
    assert!(
        read.header("location")
            .is_none_or(|l| l.starts_with("https://")),
        "Location over TLS"
    );
    client.get("metadata").await.expect_status(200);
    client.get("/healthz").await.expect_status(200);

    // The same port by name, checked against the certificate's DNS name.
    let by_name = common::Client::new(
        client.http.clone(),
        &server.base.replace("127.0.0.1", "localhost"),
    )
    .with_auth(client.auth.clone());
    by_name.read("Patient", id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn locations_use_https_base() {
    let (cert, key) = self_signed();
    let server = Server::builder().tls(cert, key).start();
    let client = server.client();
    let resp = client
        .post_json("Patient", &common::patient("SecureLocation"))
        .await
        .expect_status(201);
    let location = resp.header("location").expect("Location");
    assert!(
        location.starts_with(&format!("{}/Patient/", server.base)),
        "Location {location:?} should live under {}",
        server.base
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_do_not_trust_the_certificate_are_refused() {
    let (cert, key) = self_signed();
    let server = Server::builder().tls(cert, key).start();

    // Another self-signed certificate as the only root: the handshake must fail.
    let (other, _) = self_signed();
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(other.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let err = untrusting
        .get(format!("{}/metadata", server.base))
        .send()
        .await
        .expect_err("a client not trusting the certificate must not connect");
    assert!(err.is_connect() || err.is_request(), "{err:?}");

    // Plain HTTP to the TLS port gets no FHIR answer.
    let plain = reqwest::Client::new();
    let http_url = format!(
        "{}/metadata",
        server.base.replacen("https://", "http://", 1)
    );
    if let Ok(resp) = plain.get(&http_url).send().await {
        assert!(
            !resp.status().is_success(),
            "plain HTTP on the TLS port answered {}",
            resp.status()
        );
    }
}
