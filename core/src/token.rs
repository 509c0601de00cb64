//! Token lifetime arithmetic: when a service-account token must be replaced. Pure functions on
//! Unix seconds; reading the token and the wall clock is the adapter's job.

/// The times a JWT carries (Unix seconds), as far as the adapter could read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenTimes {
    /// `exp`: the broker refuses the token from this second on.
    pub exp: Option<u64>,
    /// `iat`: when it was issued.
    pub iat: Option<u64>,
}

/// What to do about the current token at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Usable; replace it proactively in `rotate_in_s` seconds if known.
    Fresh {
        /// Seconds until `exp` minus the margin, when `exp` is known.
        rotate_in_s: Option<u64>,
    },
    /// Inside the margin before `exp`: rotate as soon as a new token is available.
    Expiring {
        /// Seconds left before `exp`.
        expires_in_s: u64,
    },
    /// Past `exp`: connecting with it would only be refused.
    Expired {
        /// Seconds since `exp`.
        ago_s: u64,
    },
}

/// Judges a token at `now` (Unix seconds) with a safety `margin_s` before its expiry. A token
/// without `exp` (not a JWT) is always fresh: the broker remains the judge.
pub fn freshness(times: TokenTimes, now: u64, margin_s: u64) -> Freshness {
    match times.exp {
        None => Freshness::Fresh { rotate_in_s: None },
        Some(exp) if now >= exp => Freshness::Expired { ago_s: now - exp },
        Some(exp) if now + margin_s >= exp => Freshness::Expiring {
            expires_in_s: exp - now,
        },
        Some(exp) => Freshness::Fresh {
            rotate_in_s: Some(exp - margin_s - now),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TokenTimes = TokenTimes {
        exp: Some(1_000),
        iat: Some(0),
    };

    #[test]
    fn fresh_until_the_margin_then_expiring_then_expired() {
        assert_eq!(
            freshness(T, 100, 60),
            Freshness::Fresh {
                rotate_in_s: Some(840)
            }
        );
        assert_eq!(
            freshness(T, 940, 60),
            Freshness::Expiring { expires_in_s: 60 }
        );
        assert_eq!(freshness(T, 1_000, 60), Freshness::Expired { ago_s: 0 });
        assert_eq!(freshness(T, 1_030, 60), Freshness::Expired { ago_s: 30 });
    }

    #[test]
    fn token_without_exp_is_always_fresh() {
        assert_eq!(
            freshness(TokenTimes::default(), u64::MAX, 60),
            Freshness::Fresh { rotate_in_s: None }
        );
    }
}
