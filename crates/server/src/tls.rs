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

/// The host names the server has found it serves (see [`crate::connection::sni`]): a leaf is minted only for
/// these. The accept loop approves a name, looking it up in the registry directory, before the handshake reaches
/// the resolver, which is synchronous. Only real names get in, so the set stays as small as the deployment.
#[derive(Default)]
pub struct ServedNames(std::sync::RwLock<std::collections::HashSet<String>>);

/// More served names than a deployment has; past it the set starts over (names are approved again on use).
const MAX_SERVED_NAMES: usize = 65_536;

impl ServedNames {
    pub fn contains(&self, name: &str) -> bool {
        self.0.read().expect("lock").contains(name)
    }

    pub fn approve(&self, name: &str) {
        let mut set = self.0.write().expect("lock");
        if set.len() >= MAX_SERVED_NAMES {
            set.clear();
        }
        set.insert(name.to_string());
    }
}

/// Picks (minting on first use) a leaf for the SNI name; clients connecting by IP send no SNI and get the leaf
/// for the listen address and `localhost`. A name nobody approved gets that default leaf: a client must not make
/// the server mint (a key generation each) for any name it makes up, nor fill its cache.
struct SniResolver {
    ca: LocalCa,
    default: Arc<CertifiedKey>,
    minted: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    served: Arc<ServedNames>,
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
        if !self.served.contains(&name) {
            return Some(self.default.clone());
        }
        let mut minted = self.minted.lock().expect("lock");
        if let Some(k) = minted.get(&name) {
            return Some(k.clone());
        }
        if minted.len() >= MAX_SERVED_NAMES {
            minted.clear();
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

/// TLS from the local CA, minting leaves per served SNI name. `default_names` covers clients that send no SNI.
pub fn local_ca_config(
    ca: LocalCa,
    default_names: &[String],
    served: Arc<ServedNames>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let default = Arc::new(ca.mint(default_names)?);
    let resolver = SniResolver {
        ca,
        default,
        minted: Mutex::new(HashMap::new()),
        served,
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
    fn served_names_are_bounded() {
        let names = ServedNames::default();
        names.approve("app.moat.test");
        assert!(names.contains("app.moat.test"));
        assert!(!names.contains("evil.moat.test"));
        for i in 0..MAX_SERVED_NAMES + 10 {
            names.approve(&format!("r{i}.moat.test"));
        }
        assert!(names.0.read().unwrap().len() <= MAX_SERVED_NAMES);
    }
}
