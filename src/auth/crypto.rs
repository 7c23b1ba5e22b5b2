//! Small cryptographic helpers: random handles, SHA-256, password hashes and key generation,
//! all on aws-lc-rs (already the TLS provider) and argon2.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SecureRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

use crate::error::{FhirError, FhirResult};

/// `n` random bytes, base64url without padding (codes, token ids, launch ids).
pub fn random_handle(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// BASE64URL-no-pad(SHA-256(data)): PKCE challenges, and the keys under which secrets such as
/// refresh tokens are stored (the database never holds them in clear).
pub fn sha256_b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

/// An argon2id PHC string for a password or client secret.
pub fn hash_password(password: &str) -> FhirResult<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| FhirError::Internal(format!("cannot hash a password: {e}")))
}

/// Whether `password` matches a PHC string made by [`hash_password`].
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Signing algorithms for keys we generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (our id_tokens: OpenID requires it).
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384 (SMART client assertions).
    Rs384,
    /// ECDSA P-384 with SHA-384 (SMART client assertions).
    Es384,
}

impl KeyAlg {
    /// The JOSE algorithm.
    pub fn jose(self) -> Algorithm {
        match self {
            KeyAlg::Rs256 => Algorithm::RS256,
            KeyAlg::Rs384 => Algorithm::RS384,
            KeyAlg::Es384 => Algorithm::ES384,
        }
    }
}

/// A generated key pair: the private key as PKCS#8 PEM and the public key as a JWK carrying
/// `kid`, `alg` and `use`.
pub struct GeneratedKey {
    /// PKCS#8 PEM private key.
    pub private_pem: String,
    /// Public JWK.
    pub public_jwk: Value,
    /// Its key id.
    pub kid: String,
}

/// Generate a key pair for `alg`.
pub fn generate_key(alg: KeyAlg) -> FhirResult<GeneratedKey> {
    let failed = |e: &dyn std::fmt::Display| FhirError::Internal(format!("key generation: {e}"));
    let der: Vec<u8> = match alg {
        KeyAlg::Rs256 | KeyAlg::Rs384 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|e| failed(&e))?;
            AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
                .map_err(|e| failed(&e))?
                .as_ref()
                .to_vec()
        }
        KeyAlg::Es384 => EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
            .and_then(|pair| pair.to_pkcs8v1())
            .map_err(|e| failed(&e))?
            .as_ref()
            .to_vec(),
    };
    let private_pem = pem("PRIVATE KEY", &der);
    let encoding = encoding_key(alg, &private_pem)?;
    let mut jwk = serde_json::to_value(
        Jwk::from_encoding_key(&encoding, alg.jose()).map_err(|e| failed(&e))?,
    )
    .map_err(FhirError::internal)?;
    // Hex, not base64url: a kid starting with `-` reads as an option to command-line tools.
    let kid: String = URL_SAFE_NO_PAD
        .decode(random_handle(12))
        .expect("our own base64")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Some(obj) = jwk.as_object_mut() {
        obj.insert("kid".into(), Value::String(kid.clone()));
        obj.insert("use".into(), Value::String("sig".into()));
    }
    Ok(GeneratedKey {
        private_pem,
        public_jwk: jwk,
        kid,
    })
}

/// The signing key in a PKCS#8 PEM made by [`generate_key`].
pub fn encoding_key(alg: KeyAlg, private_pem: &str) -> FhirResult<EncodingKey> {
    let key = match alg {
        KeyAlg::Rs256 | KeyAlg::Rs384 => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
        KeyAlg::Es384 => EncodingKey::from_ec_pem(private_pem.as_bytes()),
    };
    key.map_err(|e| FhirError::Internal(format!("unreadable private key: {e}")))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
