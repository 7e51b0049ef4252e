//! Access policy: whether a signed-in caller may pass, decided from their claims alone.
//!
//! What it owns: the rules of `[access]` and of a route's `allowed_groups`, compiled once per
//! configuration, and their evaluation. What it does not own: where the claims come from (a session
//! or a bearer token: both are [`Claims`]), what the client is told (a [`Denial`] becomes a 403 in
//! `error`), or when the decision is made (the `authorize` phase, on every request; the `[access]`
//! verdict is kept with the opened session under the configuration it was made with).
//!
//! Why it is shaped so: pure functions over a claims view, so every rule is a unit test. All kinds of
//! rules that are set must pass (AND); within a kind, one match is enough (OR). A claim that is missing
//! denies; one of the wrong shape (a number where a list of strings is expected) denies too, and the
//! denial says it was malformed so the caller can log it louder: it usually means a provider mapping
//! is wrong, not that the user is.
//!
//! Emails compare without regard to ASCII case only: Unicode case folding maps distinct characters
//! together (the Kelvin sign folds to `k`), which must not make two addresses one.

use std::fmt;

use serde_json::Value;

use crate::config::AccessConfig;
use crate::session::{Claim, Claims};

/// Why a caller was refused: the rule (its configuration key) and what failed, for the log. Never
/// shown to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The configuration key of the rule that failed, e.g. `access.allowed_email_domains`.
    pub rule: String,
    /// What failed, naming claims but not their values.
    pub reason: String,
    /// The claim was present but not of a shape the rule can read.
    pub malformed: bool,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.reason)
    }
}

/// The outcome of a check: `Ok` passes.
pub type Verdict = Result<(), Denial>;

fn deny(rule: &str, reason: impl Into<String>) -> Denial {
    Denial {
        rule: rule.to_string(),
        reason: reason.into(),
        malformed: false,
    }
}

fn malformed(rule: &str, reason: impl Into<String>) -> Denial {
    Denial {
        rule: rule.to_string(),
        reason: reason.into(),
        malformed: true,
    }
}

/// The email rule: an address or a domain, and `email_verified` unless switched off.
#[derive(Debug, Clone)]
struct EmailRule {
    /// Lower-case (ASCII) addresses.
    emails: Vec<String>,
    /// Lower-case (ASCII) domains.
    domains: Vec<String>,
    require_verified: bool,
}

/// A groups rule: the groups claim shares one of these.
#[derive(Debug, Clone)]
pub struct GroupRule {
    /// The configuration key, for the denial.
    key: String,
    groups: Vec<String>,
}

impl GroupRule {
    pub fn new(key: impl Into<String>, groups: Vec<String>) -> GroupRule {
        GroupRule {
            key: key.into(),
            groups,
        }
    }
}

/// One `claims` entry: the claim (name or dotted path) and the values it may take.
#[derive(Debug, Clone)]
struct ClaimRule {
    key: String,
    path: String,
    accepted: Vec<Value>,
}

/// `[access]`, compiled.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    email: Option<EmailRule>,
    groups: Option<GroupRule>,
    claims: Vec<ClaimRule>,
    groups_claim: String,
}

impl AccessPolicy {
    pub fn new(config: &AccessConfig) -> AccessPolicy {
        let email = (!config.allowed_emails.is_empty() || !config.allowed_email_domains.is_empty())
            .then(|| EmailRule {
                emails: config.allowed_emails.clone(),
                domains: config.allowed_email_domains.clone(),
                require_verified: config.require_email_verified,
            });
        let groups = (!config.allowed_groups.is_empty())
            .then(|| GroupRule::new("access.allowed_groups", config.allowed_groups.clone()));
        let claims = config
            .claims
            .iter()
            .map(|(path, accepted)| ClaimRule {
                key: format!("access.claims.{path}"),
                path: path.clone(),
                accepted: accepted.clone(),
            })
            .collect();
        AccessPolicy {
            email,
            groups,
            claims,
            groups_claim: config.groups_claim.clone(),
        }
    }

    /// Whether any rule is set (without one, everybody signed in passes).
    pub fn is_open(&self) -> bool {
        self.email.is_none() && self.groups.is_none() && self.claims.is_empty()
    }

    /// Where the groups are (`access.groups_claim`): also what a route's groups and the assertion's
    /// `groups` read.
    pub fn groups_claim(&self) -> &str {
        &self.groups_claim
    }

    /// Every rule of `[access]`, in the order email, groups, claims; the first that fails decides.
    pub fn check(&self, claims: &Claims) -> Verdict {
        if let Some(rule) = &self.email {
            check_email(rule, claims)?;
        }
        if let Some(rule) = &self.groups {
            self.check_groups(rule, claims)?;
        }
        for rule in &self.claims {
            check_claim(rule, claims)?;
        }
        Ok(())
    }

    /// A groups rule (a route's `allowed_groups`) against the groups claim.
    pub fn check_groups(&self, rule: &GroupRule, claims: &Claims) -> Verdict {
        let name = &self.groups_claim;
        let Some(value) = claims.lookup(name) else {
            return Err(deny(&rule.key, format!("no {name:?} claim")));
        };
        let shares = |g: &str| rule.groups.iter().any(|allowed| allowed == g);
        match value {
            Claim::String(g) => {
                if shares(g) {
                    Ok(())
                } else {
                    Err(deny(
                        &rule.key,
                        format!("{name:?} names none of its groups"),
                    ))
                }
            }
            Claim::Array(items) => {
                let mut found = false;
                for item in items {
                    match item {
                        Claim::String(g) => found = found || shares(g),
                        _ => {
                            return Err(malformed(
                                &rule.key,
                                format!("{name:?} holds something other than strings"),
                            ))
                        }
                    }
                }
                if found {
                    Ok(())
                } else {
                    Err(deny(
                        &rule.key,
                        format!("{name:?} names none of its groups"),
                    ))
                }
            }
            _ => Err(malformed(
                &rule.key,
                format!("{name:?} is not a string or a list of strings"),
            )),
        }
    }

    /// The groups of these claims as a list (for the assertion): a string is one group, a list of
    /// strings is the groups, anything else none.
    pub fn groups(&self, claims: &Claims) -> Vec<String> {
        match claims.lookup(&self.groups_claim) {
            Some(Claim::String(g)) => vec![g.to_string()],
            Some(Claim::Array(items)) => items
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn check_email(rule: &EmailRule, claims: &Claims) -> Verdict {
    let emails = "access.allowed_emails";
    let domains = "access.allowed_email_domains";
    let key = match (rule.emails.is_empty(), rule.domains.is_empty()) {
        (false, true) => emails,
        (true, false) => domains,
        _ => "access.allowed_emails/allowed_email_domains",
    };
    let email = match claims.get("email") {
        None | Some(Claim::Null) => return Err(deny(key, "no email claim")),
        Some(Claim::String(e)) => e,
        Some(_) => return Err(malformed(key, "the email claim is not a string")),
    };
    let domain = match email.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => domain,
        _ => return Err(malformed(key, "the email claim is not an address")),
    };
    let listed = rule.emails.iter().any(|e| e.eq_ignore_ascii_case(email));
    let in_domain = rule.domains.iter().any(|d| d.eq_ignore_ascii_case(domain));
    if !listed && !in_domain {
        return Err(deny(key, "the email is not allowed"));
    }
    if rule.require_verified {
        let key = "access.require_email_verified";
        match claims.get("email_verified") {
            Some(Claim::Bool(true)) => {}
            Some(Claim::Bool(false)) => return Err(deny(key, "the email is not verified")),
            None | Some(Claim::Null) => return Err(deny(key, "no email_verified claim")),
            Some(_) => return Err(malformed(key, "email_verified is not a boolean")),
        }
    }
    Ok(())
}

fn check_claim(rule: &ClaimRule, claims: &Claims) -> Verdict {
    let name = &rule.path;
    let value = match claims.lookup(name) {
        None | Some(Claim::Null) => return Err(deny(&rule.key, format!("no {name:?} claim"))),
        Some(v) => v,
    };
    let matches = |c: &Claim<'_>| rule.accepted.iter().any(|a| same_value(c, a));
    let found = match &value {
        Claim::String(_) | Claim::Number(_) | Claim::Bool(_) => matches(&value),
        Claim::Array(items) => {
            let mut found = false;
            for item in items.clone() {
                match item {
                    Claim::String(_) | Claim::Number(_) | Claim::Bool(_) => {
                        found = found || matches(&item)
                    }
                    _ => {
                        return Err(malformed(
                            &rule.key,
                            format!(
                                "{name:?} holds something other than strings, numbers or booleans"
                            ),
                        ))
                    }
                }
            }
            found
        }
        _ => {
            return Err(malformed(
                &rule.key,
                format!("{name:?} is an object or null"),
            ))
        }
    };
    if found {
        Ok(())
    } else {
        Err(deny(
            &rule.key,
            format!("{name:?} has none of the accepted values"),
        ))
    }
}

/// Equal values of the same JSON type: `"3"` is not `3`, while `3` and `3.0` are the same number.
fn same_value(claim: &Claim<'_>, accepted: &Value) -> bool {
    match (claim, accepted) {
        (Claim::String(a), Value::String(b)) => *a == b,
        (Claim::Bool(a), Value::Bool(b)) => a == b,
        (Claim::Number(a), Value::Number(b)) => same_number(a, b),
        _ => false,
    }
}

fn same_number(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    let int = |n: &serde_json::Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x == y,
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

/// Who a denied caller is signed in as, for the 403 page: the email, else the preferred username,
/// else the name, else the subject.
pub fn signed_in_as(claims: &Claims) -> String {
    ["email", "preferred_username", "name", "sub"]
        .iter()
        .find_map(|c| {
            claims
                .get(c)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("an unnamed account")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        Claims::new(v.as_object().unwrap()).unwrap()
    }

    fn policy(f: impl FnOnce(&mut AccessConfig)) -> AccessPolicy {
        let mut c = AccessConfig::default();
        f(&mut c);
        AccessPolicy::new(&c)
    }

    fn rule_of(v: Verdict) -> String {
        v.expect_err("denied").rule
    }

    #[test]
    fn no_rule_lets_everybody_signed_in_pass() {
        let p = policy(|_| {});
        assert!(p.is_open());
        assert_eq!(p.check(&claims(json!({"sub": "u"}))), Ok(()));
    }

    #[test]
    fn email_domains_match_exactly_without_regard_to_case() {
        let p = policy(|c| c.allowed_email_domains = vec!["example.com".into()]);
        let ok = |e: &str| p.check(&claims(json!({"email": e, "email_verified": true})));
        assert_eq!(ok("Jane.Doe@EXAMPLE.Com"), Ok(()));
        assert_eq!(ok("a@example.com"), Ok(()));
        // The domain is what follows the last `@`.
        assert_eq!(ok("\"x@evil.org\"@example.com"), Ok(()));
        for bad in [
            "a@sub.example.com",
            "a@example.com.evil.org",
            "a@notexample.com",
            "example.com@evil.org",
            "a@example.com.",
            "a@exampl\u{212a}.com",
        ] {
            assert_eq!(
                rule_of(ok(bad)),
                "access.allowed_email_domains",
                "{bad} must not pass"
            );
        }
        for malformed_email in ["no-at-sign", "@example.com", "a@"] {
            let d = ok(malformed_email).unwrap_err();
            assert!(d.malformed, "{malformed_email}");
        }
        let d = p
            .check(&claims(json!({"email": 3, "email_verified": true})))
            .unwrap_err();
        assert!(d.malformed);
        let d = p.check(&claims(json!({"sub": "u"}))).unwrap_err();
        assert!(!d.malformed && d.reason.contains("no email"), "{d}");
    }

    #[test]
    fn exact_emails_and_domains_together_and_verification() {
        let p = policy(|c| {
            c.allowed_emails = vec!["ops@example.org".into()];
            c.allowed_email_domains = vec!["example.com".into()];
        });
        let check = |v: Value| p.check(&claims(v));
        assert_eq!(
            check(json!({"email": "OPS@example.org", "email_verified": true})),
            Ok(())
        );
        assert_eq!(
            check(json!({"email": "x@example.com", "email_verified": true})),
            Ok(())
        );
        assert!(check(json!({"email": "dev@example.org", "email_verified": true})).is_err());
        assert_eq!(
            rule_of(check(
                json!({"email": "ops@example.org", "email_verified": false})
            )),
            "access.require_email_verified"
        );
        assert_eq!(
            rule_of(check(json!({"email": "ops@example.org"}))),
            "access.require_email_verified"
        );
        let d = check(json!({"email": "ops@example.org", "email_verified": "true"})).unwrap_err();
        assert!(
            d.malformed && d.rule == "access.require_email_verified",
            "{d}"
        );

        let lax = policy(|c| {
            c.allowed_emails = vec!["ops@example.org".into()];
            c.require_email_verified = false;
        });
        assert_eq!(
            lax.check(&claims(
                json!({"email": "ops@example.org", "email_verified": false})
            )),
            Ok(())
        );
    }

    #[test]
    fn groups_as_string_array_or_nested_path() {
        let p = policy(|c| c.allowed_groups = vec!["admins".into(), "ops".into()]);
        let check = |v: Value| p.check(&claims(v));
        assert_eq!(check(json!({"groups": ["staff", "ops"]})), Ok(()));
        assert_eq!(check(json!({"groups": "admins"})), Ok(()));
        assert_eq!(
            rule_of(check(json!({"groups": ["staff"]}))),
            "access.allowed_groups"
        );
        assert_eq!(
            rule_of(check(json!({"groups": []}))),
            "access.allowed_groups"
        );
        assert_eq!(rule_of(check(json!({"sub": "u"}))), "access.allowed_groups");
        assert!(
            check(json!({"groups": ["admins", 3]}))
                .unwrap_err()
                .malformed
        );
        assert!(
            check(json!({"groups": {"admins": true}}))
                .unwrap_err()
                .malformed
        );
        // Case matters for group names.
        assert!(check(json!({"groups": ["Admins"]})).is_err());

        let nested = policy(|c| {
            c.allowed_groups = vec!["admin".into()];
            c.groups_claim = "realm_access.roles".into();
        });
        assert_eq!(
            nested.check(&claims(
                json!({"realm_access": {"roles": ["user", "admin"]}})
            )),
            Ok(())
        );
        assert!(nested
            .check(&claims(json!({"realm_access": {"roles": ["user"]}})))
            .is_err());
        assert!(nested.check(&claims(json!({"groups": ["admin"]}))).is_err());
        assert_eq!(
            nested.groups(&claims(
                json!({"realm_access": {"roles": ["user", "admin"]}})
            )),
            vec!["user", "admin"]
        );
    }

    #[test]
    fn claims_match_only_values_of_the_same_type() {
        let p = policy(|c| {
            c.claims = vec![
                ("level".into(), vec![json!(3), json!(4)]),
                ("mfa".into(), vec![json!(true)]),
                ("org.unit".into(), vec![json!("ops")]),
            ]
        });
        let check = |v: Value| p.check(&claims(v));
        let good = json!({"level": 3, "mfa": true, "org": {"unit": "ops"}});
        assert_eq!(check(good), Ok(()));
        assert_eq!(
            check(json!({"level": 4.0, "mfa": true, "org.unit": ["dev", "ops"]})),
            Ok(())
        );
        for (bad, rule) in [
            (
                json!({"level": "3", "mfa": true, "org": {"unit": "ops"}}),
                "access.claims.level",
            ),
            (
                json!({"level": 5, "mfa": true, "org": {"unit": "ops"}}),
                "access.claims.level",
            ),
            (
                json!({"level": 3, "mfa": "true", "org": {"unit": "ops"}}),
                "access.claims.mfa",
            ),
            (
                json!({"level": 3, "mfa": false, "org": {"unit": "ops"}}),
                "access.claims.mfa",
            ),
            (
                json!({"level": 3, "org": {"unit": "ops"}}),
                "access.claims.mfa",
            ),
            (
                json!({"level": 3, "mfa": true, "org": {"unit": "dev"}}),
                "access.claims.org.unit",
            ),
            (
                json!({"level": null, "mfa": true, "org": {"unit": "ops"}}),
                "access.claims.level",
            ),
        ] {
            assert_eq!(rule_of(check(bad.clone())), rule, "{bad}");
        }
        let d = check(json!({"level": {"x": 3}, "mfa": true, "org": {"unit": "ops"}})).unwrap_err();
        assert!(d.malformed);
        let d = check(json!({"level": [3, [4]], "mfa": true, "org": {"unit": "ops"}})).unwrap_err();
        assert!(d.malformed);
    }

    #[test]
    fn every_kind_that_is_set_must_pass() {
        let p = policy(|c| {
            c.allowed_email_domains = vec!["example.com".into()];
            c.allowed_groups = vec!["admins".into()];
            c.claims = vec![("level".into(), vec![json!(3)])];
        });
        let all = json!({"email": "a@example.com", "email_verified": true, "groups": ["admins"], "level": 3});
        assert_eq!(p.check(&claims(all.clone())), Ok(()));
        for (drop, rule) in [
            ("email", "access.allowed_email_domains"),
            ("groups", "access.allowed_groups"),
            ("level", "access.claims.level"),
        ] {
            let mut v = all.clone();
            v.as_object_mut().unwrap().remove(drop);
            assert_eq!(rule_of(p.check(&claims(v))), rule);
        }
    }

    #[test]
    fn route_groups_use_the_groups_claim() {
        let p = policy(|c| c.groups_claim = "roles".into());
        let rule = GroupRule::new("routes[2].allowed_groups", vec!["ops".into()]);
        assert_eq!(
            p.check_groups(&rule, &claims(json!({"roles": ["ops"]}))),
            Ok(())
        );
        let d = p
            .check_groups(&rule, &claims(json!({"groups": ["ops"]})))
            .unwrap_err();
        assert_eq!(d.rule, "routes[2].allowed_groups");
    }

    #[test]
    fn who_is_signed_in() {
        assert_eq!(
            signed_in_as(&claims(json!({"sub": "u", "email": "a@b"}))),
            "a@b"
        );
        assert_eq!(
            signed_in_as(&claims(json!({"sub": "u", "preferred_username": "al"}))),
            "al"
        );
        assert_eq!(signed_in_as(&claims(json!({"sub": "u"}))), "u");
    }
}
