//! The one rustls verifier that accepts any server certificate, used in
//! exactly two deliberate places: enrollment's CA probe (which records the
//! chain and then checks it against the join token's pinned fingerprint)
//! and `tls_mode: require` towards a target (encryption without
//! authentication, as libpq's `sslmode=require`). Handshake signatures are
//! still checked, so the peer must hold the key of the certificate it shows.

use std::sync::{Arc, Mutex};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};

/// Certificates presented by a server, leaf first.
pub type Chain = Arc<Mutex<Vec<CertificateDer<'static>>>>;

#[derive(Debug)]
pub struct AcceptAnyServer {
    provider: Arc<CryptoProvider>,
    capture: Option<Chain>,
}

impl AcceptAnyServer {
    pub fn new() -> Self {
        Self {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            capture: None,
        }
    }

    /// Also records the presented chain into `chain`.
    pub fn capturing(chain: Chain) -> Self {
        Self {
            capture: Some(chain),
            ..Self::new()
        }
    }
}

impl Default for AcceptAnyServer {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(capture) = &self.capture {
            let mut chain = capture.lock().unwrap_or_else(|e| e.into_inner());
            chain.push(end_entity.clone().into_owned());
            chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
