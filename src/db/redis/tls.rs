//! TLS (`rediss://`): the files of `tls_ca_file`, `tls_cert_file` and `tls_key_file`,
//! read once, for both connections: the `redis` crate's (ordinary commands, via its
//! `tls-rustls` feature) and the raw replication socket (rustls directly, since the
//! crate does not expose the SYNC payload). Without `tls_ca_file` the system's roots
//! are trusted, as the crate does. `tls_insecure` checks no certificate at all.

use super::Options;
use anyhow::{anyhow, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use std::net::TcpStream;
use std::sync::Arc;

/// PEM bytes of the configured files.
#[derive(Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    pub cert: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
    pub insecure: bool,
}

impl TlsFiles {
    pub fn read(o: &Options) -> Result<TlsFiles> {
        let read = |key: &str, p: &Option<std::path::PathBuf>| -> Result<Option<Vec<u8>>> {
            p.as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {key} {}", p.display())))
                .transpose()
        };
        Ok(TlsFiles {
            ca: read("tls_ca_file", &o.tls_ca_file)?,
            cert: read("tls_cert_file", &o.tls_cert_file)?,
            key: read("tls_key_file", &o.tls_key_file)?,
            insecure: o.tls_insecure,
        })
    }

    /// For the `redis` crate.
    pub fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: match (&self.cert, &self.key) {
                (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
                    client_cert: c.clone(),
                    client_key: k.clone(),
                }),
                _ => None,
            },
            root_cert: self.ca.clone(),
        }
    }

    fn config(&self) -> Result<ClientConfig> {
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerifier))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            match &self.ca {
                Some(pem) => {
                    for c in CertificateDer::pem_slice_iter(pem) {
                        roots
                            .add(c.map_err(|e| anyhow!("tls_ca_file: {e}"))?)
                            .map_err(|e| anyhow!("tls_ca_file: {e}"))?;
                    }
                }
                None => {
                    for c in rustls_native_certs::load_native_certs()
                        .context("loading the system's CA certificates")?
                    {
                        let _ = roots.add(c);
                    }
                }
            }
            builder.with_root_certificates(roots)
        };
        Ok(match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                let certs = CertificateDer::pem_slice_iter(c)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| anyhow!("tls_cert_file: {e}"))?;
                let key =
                    PrivateKeyDer::from_pem_slice(k).map_err(|e| anyhow!("tls_key_file: {e}"))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| anyhow!("tls_cert_file/tls_key_file: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        })
    }

    /// The replication socket wrapped in TLS (the handshake runs on first use).
    pub fn wrap(
        &self,
        host: &str,
        sock: TcpStream,
    ) -> Result<rustls::StreamOwned<ClientConnection, TcpStream>> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| anyhow!("`{host}` is not a valid TLS server name: {e}"))?;
        let conn = ClientConnection::new(Arc::new(self.config()?), name)?;
        Ok(rustls::StreamOwned::new(conn, sock))
    }
}

/// `tls_insecure = true`: any certificate is accepted (the operator asked for it).
#[derive(Debug)]
struct NoVerifier;

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
