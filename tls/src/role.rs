//! What a client may do: four roles, each including the ones before it.

use std::{fmt, str::FromStr};

/// A client's role, bound into its certificate. Ordered: `Reader < App < Operator < Drill`, and
/// each role may do whatever the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads the cluster's state (status, members, checkpoints, events).
    Reader,
    /// An application: also writes checkpoints and publishes events.
    App,
    /// Also runs administrative operations (model, lock, membership).
    Operator,
    /// Also injects faults (drills).
    Drill,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Role::Reader, Role::App, Role::Operator, Role::Drill];

    /// Whether a caller with this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// The lower-case name used in certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::App => "app",
            Role::Operator => "operator",
            Role::Drill => "drill",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is none of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role '{0}': use one of reader, app, operator, drill")]
pub struct RoleParseError(pub String);

impl FromStr for Role {
    type Err = RoleParseError;

    /// The lower-case names only: a certificate spells its role one way.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| RoleParseError(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_includes_the_ones_before() {
        for (i, have) in Role::ALL.into_iter().enumerate() {
            for (j, needed) in Role::ALL.into_iter().enumerate() {
                assert_eq!(have.allows(needed), i >= j, "{have} allows {needed}?");
            }
        }
    }

    #[test]
    fn names_round_trip_and_unknown_is_refused() {
        for r in Role::ALL {
            assert_eq!(r.to_string().parse::<Role>(), Ok(r));
        }
        let e = "Operator".parse::<Role>().unwrap_err();
        assert!(e.to_string().contains("'Operator'"), "{e}");
        assert!("admin".parse::<Role>().is_err());
    }
}
