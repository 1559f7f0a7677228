//! TLS: a local certificate authority made on first start, and a leaf certificate minted per served host name
//! (SNI), so that every registry created later is covered at once. Or the operator's own certificate.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::crypto::ring::default_provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Pem(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The local CA. Its certificate is written once (`ca.pem`); on later starts the same key and subject are used
/// to sign leaves, which therefore chain to the `ca.pem` clients already trust.
pub struct LocalCa {
    key: KeyPair,
    cert: rcgen::Certificate,
    pub cert_path: PathBuf,
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Moat local CA");
    dn.push(DnType::OrganizationName, "Moat");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 1, 1);
    Ok(params)
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io_err(path))
}

impl LocalCa {
    pub fn load_or_create(dir: &Path) -> Result<LocalCa, TlsError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let key_path = dir.join("ca-key.pem");
        let cert_path = dir.join("ca.pem");
        let key = if key_path.exists() {
            let pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
            KeyPair::from_pem(&pem)?
        } else {
            let key = KeyPair::generate()?;
            write_private(&key_path, &key.serialize_pem())?;
            key
        };
        let cert = ca_params()?.self_signed(&key)?;
        if !cert_path.exists() {
            fs::write(&cert_path, cert.pem()).map_err(io_err(&cert_path))?;
        }
        Ok(LocalCa {
            key,
            cert,
            cert_path,
        })
    }

    /// A leaf for `names` (DNS names or IP addresses), valid for a year, with the CA in its chain.
    pub fn mint(&self, names: &[String]) -> Result<CertifiedKey, TlsError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        let key = KeyPair::generate()?;
        let leaf = params.signed_by(&key, &self.cert, &self.key)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = default_provider().key_provider.load_private_key(der)?;
        Ok(CertifiedKey::new(
            vec![leaf.der().clone(), self.cert.der().clone()],
            signing,
        ))
    }
}

/// Picks (minting on first use) a leaf for the SNI name; clients connecting by IP send no SNI and get the leaf
/// for the listen address and `localhost`.
struct SniResolver {
    ca: LocalCa,
    default: Arc<CertifiedKey>,
    minted: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// Leaves are minted only for names the server can serve (`localhost`, the domain and names under it):
    /// minting costs a key generation, and a client must not make the server mint for any name it makes up.
    domain: String,
}

/// More names than any deployment serves: past this, the default leaf is served instead of minting.
const MAX_MINTED: usize = 4096;

impl SniResolver {
    fn serves(&self, name: &str) -> bool {
        name == "localhost"
            || name == self.domain
            || name
                .strip_suffix(self.domain.as_str())
                .is_some_and(|prefix| prefix.ends_with('.'))
    }
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name().map(|n| n.to_ascii_lowercase()) else {
            return Some(self.default.clone());
        };
        if !self.serves(&name) {
            return Some(self.default.clone());
        }
        let mut minted = self.minted.lock().expect("lock");
        if let Some(k) = minted.get(&name) {
            return Some(k.clone());
        }
        if minted.len() >= MAX_MINTED {
            return Some(self.default.clone());
        }
        match self.ca.mint(std::slice::from_ref(&name)) {
            Ok(k) => {
                let k = Arc::new(k);
                minted.insert(name, k.clone());
                Some(k)
            }
            Err(e) => {
                tracing::warn!("could not mint a certificate for {name}: {e}");
                Some(self.default.clone())
            }
        }
    }
}

fn finish(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// TLS from the local CA, minting leaves per SNI name. `default_names` covers clients that send no SNI.
pub fn local_ca_config(
    ca: LocalCa,
    default_names: &[String],
    domain: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let default = Arc::new(ca.mint(default_names)?);
    let resolver = SniResolver {
        ca,
        default,
        minted: Mutex::new(HashMap::new()),
        domain: domain.to_ascii_lowercase(),
    };
    let config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    Ok(finish(config))
}

/// TLS from the operator's certificate chain and key (PEM files).
pub fn operator_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = fs::read(cert).map_err(io_err(cert))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(io_err(cert))?;
    if chain.is_empty() {
        return Err(TlsError::Pem(format!(
            "{}: no certificate found",
            cert.display()
        )));
    }
    let key_pem = fs::read(key).map_err(io_err(key))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(io_err(key))?
        .ok_or_else(|| TlsError::Pem(format!("{}: no private key found", key.display())))?;
    let config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(finish(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_minted_only_for_served_names() {
        let dir = std::env::temp_dir().join(format!("moat-tls-{}", uuid::Uuid::new_v4()));
        let ca = LocalCa::load_or_create(&dir).unwrap();
        let default = Arc::new(ca.mint(&["127.0.0.1".to_string()]).unwrap());
        let r = SniResolver {
            ca,
            default,
            minted: Mutex::new(HashMap::new()),
            domain: "moat.test".into(),
        };
        assert!(r.serves("localhost"));
        assert!(r.serves("moat.test"));
        assert!(r.serves("app.moat.test"));
        assert!(r.serves("app.westus.data.moat.test"));
        assert!(!r.serves("evilmoat.test"));
        assert!(!r.serves("example.org"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
