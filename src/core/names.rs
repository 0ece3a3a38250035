//! Who gets a name that more than one declaration claims.
//!
//! Names are unique per kind across the watched directory; a Pool's replicas
//! (`POOL-0`, `POOL-1`, ...) claim Session names like Sessions do. The
//! declaration that already holds a name (it is running, or the status files
//! record it) keeps it, so that a newcomer can never take a running
//! session's name; only when no claimant holds it does a deterministic order
//! decide (the files' lexical order, then the documents' order).

use std::collections::BTreeMap;

/// A kind and a name: `("Session", "api")`, `("Pool", "web")`.
pub type NameKey = (String, String);

/// One declaration claiming a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The kind and name claimed.
    pub key: NameKey,
    /// The stem of the file that declares it.
    pub stem: String,
}

/// The winner of a contested (or uncontested) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Winner {
    /// Index of the winning claim.
    pub index: usize,
    /// True when it won because its file holds the name; false when the
    /// order decided.
    pub held: bool,
}

/// For each name claimed, which claim wins. `claims` are in the
/// deterministic order (files in lexical order, documents in order);
/// `holders` maps names to the stem of the file holding them.
pub fn winners(claims: &[Claim], holders: &BTreeMap<NameKey, String>) -> BTreeMap<NameKey, Winner> {
    let mut out: BTreeMap<NameKey, Winner> = BTreeMap::new();
    for (index, claim) in claims.iter().enumerate() {
        let held = holders.get(&claim.key) == Some(&claim.stem);
        match out.get(&claim.key) {
            None => {
                out.insert(claim.key.clone(), Winner { index, held });
            }
            // The holder beats an earlier claim that does not hold the name.
            Some(w) if held && !w.held => {
                out.insert(claim.key.clone(), Winner { index, held });
            }
            Some(_) => {}
        }
    }
    out
}

/// The name of a Pool's replica.
pub fn replica_name(pool: &str, ordinal: u32) -> String {
    format!("{pool}-{ordinal}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(kind: &str, name: &str, stem: &str) -> Claim {
        Claim {
            key: (kind.into(), name.into()),
            stem: stem.into(),
        }
    }

    fn key(kind: &str, name: &str) -> NameKey {
        (kind.into(), name.into())
    }

    #[test]
    fn without_a_holder_the_first_claim_wins() {
        let claims = [claim("Session", "api", "aa"), claim("Session", "api", "zz")];
        let w = winners(&claims, &BTreeMap::new());
        assert_eq!(
            w[&key("Session", "api")],
            Winner {
                index: 0,
                held: false
            }
        );
    }

    #[test]
    fn the_holder_keeps_its_name_against_an_earlier_file() {
        let claims = [claim("Session", "api", "aa"), claim("Session", "api", "zz")];
        let holders = BTreeMap::from([(key("Session", "api"), "zz".to_string())]);
        let w = winners(&claims, &holders);
        assert_eq!(
            w[&key("Session", "api")],
            Winner {
                index: 1,
                held: true
            }
        );
    }

    #[test]
    fn a_holder_that_no_longer_claims_the_name_decides_nothing() {
        let claims = [claim("Session", "api", "bb"), claim("Session", "api", "cc")];
        let holders = BTreeMap::from([(key("Session", "api"), "gone".to_string())]);
        let w = winners(&claims, &holders);
        assert_eq!(
            w[&key("Session", "api")],
            Winner {
                index: 0,
                held: false
            }
        );
    }

    #[test]
    fn kinds_are_separate_namespaces() {
        let claims = [claim("Pool", "web", "a"), claim("Session", "web", "b")];
        let w = winners(&claims, &BTreeMap::new());
        assert_eq!(w.len(), 2);
    }
}
