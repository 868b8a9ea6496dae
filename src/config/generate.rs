//! `switchyard genconfig`: the shipped `config.toml`, comments and all, with fresh random
//! secrets, so that a new node (a `.deb` install, `scripts/install.sh`) never runs with the
//! published example ones.
//!
//! The template is edited line by line rather than parsed and re-serialised, so the operator
//! gets the same commented file as the repository's. Every key replaced must be there exactly
//! once (a renamed key fails here, not silently in production), and the result must pass the
//! same validation as `serve --check-config`.

use rand::TryRngCore;

use super::{Config, ConfigError};

/// The shipped configuration, the template (`config.toml` at the repository root).
pub const SHIPPED: &str = include_str!("../../config.toml");

/// The keys given random values: (section, key, bytes of randomness). 32 bytes (256 bits) for
/// the HS256 secret, RFC 7518's minimum for HS256; 24 bytes (192 bits) for the API keys.
pub const SECRETS: &[(&str, &str, usize)] = &[
    ("auth", "token_hmac_secret", 32),
    ("auth", "api_key", 24),
    ("admin", "api_key", 24),
];

/// The template's warning about its example secrets, replaced by [`GENERATED_NOTE`].
const EXAMPLE_NOTE: &str = "# !!! Example secrets";
/// What a generated file says in place of the example-secrets warning.
const GENERATED_NOTE: &str =
    "# Random secrets made by `switchyard genconfig` for this node: keep this file private.";

/// Why a configuration could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The template lacks a key to replace, or has it more than once.
    #[error("the config template has {found} `{key} = …` lines in [{section}], not one")]
    Template {
        /// The `[section]`.
        section: String,
        /// The key.
        key: String,
        /// How many lines set it.
        found: usize,
    },
    /// The operating system's random source failed.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    /// The result does not validate (a bad `--data-dir`, or a template out of step).
    #[error("the generated configuration does not validate: {0}")]
    Invalid(#[from] ConfigError),
}

/// The shipped configuration with random [`SECRETS`] from the operating system's CSPRNG
/// (getrandom), and `node.data_dir` set to `data_dir` when given; validated.
pub fn generate(data_dir: Option<&str>) -> Result<String, GenerateError> {
    let mut values = Vec::new();
    for &(section, key, bytes) in SECRETS {
        values.push((section, key, random_hex(bytes)?));
    }
    if let Some(dir) = data_dir {
        values.push(("node", "data_dir", dir.to_string()));
    }
    let text = render(SHIPPED, &values)?;
    Config::from_toml(&text)?;
    Ok(text)
}

/// `bytes` random bytes from the operating system, as lowercase hex.
fn random_hex(bytes: usize) -> Result<String, GenerateError> {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng
        .try_fill_bytes(&mut buf)
        .map_err(|e| GenerateError::Random(e.to_string()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// `template` with the line `key = …` of each `(section, key, value)` set to the string
/// `value`, and the example-secrets warning replaced. Each key must appear exactly once in its
/// section (commented-out lines do not count).
pub fn render(template: &str, values: &[(&str, &str, String)]) -> Result<String, GenerateError> {
    let mut found = vec![0usize; values.len()];
    let mut section = "";
    let mut out = String::with_capacity(template.len() + 256);
    for line in template.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[') {
            section = name.trim_matches(|c| c == '[' || c == ']');
        }
        let key = trimmed.split('=').next().unwrap_or("").trim();
        let hit = values
            .iter()
            .position(|(s, k, _)| *s == section && *k == key && trimmed.contains('='));
        match hit {
            Some(i) => {
                found[i] += 1;
                // A JSON string is a valid TOML basic string (same escapes).
                let quoted = serde_json::to_string(&values[i].2).expect("a string");
                out.push_str(&format!("{key} = {quoted}"));
            }
            None if trimmed.starts_with(EXAMPLE_NOTE) => out.push_str(GENERATED_NOTE),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for (i, &n) in found.iter().enumerate() {
        if n != 1 {
            return Err(GenerateError::Template {
                section: values[i].0.into(),
                key: values[i].1.into(),
                found: n,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every secret is replaced, with hex of the stated length, and nothing else changes.
    #[test]
    fn secrets_are_replaced_and_the_rest_kept() {
        let text = generate(Some("/var/lib/switchyard")).unwrap();
        let cfg = Config::from_toml(&text).unwrap();
        assert_eq!(cfg.auth.token_hmac_secret.len(), 64);
        assert_eq!(cfg.auth.api_key.len(), 48);
        assert_eq!(cfg.admin.api_key.len(), 48);
        assert!(
            cfg.auth
                .token_hmac_secret
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        );
        assert_ne!(cfg.auth.api_key, cfg.admin.api_key);
        assert_eq!(cfg.node.data_dir.to_str(), Some("/var/lib/switchyard"));
        assert!(!text.contains("change-me"), "an example secret is left");
        assert!(!text.contains(EXAMPLE_NOTE), "the example warning is left");
        assert!(text.contains(GENERATED_NOTE));
        let changed = SHIPPED
            .lines()
            .zip(text.lines())
            .filter(|(a, b)| a != b)
            .count();
        // Three secrets, the data directory, the note.
        assert_eq!(changed, 5);
        assert_eq!(SHIPPED.lines().count(), text.lines().count());
    }

    /// A key missing from the template, or set twice, is an error, not a silent no-op.
    #[test]
    fn a_template_without_the_key_is_refused() {
        let v = [("auth", "api_key", "k".to_string())];
        let err = render("[auth]\n# api_key = \"x\"\n", &v).unwrap_err();
        assert!(
            matches!(err, GenerateError::Template { found: 0, .. }),
            "{err}"
        );
        let err = render("[auth]\napi_key = 1\napi_key = 2\n", &v).unwrap_err();
        assert!(
            matches!(err, GenerateError::Template { found: 2, .. }),
            "{err}"
        );
        // The same key in another section is not it.
        let err = render("[admin]\napi_key = \"\"\n", &v).unwrap_err();
        assert!(
            matches!(err, GenerateError::Template { found: 0, .. }),
            "{err}"
        );
        let ok = render("[auth]\napi_key = \"old\"\n", &v).unwrap();
        assert_eq!(ok, "[auth]\napi_key = \"k\"\n");
    }
}
