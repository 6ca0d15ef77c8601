//! TLS from the agent to the target, per resource: `require` encrypts,
//! `verify-full` also checks the target's certificate against the
//! resource's CA and the host name.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::json;
use sluice_integration_tests::{datapath::DataPath, eventually};

fn make_ca(cn: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params.self_signed(&key).unwrap();
    (params, key, cert.pem())
}

/// Switches the `app` resource's upstream TLS settings.
async fn use_tls(dp: &mut DataPath, mode: &str, ca: &str) {
    let port = dp.pg.port;
    let (s, v) = dp
        .cp
        .api()
        .put(
            "/api/v1/resources/app",
            json!({"kind": "postgres", "agent": "edge", "address": format!("127.0.0.1:{port}"), "database": "app",
                   "credential": "app-db", "tls_mode": mode, "tls_ca": ca}),
        )
        .await;
    assert!(s.is_success(), "{v}");
}

#[tokio::test]
async fn verify_full_checks_the_target_certificate_against_the_resource_ca() {
    let mut dp = DataPath::start().await;
    // The target serves TLS with a certificate for 127.0.0.1 from our test CA,
    // and refuses the application role without TLS.
    let (ca_params, ca_key, ca_pem) = make_ca("target test CA");
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&server_key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let data = dp.pg.data_dir();
    std::fs::write(data.join("server.crt"), server.pem()).unwrap();
    std::fs::write(data.join("server.key"), server_key.serialize_pem()).unwrap();
    for f in ["server.crt", "server.key"] {
        std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(data.join(f))
            .status()
            .unwrap();
        std::process::Command::new("chmod")
            .args(["600"])
            .arg(data.join(f))
            .status()
            .unwrap();
    }
    dp.pg.psql("postgres", "ALTER SYSTEM SET ssl = on");
    dp.pg.prepend_hba("hostnossl all app 127.0.0.1/32 reject");
    dp.pg
        .prepend_hba("hostssl all app 127.0.0.1/32 scram-sha-256");

    // Without TLS the target now refuses the agent.
    let (ok, _, err) = dp.psql("SELECT 1");
    assert!(!ok && err.contains("could not open a session"), "{err}");

    use_tls(&mut dp, "verify-full", &ca_pem).await;
    let out = eventually(
        Duration::from_secs(15),
        "a verified TLS session to the target",
        || async {
            let (ok, out, _) = dp.psql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
            ok.then_some(out)
        },
    )
    .await;
    assert_eq!(
        out.trim(),
        "t",
        "the agent's session to the target is encrypted"
    );

    // A certificate from another CA is refused under verify-full...
    let (_, _, other_ca) = make_ca("some other CA");
    use_tls(&mut dp, "verify-full", &other_ca).await;
    let err = eventually(
        Duration::from_secs(15),
        "the wrong CA to be refused",
        || async {
            let (ok, _, err) = dp.psql("SELECT 1");
            (!ok && err.contains("TLS")).then_some(err)
        },
    )
    .await;
    assert!(err.contains("could not open a session"), "{err}");
    // ...but `require` only encrypts, as libpq's sslmode=require does.
    use_tls(&mut dp, "require", &other_ca).await;
    let out = eventually(
        Duration::from_secs(15),
        "an encrypted session under require",
        || async {
            let (ok, out, _) = dp.psql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
            ok.then_some(out)
        },
    )
    .await;
    assert_eq!(out.trim(), "t");
}

#[tokio::test]
async fn verify_full_without_a_ca_is_rejected_when_the_resource_is_saved() {
    let mut dp = DataPath::start().await;
    let (s, v) = dp
        .cp
        .api()
        .put("/api/v1/resources/app", json!({"kind": "postgres", "agent": "edge", "address": "127.0.0.1:5432", "database": "app", "tls_mode": "verify-full"}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("tls_ca"), "{v}");
}
