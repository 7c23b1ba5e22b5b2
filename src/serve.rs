//! `foster-passport serve`: bind, print the listening line, serve until SIGINT/SIGTERM, then
//! drain in-flight requests and close the database.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;

use crate::config::ServeArgs;
use crate::interactions::{Ctx, capabilities};
use crate::search::SearchRegistry;
use crate::state::AppState;
use crate::{demo, routes, store};

/// Run the server; returns when it has shut down.
pub fn run(args: ServeArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let listener = TcpListener::bind(&args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let scheme = if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let base_url = args
        .base_url
        .clone()
        .unwrap_or_else(|| default_base_url(scheme, addr));
    let base_url = base_url.trim_end_matches('/').to_string();

    let store = store::open_with_replica(&args.db.database, args.read_database.as_deref())
        .map_err(|e| e.to_string())?;
    let search = Arc::new(SearchRegistry::load().map_err(|e| e.to_string())?);
    // Compile the profiles of `profiles/` now, not on the first write.
    crate::validate::profiles();
    let statement = capabilities::build(&base_url, &search).map_err(|e| e.to_string())?;
    let ctx = Arc::new(Ctx {
        base_url: base_url.clone(),
        search,
        capability_statement: Arc::from(statement.to_string()),
        consents: crate::access::ConsentCache::with_statewide_rules()
            .map_err(|e| e.to_string())?
            .with_inline_patients(args.consent_inline_patients),
    });
    let mut demo_help = None;
    if args.demo {
        let loaded = demo::load(store.as_ref(), &ctx)
            .map_err(|e| format!("cannot load the demo data: {e}"))?;
        tracing::info!(loaded, "demo data loaded");
        let key_dir = demo_key_dir(&args.db.database);
        demo_help = Some(
            demo::register(store.as_ref(), &key_dir, &base_url)
                .map_err(|e| format!("cannot register the demo clients: {e}"))?,
        );
    }
    let metrics = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ])
        .map_err(|e| e.to_string())?
        .install_recorder()
        .ok();
    let key = crate::auth::tokens::SigningKey::load_or_create(store.records())
        .map_err(|e| format!("cannot load the signing key: {e}"))?;
    let auth = Arc::new(crate::auth::server::AuthServer::new(
        &base_url,
        key,
        args.trust_issuer.clone(),
    ));
    let (audit, audit_writer) = crate::audit::AuditLog::start(store.clone(), ctx.clone())
        .map_err(|e| format!("cannot start the audit writer: {e}"))?;
    let state = AppState {
        audit: Arc::new(audit),
        store,
        auth,
        ctx,
        max_body_bytes: args.max_body_bytes,
        metrics,
    };
    let app = routes::app(state.clone());
    crate::subscriptions::init_cursor(state.store.as_ref())
        .map_err(|e| format!("cannot start the subscription worker: {e}"))?;
    let notifier = crate::subscriptions::start(
        state.store.clone(),
        state.ctx.clone(),
        state.audit.clone(),
        std::time::Duration::from_millis(args.subscription_interval_ms.max(10)),
    );

    let handle = axum_server::Handle::new();
    tokio::spawn(shutdown_on_signal(handle.clone()));
    let service = app.into_make_service();
    let served = if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
            .await
            .map_err(|e| format!("cannot load the TLS certificate or key: {e}"))?;
        let server = axum_server::from_tcp_rustls(listener, config).map_err(|e| e.to_string())?;
        announce(&base_url, demo_help.as_deref());
        server.handle(handle).serve(service).await
    } else {
        let server = axum_server::from_tcp(listener).map_err(|e| e.to_string())?;
        announce(&base_url, demo_help.as_deref());
        server.handle(handle).serve(service).await
    };
    served.map_err(|e| format!("server error: {e}"))?;
    notifier.abort();
    let _ = notifier.await;
    drop(state);
    // Every queued audit record is written before the database closes.
    let _ = tokio::task::spawn_blocking(move || audit_writer.join()).await;
    tracing::info!("shut down cleanly");
    Ok(())
}

fn default_base_url(scheme: &str, addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let host = if addr.is_ipv6() && !addr.ip().is_unspecified() {
        format!("[{host}]")
    } else {
        host
    };
    format!("{scheme}://{host}:{}/fhir", addr.port())
}

/// The first line on stdout, which scripts and tests wait for (then the demo's how-to).
fn announce(base_url: &str, demo_help: Option<&str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {base_url}");
    if let Some(help) = demo_help {
        let _ = writeln!(out, "{help}");
    }
    let _ = out.flush();
}

/// Where the demo's key pair goes: next to an SQLite database, else the working directory.
fn demo_key_dir(database: &str) -> std::path::PathBuf {
    database
        .strip_prefix("sqlite://")
        .and_then(|p| std::path::Path::new(p).parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(
            || std::path::PathBuf::from("."),
            std::path::Path::to_path_buf,
        )
}

async fn shutdown_on_signal(handle: axum_server::Handle<SocketAddr>) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
    handle.graceful_shutdown(Some(Duration::from_secs(30)));
}
