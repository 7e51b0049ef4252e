//! The environment as configuration: `PORTCULLIS_<SECTION>__<KEY>=value` overrides `section.key`.
//!
//! Only that shape is configuration. Kubernetes injects `PORTCULLIS_PORT=tcp://10.0.0.1:4180`,
//! `PORTCULLIS_SERVICE_HOST` and the like into every pod of a namespace with a Service named
//! `portcullis`; they have no `__` and are ignored, so the gateway starts there. A variable of the right
//! shape naming an unknown section or key is refused later by the schema, naming the variable (the
//! returned origins map each key path to the variable that set it).

use std::collections::BTreeMap;

use super::{ConfigError, Result, ENV_PREFIX};

/// Which environment variable set each key path (`oidc.client_secret` -> `PORTCULLIS_OIDC__CLIENT_SECRET`).
pub(super) type Origins = BTreeMap<String, String>;

/// Merge the configuration variables of `env` into the table. `true`/`false` become booleans, values
/// that read as a TOML array or table (starting with `[` or `{`) are one, anything else is a string,
/// so a secret that happens to look like a number stays a string.
pub(super) fn apply(table: &mut toml::Table, env: &BTreeMap<String, String>) -> Result<Origins> {
    let mut origins = Origins::new();
    for (name, value) in env {
        let Some((section, key)) = name
            .strip_prefix(ENV_PREFIX)
            .and_then(|rest| rest.split_once("__"))
        else {
            continue;
        };
        if section.is_empty() || key.is_empty() {
            return Err(ConfigError::new(
                name.as_str(),
                "expected PORTCULLIS_<SECTION>__<KEY> with a section and a key",
            ));
        }
        let section = section.to_ascii_lowercase();
        if section == "routes" {
            return Err(ConfigError::new(
                "routes",
                format!("{name}: routes cannot be set from the environment"),
            ));
        }
        // Header names use `_` for `-`; the two switches of [headers] keep their own spelling.
        let key = if section == "headers"
            && !key.eq_ignore_ascii_case("pass_access_token")
            && !key.eq_ignore_ascii_case("pass_id_token")
        {
            key.replace('_', "-")
        } else {
            key.to_ascii_lowercase()
        };
        let path = format!("{section}.{key}");
        let parsed = match value.trim() {
            "true" => toml::Value::Boolean(true),
            "false" => toml::Value::Boolean(false),
            // A value that reads as a TOML array or table is one; anything else stays a string, so
            // an IPv6 listen address (`[::]:4180`) or a secret that starts with a bracket is kept as
            // written.
            v if v.starts_with('[') || v.starts_with('{') => format!("v = {v}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut doc| doc.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.clone())),
            _ => toml::Value::String(value.clone()),
        };
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(sec) = entry else {
            return Err(ConfigError::new(
                section,
                format!("{name}: the file sets this section to something other than a table"),
            ));
        };
        sec.insert(key, parsed);
        origins.insert(path, name.clone());
        origins.entry(section).or_insert_with(|| name.clone());
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_the_section_key_shape_is_configuration() {
        let mut table = toml::Table::new();
        let origins = apply(
            &mut table,
            &env(&[
                ("PORTCULLIS_PORT", "tcp://10.0.0.1:4180"),
                ("PORTCULLIS_PORT_4180_TCP_ADDR", "10.0.0.1"),
                ("PORTCULLIS_SERVICE_HOST", "10.0.0.1"),
                ("PORTCULLIS_SERVICE_PORT", "4180"),
                ("PORTCULLISX__Y", "1"),
                ("OTHER__KEY", "1"),
                ("PORTCULLIS_UPSTREAM__TIMEOUT", "5s"),
            ]),
        )
        .unwrap();
        assert_eq!(table.len(), 1, "{table:?}");
        assert_eq!(table["upstream"]["timeout"].as_str(), Some("5s"));
        assert_eq!(
            origins.get("upstream.timeout").map(String::as_str),
            Some("PORTCULLIS_UPSTREAM__TIMEOUT")
        );
    }

    #[test]
    fn routes_cannot_come_from_the_environment() {
        let mut table = toml::Table::new();
        let e = apply(&mut table, &env(&[("PORTCULLIS_ROUTES__PATH", "^/")])).unwrap_err();
        assert_eq!(e.key, "routes");
        assert!(e.message.contains("PORTCULLIS_ROUTES__PATH"), "{e}");
    }

    #[test]
    fn brackets_make_an_array_only_when_the_value_is_one() {
        let mut table = toml::Table::new();
        apply(
            &mut table,
            &env(&[
                ("PORTCULLIS_SERVER__LISTEN", "[::]:4180"),
                ("PORTCULLIS_OIDC__CLIENT_SECRET", "{not toml"),
                ("PORTCULLIS_OIDC__SCOPES", "[\"openid\", \"email\"]"),
            ]),
        )
        .unwrap();
        assert_eq!(table["server"]["listen"].as_str(), Some("[::]:4180"));
        assert_eq!(table["oidc"]["client_secret"].as_str(), Some("{not toml"));
        let scopes = table["oidc"]["scopes"].as_array().expect("an array");
        assert_eq!(scopes.len(), 2);
        assert_eq!(scopes[1].as_str(), Some("email"));
    }
}
