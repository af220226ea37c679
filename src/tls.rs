//! HTTPS for `--tls-cert`/`--tls-key`, in builds with the `tls` feature
//! (rustls, blocking, no async runtime). Without the feature, [`Acceptor`]
//! is a type with no values, so the rest of the code needs no `cfg`.

use std::net::TcpStream;

use crate::http::Stream;

/// Turns accepted TCP connections into TLS ones.
#[cfg(feature = "tls")]
pub struct Acceptor {
    config: std::sync::Arc<rustls::ServerConfig>,
}

/// Turns accepted TCP connections into TLS ones (none in this build).
#[cfg(not(feature = "tls"))]
pub enum Acceptor {}

#[cfg(feature = "tls")]
impl Acceptor {
    /// Loads a PEM certificate chain and private key; errors are sentences
    /// for the person starting the server.
    pub fn from_pem_files(
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Acceptor, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| {
                format!(
                    "cannot read a certificate from --tls-cert {}: {e}.",
                    cert.display()
                )
            })?;
        if certs.is_empty() {
            return Err(format!(
                "--tls-cert {} holds no certificate.",
                cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            format!(
                "cannot read a private key from --tls-key {}: {e}.",
                key.display()
            )
        })?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up failed: {e}."))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("the TLS certificate and key do not work together: {e}."))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Acceptor {
            config: std::sync::Arc::new(config),
        })
    }

    /// Wraps `tcp`; the handshake happens on the first read, in the worker,
    /// under the request head's deadline.
    pub fn accept(&self, tcp: TcpStream) -> Option<Stream> {
        match rustls::ServerConnection::new(self.config.clone()) {
            Ok(conn) => Some(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))),
            Err(e) => {
                log::warn!("TLS session could not start: {e}");
                None
            }
        }
    }
}

#[cfg(not(feature = "tls"))]
impl Acceptor {
    pub fn accept(&self, _tcp: TcpStream) -> Option<Stream> {
        match *self {}
    }
}
