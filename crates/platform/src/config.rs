//! Layered configuration: environment (`FLOWFORGE_*`) over an optional TOML file
//! (`FLOWFORGE_CONFIG_FILE`) over profile defaults. Any key may instead be given as
//! `FLOWFORGE_<KEY>_FILE`, naming a file that holds the value (how secrets arrive).
//!
//! Reading never stops at the first problem: every lookup records what is wrong and
//! [`Source::finish`] reports all of them in one message, so a bad deployment fails
//! fast with the whole list instead of one error per restart.

use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

const PREFIX: &str = "FLOWFORGE_";

/// Deployment profile; selects defaults and how strict validation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Staging,
    Prod,
}

impl Profile {
    pub fn is_dev(self) -> bool {
        self == Profile::Dev
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dev" | "development" => Ok(Profile::Dev),
            "staging" => Ok(Profile::Staging),
            "prod" | "production" => Ok(Profile::Prod),
            other => Err(format!("unknown profile {other:?} (expected dev, staging or prod)")),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Dev => "dev",
            Profile::Staging => "staging",
            Profile::Prod => "prod",
        })
    }
}

/// A value that must never be printed (`Debug` shows a placeholder) and is zeroed in
/// memory when dropped (`secrecy`).
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(Secret::new(s))
        }
    }
}

/// Every problem found while reading the configuration.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problem(s)):", self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A duration written like `250ms`, `30s`, `5m`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s)
            .map(HumanDuration)
            .map_err(|e| format!("{e} (write durations like 250ms, 30s, 5m, 7d)"))
    }
}

/// Where settings come from, plus the problems found so far.
pub struct Source {
    env: BTreeMap<String, String>,
    file: BTreeMap<String, String>,
    problems: Vec<String>,
    profile: Profile,
}

impl Source {
    /// Reads the process environment and, if `FLOWFORGE_CONFIG_FILE` is set, that TOML file.
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    /// Builds a source from explicit variables (the environment, or a test's own).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let env: BTreeMap<String, String> =
            vars.into_iter().filter_map(|(k, v)| k.strip_prefix(PREFIX).map(|k| (k.to_owned(), v))).collect();
        let mut source = Source { env, file: BTreeMap::new(), problems: Vec::new(), profile: Profile::Dev };
        if let Some(path) = source.env.get("CONFIG_FILE").cloned() {
            match std::fs::read_to_string(&path) {
                Ok(text) => match text.parse::<toml::Table>() {
                    Ok(table) => {
                        for (k, v) in table {
                            let value = match v {
                                toml::Value::String(s) => s,
                                other => other.to_string(),
                            };
                            source.file.insert(k.to_ascii_uppercase(), value);
                        }
                    }
                    Err(e) => source.problems.push(format!("{PREFIX}CONFIG_FILE {path}: not valid TOML: {e}")),
                },
                Err(e) => source.problems.push(format!("{PREFIX}CONFIG_FILE {path}: cannot read: {e}")),
            }
        }
        // Unset means prod: a deployment that forgets the profile gets the safe defaults
        // (required secrets, TLS to the database, the SSRF guard) rather than dev's.
        source.profile = source.parse_or("PROFILE", Profile::Prod);
        source
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The raw text of `key`: `FLOWFORGE_KEY`, else the file named by `FLOWFORGE_KEY_FILE`,
    /// else the TOML file. Setting both the value and the `_FILE` form is a problem.
    fn raw(&mut self, key: &str) -> Option<String> {
        let direct = self.env.get(key).cloned();
        let file_key = format!("{key}_FILE");
        match (direct, self.env.get(&file_key).cloned()) {
            (Some(_), Some(_)) => {
                self.problems.push(format!("{PREFIX}{key} and {PREFIX}{file_key} are both set; set only one"));
                None
            }
            (Some(v), None) => Some(v),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                // Secret files usually end with a newline that is not part of the value.
                Ok(v) => Some(v.trim_end_matches(['\n', '\r']).to_owned()),
                Err(e) => {
                    self.problems.push(format!("{PREFIX}{file_key}: cannot read {path}: {e}"));
                    None
                }
            },
            (None, None) => self.file.get(key).cloned(),
        }
    }

    fn parse<T: FromStr>(&mut self, key: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        let text = self.raw(key)?;
        match text.trim().parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.problems.push(format!("{PREFIX}{key}: {e}"));
                None
            }
        }
    }

    /// An optional setting with a default.
    pub fn parse_or<T: FromStr>(&mut self, key: &str, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        self.parse(key).unwrap_or(default)
    }

    /// An optional text setting, trimmed; set to nothing is the same as unset (`None`).
    pub fn optional(&mut self, key: &str) -> Option<String> {
        self.parse::<String>(key).filter(|v| !v.is_empty())
    }

    /// An optional setting whose default depends on the profile: `dev_default` in dev,
    /// and required (no default) in staging and prod.
    pub fn parse_dev_default<T: FromStr>(&mut self, key: &str, what: &str, dev_default: impl FnOnce() -> T) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        match self.parse(key) {
            Some(v) => Some(v),
            None if self.profile.is_dev() && !self.has(key) => Some(dev_default()),
            None => {
                if !self.has(key) {
                    self.require_problem(key, what);
                }
                None
            }
        }
    }

    /// A required setting; records a problem naming `what` it is for when missing.
    pub fn required<T: FromStr>(&mut self, key: &str, what: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        if !self.has(key) {
            self.require_problem(key, what);
            return None;
        }
        self.parse(key)
    }

    /// A duration setting (`30s`, `5m`) with a default.
    pub fn duration_or(&mut self, key: &str, default: Duration) -> Duration {
        self.parse::<HumanDuration>(key).map(|d| d.0).unwrap_or(default)
    }

    /// Records a problem found by the caller's own validation.
    pub fn problem(&mut self, message: impl Into<String>) {
        self.problems.push(message.into());
    }

    fn has(&self, key: &str) -> bool {
        self.env.contains_key(key) || self.env.contains_key(&format!("{key}_FILE")) || self.file.contains_key(key)
    }

    fn require_problem(&mut self, key: &str, what: &str) {
        self.problems.push(format!("{PREFIX}{key} (or {PREFIX}{key}_FILE) is required: {what}"));
    }

    /// Ends reading: `Err` lists every problem recorded.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems: self.problems })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(pairs: &[(&str, &str)]) -> Source {
        Source::from_vars(pairs.iter().map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string())))
    }

    #[test]
    fn collects_every_problem_in_one_error() {
        let mut s = source(&[("PROFILE", "prod"), ("PORT", "eighty"), ("LEASE", "soon")]);
        let _: Option<u16> = s.required("PORT", "listen port");
        let _ = s.duration_or("LEASE", Duration::from_secs(1));
        let _: Option<String> = s.required("DATABASE_URL", "PostgreSQL connection string");
        let err = s.finish().unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        let text = err.to_string();
        assert!(text.contains("FLOWFORGE_PORT"), "{text}");
        assert!(text.contains("FLOWFORGE_LEASE"), "{text}");
        assert!(text.contains("FLOWFORGE_DATABASE_URL"), "{text}");
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = std::env::temp_dir().join(format!("ff-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db_password");
        std::fs::write(&path, "s3cret\n").unwrap();
        let mut s = source(&[("DB_PASSWORD_FILE", path.to_str().unwrap())]);
        let secret: Secret = s.required("DB_PASSWORD", "database password").unwrap();
        assert_eq!(secret.expose(), "s3cret");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        s.finish().unwrap();
    }

    #[test]
    fn value_and_file_form_together_is_a_problem() {
        let mut s = source(&[("TOKEN", "a"), ("TOKEN_FILE", "/nonexistent")]);
        let _: Option<Secret> = s.required("TOKEN", "token");
        assert!(s.finish().unwrap_err().to_string().contains("both set"));
    }

    #[test]
    fn dev_profile_supplies_defaults_that_prod_requires() {
        assert_eq!(source(&[]).profile(), Profile::Prod, "without a profile the safe one");
        let mut dev = source(&[("PROFILE", "dev")]);
        assert_eq!(
            dev.parse_dev_default("DATABASE_URL", "db", || "postgres://localhost".to_string()).as_deref(),
            Some("postgres://localhost")
        );
        dev.finish().unwrap();
        let mut prod = source(&[("PROFILE", "prod")]);
        assert!(prod.parse_dev_default("DATABASE_URL", "db", || "postgres://localhost".to_string()).is_none());
        assert!(prod.finish().is_err());
    }

    #[test]
    fn toml_file_is_read_below_environment() {
        let dir = std::env::temp_dir().join(format!("ff-config-toml-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flowforge.toml");
        std::fs::write(&path, "port = 9000\nworker_concurrency = 7\n").unwrap();
        let mut s = source(&[("CONFIG_FILE", path.to_str().unwrap()), ("PORT", "9100")]);
        assert_eq!(s.parse_or("PORT", 0u16), 9100);
        assert_eq!(s.parse_or("WORKER_CONCURRENCY", 0u32), 7);
        s.finish().unwrap();
    }
}
