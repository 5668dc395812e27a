//! TLS for the ext_proc port.
//!
//! Envoy AI Gateway connects to an EPP with TLS and does not verify the
//! certificate, so by default herd-epp generates a fresh self-signed one at
//! start (as the reference EPP does with `--secure-serving`); operators who
//! want a real one pass PEM files.

use tonic::transport::{Identity, ServerTlsConfig};

use crate::config::TlsMode;

/// Why the ext_proc port's TLS identity could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen failed to make the self-signed certificate.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file of [`TlsMode::Files`] could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The certificate or key file.
        path: String,
        /// The I/O failure.
        source: std::io::Error,
    },
}

/// The server TLS config for a mode, or `None` for plaintext.
pub fn server_config(mode: &TlsMode) -> Result<Option<ServerTlsConfig>, TlsError> {
    let identity = match mode {
        TlsMode::Plaintext => return Ok(None),
        TlsMode::SelfSigned => {
            let names = vec![
                "herd-epp".to_string(),
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ];
            let ck = rcgen::generate_simple_self_signed(names)?;
            Identity::from_pem(ck.cert.pem(), ck.signing_key.serialize_pem())
        }
        TlsMode::Files { cert, key } => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|source| TlsError::Read {
                    path: p.display().to_string(),
                    source,
                })
            };
            Identity::from_pem(read(cert)?, read(key)?)
        }
    };
    Ok(Some(ServerTlsConfig::new().identity(identity)))
}
