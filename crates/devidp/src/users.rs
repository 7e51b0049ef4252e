//! The fixed demo users of the development provider.
//!
//! They are constants so that `portcullis demo` can print them and tests can name them. The user
//! `many` has hundreds of long group names so that a session built from its id_token is about
//! 10 KB: the gateway's cookie chunking is exercised by a real login, not a hand-made session.

/// The one password every demo user has; the login form shows it.
pub const DEMO_PASSWORD: &str = "demo";

/// Number of groups of the `many` user.
pub const MANY_GROUPS_COUNT: usize = 400;

/// Where a demo user's groups come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoGroups {
    /// A fixed list.
    List(&'static [&'static str]),
    /// `count` names `{prefix}{index:03}` (a constant cannot hold 400 formatted names).
    Generated {
        /// How many groups.
        count: usize,
        /// The common prefix of every name.
        prefix: &'static str,
    },
}

impl DemoGroups {
    /// The group names, in order.
    pub fn names(&self) -> Vec<String> {
        match *self {
            DemoGroups::List(list) => list.iter().map(|g| (*g).to_owned()).collect(),
            DemoGroups::Generated { count, prefix } => {
                (0..count).map(|i| format!("{prefix}{i:03}")).collect()
            }
        }
    }
}

/// One demo account of the development provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoUser {
    /// Login name, also `preferred_username`.
    pub username: &'static str,
    /// Password (all the same: [`DEMO_PASSWORD`]).
    pub password: &'static str,
    /// Stable subject identifier (`sub`).
    pub sub: &'static str,
    /// Display name (`name`).
    pub name: &'static str,
    /// E-mail address (`email`, always `email_verified: true`).
    pub email: &'static str,
    /// Groups (`groups` claim).
    pub groups: DemoGroups,
}

impl DemoUser {
    /// The user's group names.
    pub fn group_names(&self) -> Vec<String> {
        self.groups.names()
    }
}

/// The demo users: alice (admins, staff), bob (staff), carol (no groups), many (400 groups).
pub const DEMO_USERS: &[DemoUser] = &[
    DemoUser {
        username: "alice",
        password: DEMO_PASSWORD,
        sub: "3f6c1b2a-0a11-4c3e-9d7a-a11ce0000001",
        name: "Alice Admin",
        email: "alice@example.com",
        groups: DemoGroups::List(&["admins", "staff"]),
    },
    DemoUser {
        username: "bob",
        password: DEMO_PASSWORD,
        sub: "8b2d4e6f-0b22-4d5e-8f9a-b0b000000002",
        name: "Bob Staff",
        email: "bob@example.org",
        groups: DemoGroups::List(&["staff"]),
    },
    DemoUser {
        username: "carol",
        password: DEMO_PASSWORD,
        sub: "c4a7e9d1-0c33-4f6a-9b8c-ca7010000003",
        name: "Carol Guest",
        email: "carol@example.net",
        groups: DemoGroups::List(&[]),
    },
    DemoUser {
        username: "many",
        password: DEMO_PASSWORD,
        sub: "d5b8f0e2-0d44-4a7b-8c9d-3a4e00000004",
        name: "Manny Groups",
        email: "many@groups.example",
        groups: DemoGroups::Generated {
            count: MANY_GROUPS_COUNT,
            prefix: "department-of-long-group-names-",
        },
    },
];

/// The demo user with this exact username.
pub(crate) fn find(username: &str) -> Option<&'static DemoUser> {
    DEMO_USERS.iter().find(|u| u.username == username)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_distinct_and_many_is_large() {
        let subs: std::collections::HashSet<_> = DEMO_USERS.iter().map(|u| u.sub).collect();
        assert_eq!(subs.len(), DEMO_USERS.len());
        let domains: std::collections::HashSet<_> = DEMO_USERS
            .iter()
            .filter_map(|u| u.email.split_once('@').map(|(_, d)| d))
            .collect();
        assert_eq!(domains.len(), DEMO_USERS.len());
        let many = find("many").map(|u| u.group_names()).unwrap_or_default();
        assert_eq!(many.len(), MANY_GROUPS_COUNT);
        let json_len = serde_json::to_string(&many).map(|s| s.len()).unwrap_or(0);
        assert!(json_len > 10_000, "groups JSON is {json_len} bytes");
        assert_eq!(
            find("alice").map(|u| u.group_names()),
            Some(vec!["admins".to_owned(), "staff".to_owned()])
        );
        assert!(find("Alice").is_none());
    }
}
