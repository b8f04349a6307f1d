//! TLS with etcd: the rustls settings made from `--etcd-cacert`,
//! `--etcd-cert` and `--etcd-key`, and what a failed handshake means.
//!
//! Every file is read with a size bound ([`MAX_FILE`]) and checked when the
//! client is made, the client key against its certificate, so a file that
//! cannot be used is said once, clearly, and never reached mid-call. Only
//! the given CA (else the system bundle) is trusted.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use ccci_common::names::quote_path;

use super::Tls;

/// The largest certificate, key or password file read.
pub(super) const MAX_FILE: usize = 1 << 20;
/// The CA bundle used when `--etcd-cacert` is not given (Debian's, and
/// most distributions').
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

fn read_small(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", quote_path(path)))?;
    let mut out = Vec::new();
    file.take(MAX_FILE as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot read {what} {}: {e}", quote_path(path)))?;
    if out.len() > MAX_FILE {
        return Err(format!(
            "{what} {} is larger than {MAX_FILE} bytes",
            quote_path(path)
        ));
    }
    Ok(out)
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_small(path, what)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {} is not valid PEM: {e}", quote_path(path)))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {} holds no PEM certificate",
            quote_path(path)
        ));
    }
    Ok(certs)
}

/// The TLS settings of the agent, checked: every file read and parsed, the
/// client key matching its certificate.
pub(super) fn tls_config(tls: &Tls) -> Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    // ring, not aws-lc: it builds with a C compiler alone and links
    // statically. Its provider lacks only post-quantum key exchange, which
    // etcd (Go's TLS) negotiates down from anyway.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (ca_path, ca_what) = match &tls.cacert {
        Some(path) => (path.as_path(), "etcd CA file (--etcd-cacert)"),
        None => (
            Path::new(SYSTEM_CA),
            "system CA bundle (give --etcd-cacert for a private CA)",
        ),
    };
    let roots = certificates(ca_path, ca_what)?;
    let mut store = rustls::RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(roots.iter().cloned());
    if added == 0 {
        return Err(format!(
            "{ca_what} {} holds no usable CA certificate",
            quote_path(ca_path)
        ));
    }
    let mut builder = TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(RootCerts::new_with_certs(
            &roots
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect::<Vec<_>>(),
        ))
        .unversioned_rustls_crypto_provider(Arc::clone(&provider));
    if let (Some(cert_path), Some(key_path)) = (&tls.cert, &tls.key) {
        let chain = certificates(cert_path, "etcd client certificate (--etcd-cert)")?;
        let key_what = "etcd client key (--etcd-key)";
        let pem = read_small(key_path, key_what)?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            format!(
                "{key_what} {} holds no usable PEM private key: {e}",
                quote_path(key_path)
            )
        })?;
        // ureq would panic on a key that does not fit its certificate:
        // check here, where it can be said.
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
            |e| {
                format!(
                    "cannot use etcd client certificate {} with key {}: {e}",
                    quote_path(cert_path),
                    quote_path(key_path)
                )
            },
        )?;
        let chain: Vec<Certificate<'static>> = chain
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let key = PrivateKey::from_pem(&pem).map_err(|e| {
            format!(
                "{key_what} {} holds no usable PEM private key: {e}",
                quote_path(key_path)
            )
        })?;
        builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(builder.build())
}

/// Whether a failed request is one that no retry will mend: the TLS
/// handshake failed (a certificate refused by us or by etcd).
pub(super) fn is_tls_failure(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) | ureq::Error::Pem(_) => true,
        ureq::Error::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
        _ => false,
    }
}

pub(super) fn tls_hint(e: &ureq::Error, trusted: &str) -> String {
    let text = e.to_string();
    if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        format!("etcd's certificate is not signed by a CA of {trusted}")
    } else if text.contains("CertificateRequired")
        || text.contains("BadCertificate")
        || text.contains("bad certificate")
        || text.contains("certificate required")
    {
        "etcd refused our client certificate (give --etcd-cert and --etcd-key signed by a CA that etcd trusts)".into()
    } else {
        "the TLS handshake failed".into()
    }
}
