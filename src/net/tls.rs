//! TLS without a proxy: load a PEM certificate chain and key into a rustls acceptor.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// A server-side TLS connection.
pub type Stream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// The acceptor handed to the accept loop.
pub type Acceptor = tokio_rustls::TlsAcceptor;

fn invalid(key: &str, path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{key}: {}: {why}", path.display()),
    )
}

/// Loads `cert` (PEM chain) and `key` (PEM private key); errors name the setting and the file.
pub fn load(cert: &Path, key: &Path) -> io::Result<Acceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid("tls_cert", cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("tls_cert", cert, e))?;
    if certs.is_empty() {
        return Err(invalid("tls_cert", cert, "no PEM certificate found"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            invalid("tls_key", key, "no PEM private key found")
        }
        e => invalid("tls_key", key, e),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls_cert", cert, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            invalid(
                "tls_key",
                key,
                format!("does not match the certificate or is unusable: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
