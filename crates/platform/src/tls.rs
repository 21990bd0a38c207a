//! TLS on a service's own listener, so the hop from the proxy (which carries tokens and
//! tasks) is encrypted too. The certificate and key come as settings, usually files:
//! `FLOWFORGE_TLS_CERT_FILE` (the chain, leaf first) and `FLOWFORGE_TLS_KEY_FILE`.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::Source;

/// A server's certificate and key, checked to belong together.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    leaf: CertificateDer<'static>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// `TLS_CERT` and `TLS_KEY` (PEM), both or neither; `None` serves plain HTTP.
    pub fn from_source(s: &mut Source) -> Option<ServerTls> {
        match (s.optional("TLS_CERT"), s.optional("TLS_KEY")) {
            (None, None) => None,
            (Some(cert), Some(key)) => match ServerTls::from_pem(cert.as_bytes(), key.as_bytes()) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    s.problem(format!("FLOWFORGE_TLS_CERT / FLOWFORGE_TLS_KEY: {e}"));
                    None
                }
            },
            _ => {
                s.problem(
                    "FLOWFORGE_TLS_CERT and FLOWFORGE_TLS_KEY (or their _FILE forms) go together: set both or neither",
                );
                None
            }
        }
    }

    /// A server configuration for HTTP/1.1 from a PEM chain and key.
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<ServerTls, String> {
        let chain = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the certificate is not PEM: {e}"))?;
        let leaf = chain.first().cloned().ok_or("no certificate in the certificate PEM")?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("the key is not a PEM private key: {e}"))?;
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("certificate and key do not make a server identity: {e}"))?;
        // The services speak HTTP/1.1 only: a client that offers h2 as well (Prometheus
        // does) must not be told it may use it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls { config: Arc::new(config), leaf })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// A client configuration that trusts exactly this server's own certificate: what a
    /// container's health probe needs to talk to the process beside it over loopback,
    /// where no host name of the certificate applies.
    pub fn own_client_config(&self) -> rustls::ClientConfig {
        let provider = rustls::crypto::ring::default_provider();
        let verifier =
            OwnCertificate { leaf: self.leaf.clone(), algorithms: provider.signature_verification_algorithms };
        rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    }
}

/// Accepts the one certificate it was given (byte for byte), with a valid handshake
/// signature from its key.
#[derive(Debug)]
struct OwnCertificate {
    leaf: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for OwnCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not this service's own certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(pairs: &[(&str, String)]) -> Source {
        Source::from_vars(pairs.iter().map(|(k, v)| (format!("FLOWFORGE_{k}"), v.clone())))
    }

    #[test]
    fn certificate_and_key_come_as_a_pair_of_valid_pem_files() {
        let files = flowforge_testkit::TlsFiles::new();
        let path = |p: &std::path::Path| p.display().to_string();
        let mut s = source(&[("TLS_CERT_FILE", path(&files.cert)), ("TLS_KEY_FILE", path(&files.key))]);
        assert!(ServerTls::from_source(&mut s).is_some());
        assert!(s.finish().is_ok());

        let mut s = source(&[("TLS_CERT_FILE", path(&files.cert))]);
        assert!(ServerTls::from_source(&mut s).is_none());
        assert!(s.finish().unwrap_err().to_string().contains("set both or neither"));

        // The CA's certificate with the server's key: they do not belong together.
        let mut s = source(&[("TLS_CERT_FILE", path(&files.ca)), ("TLS_KEY_FILE", path(&files.key))]);
        assert!(ServerTls::from_source(&mut s).is_none());
        assert!(s.finish().unwrap_err().to_string().contains("do not make a server identity"));

        let mut s = source(&[("TLS_CERT", "not pem".into()), ("TLS_KEY_FILE", path(&files.key))]);
        assert!(ServerTls::from_source(&mut s).is_none());
        assert!(s.finish().is_err());

        let mut s = source(&[]);
        assert!(ServerTls::from_source(&mut s).is_none());
        assert!(s.finish().is_ok(), "neither: plain HTTP");
    }
}
