//! bcrypt password hashing. Login compares against a dummy hash when the
//! email is unknown, so both failures take about the same time.

/// Hashes and verifies passwords at one cost.
#[derive(Clone)]
pub struct Passwords {
    cost: u32,
    dummy_hash: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords").field("cost", &self.cost).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(#[from] bcrypt::BcryptError);

impl Passwords {
    /// Computes the dummy hash once, at the same cost as real ones. Blocking.
    pub fn new(cost: u32) -> Result<Passwords, HashError> {
        let dummy_hash = bcrypt::hash("filesync-dummy-password", cost)?;
        Ok(Passwords { cost, dummy_hash })
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// Blocking: run off the async threads.
    pub fn hash(&self, password: &str) -> Result<String, HashError> {
        Ok(bcrypt::hash(password, self.cost)?)
    }

    /// Blocking. A malformed stored hash counts as a mismatch.
    pub fn verify(&self, password: &str, hash: &str) -> bool {
        bcrypt::verify(password, hash).unwrap_or(false)
    }

    /// Spends the time of one verification and returns false.
    pub fn verify_dummy(&self, password: &str) -> bool {
        let _ = bcrypt::verify(password, &self.dummy_hash);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let p = Passwords::new(4).unwrap();
        let h = p.hash("correct horse").unwrap();
        assert!(h.starts_with("$2"));
        assert!(p.verify("correct horse", &h));
        assert!(!p.verify("wrong horse", &h));
        assert!(!p.verify("x", "not-a-hash"));
        assert!(!p.verify_dummy("correct horse"));
    }
}
