//! The root CA: create, load, import, save, and sign node certificates from CSRs.

use std::fmt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};
use x509_parser::asn1_rs::Tag;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::NodeIdentity;
use crate::keys::{self, KeyError, UnlockKey};
use crate::pair::{PairError, PairFiles};
use crate::random;

/// The CN of every root Shoal creates.
pub const ROOT_CA_COMMON_NAME: &str = "shoal-ca";
/// How long a root Shoal creates is valid: 20 years.
pub const ROOT_CA_VALIDITY: Duration = Duration::days(20 * 365 + 5);
/// How long a node certificate is valid unless asked otherwise: 90 days.
pub const DEFAULT_NODE_VALIDITY: Duration = Duration::days(90);
/// The shortest node certificate validity a cluster setting may ask for: 1 hour (the CLI and
/// the manager's settings enforce it). The CA itself signs any positive validity, so that tests
/// can renew certificates every few seconds.
pub const MIN_NODE_VALIDITY: Duration = Duration::hours(1);
/// Certificates start up to this long before they are signed, so clock skew does not reject
/// them (never longer than their validity, so a short-lived certificate's renewal point, a
/// fraction of its whole lifetime, still lies ahead when it is issued).
const BACKDATE: Duration = Duration::hours(1);

const CERT_FILE: &str = "ca.crt";
/// Certificates are public: readable by all, writable by the owner.
pub(crate) const CERT_MODE: u32 = 0o644;
const KEY_FILE: &str = "ca.key";

/// Creating, loading, importing or saving a root CA failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen could not make the key or certificate.
    #[error("cannot create root CA: {0}")]
    Generate(#[source] rcgen::Error),
    /// The system random number generator failed.
    #[error("cannot create root CA: the system random number generator failed")]
    Random,
    /// The certificate PEM holds no certificate or is not X.509.
    #[error("root CA certificate is not a PEM X.509 certificate: {reason}")]
    Certificate {
        /// What the parser reported.
        reason: String,
    },
    /// The certificate is not marked as a CA.
    #[error("certificate {subject:?} is not a CA certificate (basic constraints CA:TRUE is missing): import a root CA")]
    NotCa {
        /// The certificate's subject.
        subject: String,
    },
    /// The key PEM is not a key rcgen can sign with.
    #[error("root CA key is not a usable PEM private key: {0}")]
    Key(#[source] rcgen::Error),
    /// The key does not belong to the certificate.
    #[error("root CA key does not match the certificate {subject:?}: pass the key that made this certificate")]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
    },
    /// The saved certificate does not match the saved key (an interrupted save is finished on
    /// load, so this means the files were changed by something else).
    #[error(
        "root CA certificate {cert} does not match the key {key}: restore {dir} from a backup; a manager in a cluster with other managers can instead be removed from the cluster and joined again with an empty --data-dir"
    )]
    SavedKeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The directory that holds them.
        dir: PathBuf,
    },
    /// Reading or writing the files failed.
    #[error("cannot access root CA file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file could not be written or read (wrong unlock key, for example).
    #[error(transparent)]
    KeyFile(#[from] KeyError),
}

/// Signing a node certificate, or making a CSR, failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CSR is not PEM, not a CSR, or its signature does not verify.
    #[error("certificate signing request is not valid: {0}")]
    Csr(#[source] rcgen::Error),
    /// The validity asked for is not positive.
    #[error("node certificate validity of {asked} is not positive: ask for a duration after now")]
    ValidityTooShort {
        /// The validity asked for.
        asked: Duration,
    },
    /// The identity has an empty field.
    #[error("node identity has an empty {field}: pass a node ID and a cluster ID")]
    EmptyIdentity {
        /// `node ID` or `cluster ID`.
        field: &'static str,
    },
    /// rcgen could not make the key, the CSR or the certificate.
    #[error("cannot sign node certificate: {0}")]
    Sign(#[source] rcgen::Error),
    /// The system random number generator failed.
    #[error("cannot sign node certificate: the system random number generator failed")]
    Random,
    /// The certificate issued for a locked manager does not make a locked certificate.
    #[error("cannot make a locked manager's certificate: {reason}")]
    Locked {
        /// What is wrong.
        reason: String,
    },
}

/// A root certificate authority: its certificate and its signing key.
pub struct RootCa {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa").field("subject", &subject_of(&self.cert_der)).field("key", &"[redacted]").finish()
    }
}

impl RootCa {
    /// Creates a new root: ECDSA P-256, CN `shoal-ca`, valid 20 years from `now` (backdated 1 hour).
    pub fn generate(now: OffsetDateTime) -> Result<RootCa, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let params = root_params(now)?;
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        Ok(RootCa { cert_pem: cert.pem(), cert_der: cert.der().clone(), issuer: Issuer::new(params, key) })
    }

    /// Loads a root from PEM: a root saved by [`RootCa::cert_pem`] and [`RootCa::key_pem`], or an
    /// external root to import (any CA certificate with a key ring can sign with).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<RootCa, CaError> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CaError::Certificate { reason: e.to_string() })?;
        let (_, cert) =
            X509Certificate::from_der(&cert_der).map_err(|e| CaError::Certificate { reason: e.to_string() })?;
        let subject = cert.subject().to_string();
        if !cert.is_ca() {
            return Err(CaError::NotCa { subject });
        }
        let key = KeyPair::from_pem(key_pem).map_err(CaError::Key)?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(CaError::KeyMismatch { subject });
        }
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| CaError::Certificate { reason: e.to_string() })?;
        Ok(RootCa { cert_pem: pem_of(&cert_der), cert_der, issuer })
    }

    /// Saves `ca.crt` and `ca.key` in `dir`, replacing both together (after a crash,
    /// [`RootCa::load`] finds either the old pair or this one); the key file has mode 0600 and is
    /// encrypted when `kek` is set.
    pub fn save(&self, dir: &Path, kek: Option<&UnlockKey>) -> Result<(), CaError> {
        files(dir).save(&self.cert_pem, self.key_pem().as_bytes(), kek).map_err(pair_error)
    }

    /// Loads a root saved by [`RootCa::save`], first finishing a save that a crash interrupted
    /// after its commit point.
    pub fn load(dir: &Path, kek: Option<&UnlockKey>) -> Result<RootCa, CaError> {
        let files = files(dir);
        files.finish().map_err(pair_error)?;
        let cert_path = files.cert_path();
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(|source| CaError::Io { path: cert_path, source })?;
        let key_pem = keys::read_key_file(&files.key_path(), kek)?;
        let key_pem = String::from_utf8_lossy(&key_pem);
        RootCa::from_pem(&cert_pem, &key_pem).map_err(|e| match e {
            CaError::KeyMismatch { .. } => {
                CaError::SavedKeyMismatch { cert: files.cert_path(), key: files.key_path(), dir: dir.to_owned() }
            }
            other => other,
        })
    }

    /// The root certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root's fingerprint, `sha256:<hex>` of its certificate's DER (what `shoal cluster ca`
    /// shows and nodes report as their certificate's issuer).
    pub fn fingerprint(&self) -> String {
        crate::tls::fingerprint(&self.cert_der)
    }

    /// A bundle of this root alone: what nodes trust when it is the only root.
    pub fn trust_bundle(&self) -> crate::TrustBundle {
        crate::TrustBundle::from_roots(vec![self.cert_der.clone()])
    }

    /// The root certificate in DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The root's private key in PKCS#8 PEM. Secret: store it with [`crate::write_key_file`].
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Signs a node's CSR. The CA decides the identity: CN = node ID, OU = role, O = cluster ID;
    /// the CSR's subject and extensions are ignored, only its (verified) public key is used.
    ///
    /// The certificate is valid from `now` minus 1 hour (or minus `validity`, if shorter) to `now`
    /// plus `validity` ([`DEFAULT_NODE_VALIDITY`] is the usual choice, [`MIN_NODE_VALIDITY`] the
    /// shortest a cluster should use). It
    /// serves as both TLS client and server certificate, with the role name as its DNS name.
    /// Returns the certificate in PEM.
    pub fn issue(
        &self,
        csr_pem: &str,
        identity: &NodeIdentity,
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<String, IssueError> {
        self.issue_for(csr_pem, &identity.node_id, identity.role.as_str(), &identity.cluster_id, validity, now)
    }

    /// Signs a CSR for (CN `node_id`, OU `unit`, O `cluster_id`) with `unit` as its DNS name:
    /// node certificates ([`RootCa::issue`]) and a locked manager's ([`crate::LockedCertificate`]).
    pub(crate) fn issue_for(
        &self,
        csr_pem: &str,
        node_id: &str,
        unit: &str,
        cluster_id: &str,
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<String, IssueError> {
        if validity <= Duration::ZERO {
            return Err(IssueError::ValidityTooShort { asked: validity });
        }
        if node_id.is_empty() {
            return Err(IssueError::EmptyIdentity { field: "node ID" });
        }
        if cluster_id.is_empty() {
            return Err(IssueError::EmptyIdentity { field: "cluster ID" });
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(IssueError::Csr)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, node_id);
        name.push(DnType::OrganizationalUnitName, unit);
        name.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = name;
        params.not_before = now - BACKDATE.min(validity);
        params.not_after = now + validity;
        params.serial_number = Some(random::serial().map_err(|_| IssueError::Random)?);
        params.subject_alt_names = vec![SanType::DnsName(unit.try_into().map_err(IssueError::Sign)?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&csr.public_key, &self.issuer).map_err(IssueError::Sign)?;
        Ok(cert.pem())
    }

    /// Signs `other`'s root key under this root's name: the cross-signed intermediate that lets
    /// nodes trusting this root verify certificates issued by `other`.
    pub(crate) fn cross_sign(&self, other: &RootCa, now: OffsetDateTime) -> Result<CertificateDer<'static>, CaError> {
        let (_, other_cert) =
            X509Certificate::from_der(&other.cert_der).map_err(|e| CaError::Certificate { reason: e.to_string() })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name_of(&other_cert)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random::serial().map_err(|_| CaError::Random)?);
        params.not_before = now - BACKDATE;
        // The intermediate never outlives either root.
        let (_, this_cert) =
            X509Certificate::from_der(&self.cert_der).map_err(|e| CaError::Certificate { reason: e.to_string() })?;
        let end = other_cert.validity().not_after.timestamp().min(this_cert.validity().not_after.timestamp());
        params.not_after =
            OffsetDateTime::from_unix_timestamp(end).map_err(|e| CaError::Certificate { reason: e.to_string() })?;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(other.issuer.key(), &self.issuer).map_err(CaError::Generate)?;
        Ok(cert.der().clone())
    }

    /// Whether `cert` carries a signature by this root's key.
    pub(crate) fn signed(&self, cert: &CertificateDer<'_>) -> bool {
        signed_by(&self.cert_der, cert)
    }
}

/// Whether `cert` carries a signature by the key of the certificate `signer`.
pub(crate) fn signed_by(signer: &CertificateDer<'_>, cert: &CertificateDer<'_>) -> bool {
    let Ok((_, signer)) = X509Certificate::from_der(signer) else {
        return false;
    };
    let Ok((_, cert)) = X509Certificate::from_der(cert) else {
        return false;
    };
    cert.verify_signature(Some(signer.public_key())).is_ok()
}

/// The root certificate saved in `dir` by [`RootCa::save`] (finishing an interrupted save
/// first), or `None` when there is none or it cannot be read; the key is not read.
/// Whether two certificates carry the same public key.
pub(crate) fn same_public_key(a: &CertificateDer<'_>, b: &CertificateDer<'_>) -> bool {
    match (X509Certificate::from_der(a), X509Certificate::from_der(b)) {
        (Ok((_, a)), Ok((_, b))) => a.public_key().raw == b.public_key().raw,
        _ => false,
    }
}

pub(crate) fn saved_cert_der(dir: &Path) -> Option<CertificateDer<'static>> {
    let files = files(dir);
    files.finish().ok()?;
    let pem = std::fs::read_to_string(files.cert_path()).ok()?;
    CertificateDer::from_pem_slice(pem.as_bytes()).ok()
}

fn files(dir: &Path) -> PairFiles<'_> {
    PairFiles { dir, cert: CERT_FILE, key: KEY_FILE }
}

pub(crate) fn pair_error(e: PairError) -> CaError {
    match e {
        PairError::Io { path, source } => CaError::Io { path, source },
        PairError::Key(e) => CaError::KeyFile(e),
    }
}

/// Parameters of a root Shoal creates.
fn root_params(now: OffsetDateTime) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, ROOT_CA_COMMON_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = now - BACKDATE;
    params.not_after = now + ROOT_CA_VALIDITY;
    params.serial_number = Some(random::serial().map_err(|_| CaError::Random)?);
    Ok(params)
}

/// A certificate's subject as an rcgen name with the same attribute types and string encodings, so
/// that a certificate rcgen makes under this name matches the original byte for byte.
fn name_of(cert: &X509Certificate<'_>) -> Result<DistinguishedName, CaError> {
    let unsupported = |what: String| CaError::Certificate {
        reason: format!("subject {} has {what}: cannot reproduce it", cert.subject()),
    };
    let mut name = DistinguishedName::new();
    for attr in cert.subject().iter_attributes() {
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| unsupported("an attribute type that is not an OID".into()))?
            .collect();
        let text = attr.as_str().map_err(|_| unsupported(format!("a non-string value for {}", attr.attr_type())))?;
        let value = match attr.attr_value().tag() {
            Tag::PrintableString => {
                DnValue::PrintableString(text.try_into().map_err(|_| unsupported("an invalid PrintableString".into()))?)
            }
            Tag::Ia5String => {
                DnValue::Ia5String(text.try_into().map_err(|_| unsupported("an invalid IA5String".into()))?)
            }
            Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
            other => return Err(unsupported(format!("a value of ASN.1 tag {other}"))),
        };
        name.push(DnType::from_oid(&oid), value);
    }
    Ok(name)
}

/// A certificate's subject as text, for messages.
fn subject_of(cert: &CertificateDer<'_>) -> String {
    X509Certificate::from_der(cert).map(|(_, c)| c.subject().to_string()).unwrap_or_default()
}

/// PEM text of one certificate.
pub(crate) fn pem_of(cert: &CertificateDer<'_>) -> String {
    let body: Vec<u8> = cert.to_vec();
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    let encoded = base64_encode(&body);
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Standard base64 with padding, for PEM bodies.
fn base64_encode(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A node's private key (ECDSA P-256), made on the node; only its CSR leaves the node.
pub struct NodeKey {
    key: KeyPair,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey([redacted])")
    }
}

impl NodeKey {
    /// Makes a new ECDSA P-256 key.
    pub fn generate() -> Result<NodeKey, IssueError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(IssueError::Sign)?;
        Ok(NodeKey { key })
    }

    /// Loads a key from PKCS#8 PEM.
    pub fn from_pem(key_pem: &str) -> Result<NodeKey, KeyError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| KeyError::Malformed { reason: e.to_string() })?;
        Ok(NodeKey { key })
    }

    /// The key in PKCS#8 PEM. Secret: store it with [`crate::write_key_file`].
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A CSR for this key. Its subject is a placeholder: the CA sets the identity.
    pub fn csr_pem(&self) -> Result<String, IssueError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "shoal-node");
        params.distinguished_name = name;
        params.serialize_request(&self.key).and_then(|csr| csr.pem()).map_err(IssueError::Sign)
    }

    pub(crate) fn public_key_raw(&self) -> &[u8] {
        self.key.public_key_raw()
    }

    pub(crate) fn pkcs8_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }
}

#[cfg(test)]
mod tests;
