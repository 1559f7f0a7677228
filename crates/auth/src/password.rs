//! Passwords are stored only as argon2id PHC strings.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;

pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any input")
        .to_string()
}

pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Verifies like [`verify`], with the caller's memory for argon2's blocks (~19 MiB for the default parameters):
/// a thread that checks passwords all day keeps one such buffer instead of asking the allocator for a fresh one
/// each time, which glibc keeps per thread and fragments (a server under a login flood grew by ~100 MiB per
/// checking thread that way).
pub fn verify_with_memory(password: &str, phc: &str, blocks: &mut Vec<argon2::Block>) -> bool {
    use argon2::password_hash::{self, Output};
    use argon2::{Algorithm, Params, Version};
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let Ok(version) = hash.version.map(Version::try_from).transpose() else {
        return false;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version.unwrap_or_default(), params.clone());
    blocks.resize(params.block_count(), argon2::Block::default());
    let computed = Output::init_with(expected.len(), |out| {
        argon
            .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut blocks[..])
            .map_err(|_| password_hash::Error::Password)
    });
    // `Output`'s equality is constant-time.
    computed.is_ok_and(|c| c == expected)
}

/// [`verify_with_memory`] with this thread's buffer, kept for the thread's life: for a few dedicated threads.
pub fn verify_on_this_thread(password: &str, phc: &str) -> bool {
    thread_local! {
        static BLOCKS: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BLOCKS.with(|b| verify_with_memory(password, phc, &mut b.borrow_mut()))
}

/// A random password for first start: 32 characters from an unambiguous alphabet.
pub fn generate() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..32)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_and_verify() {
        let p = super::generate();
        let h = super::hash(&p);
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify(&p, &h));
        assert!(!super::verify("wrong", &h));
        assert!(!super::verify(&p, "not a hash"));
        let mut blocks = Vec::new();
        for _ in 0..2 {
            assert!(super::verify_with_memory(&p, &h, &mut blocks));
            assert!(!super::verify_with_memory("wrong", &h, &mut blocks));
        }
        assert!(!super::verify_with_memory(&p, "not a hash", &mut blocks));
        // Hashes made with other parameters (and by other argon2 versions) verify too.
        let other = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x10,
            argon2::Params::new(8192, 3, 1, Some(16)).unwrap(),
        );
        let salt = argon2::password_hash::SaltString::generate(
            &mut argon2::password_hash::rand_core::OsRng,
        );
        use argon2::PasswordHasher as _;
        let h2 = other
            .hash_password(p.as_bytes(), &salt)
            .unwrap()
            .to_string();
        assert!(super::verify_with_memory(&p, &h2, &mut blocks));
        assert!(!super::verify_with_memory("wrong", &h2, &mut blocks));
        assert!(super::verify(&p, &h2));
    }
}
