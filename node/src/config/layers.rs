//! The three layers an option's value can come from (flags, then `SKEIN_*` environment
//! variables, then the TOML file), read as strings or TOML values and parsed here, one
//! option at a time: a bad value is recorded with the option's name and where it came
//! from, and loading goes on, so that every error is reported at once. Each value read
//! is remembered with its source for `--check-config`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;

use super::options::{find, Opt, OPTIONS};

/// A value as given: text from a flag or the environment, or a TOML value from the file.
enum Raw {
    Text(Vec<String>),
    Toml(toml::Value),
}

pub struct Layers {
    matches: ArgMatches,
    file: toml::Table,
    file_path: Option<PathBuf>,
    errors: Vec<String>,
    /// Effective values of the options read so far, with where each came from.
    effective: HashMap<&'static str, (toml::Value, String)>,
}

impl Layers {
    pub fn new(matches: ArgMatches) -> Layers {
        let mut l = Layers {
            matches,
            file: toml::Table::new(),
            file_path: None,
            errors: Vec::new(),
            effective: HashMap::new(),
        };
        if let Some(path) = l.text("config").and_then(|mut v| v.pop()) {
            let path = PathBuf::from(path);
            l.read_file(&path);
            l.record("config", toml::Value::String(path.display().to_string()));
            l.file_path = Some(path);
        }
        l
    }

    fn read_file(&mut self, path: &Path) {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                return self
                    .errors
                    .push(format!("cannot read config file {}: {e}", path.display()))
            }
        };
        match toml::from_str::<toml::Table>(&text) {
            Ok(t) => self.file = t,
            Err(e) => {
                let e = e.to_string();
                return self.errors.push(format!(
                    "invalid config file {}: {}",
                    path.display(),
                    e.trim_end()
                ));
            }
        }
        for key in self.file.keys() {
            match find(key) {
                Some(o) if o.name != "config" => {}
                Some(_) => self.errors.push(format!(
                    "config file {}: `config` cannot be set inside a config file",
                    path.display()
                )),
                None => self.errors.push(format!(
                    "config file {}: unknown field `{key}` (skein --help lists the options; file keys use underscores)",
                    path.display()
                )),
            }
        }
    }

    /// Where `name` would be read from, as an operator would write it.
    fn source(&self, name: &str) -> Option<String> {
        let o = find(name)?;
        match self.matches.value_source(name) {
            Some(ValueSource::CommandLine) => Some(o.flag()),
            Some(ValueSource::EnvVariable) => Some(o.env()),
            _ if self.file.contains_key(name) => Some(match &self.file_path {
                Some(p) => format!("file {}", p.display()),
                None => "file".to_owned(),
            }),
            _ => None,
        }
    }

    fn text(&self, name: &str) -> Option<Vec<String>> {
        match self.matches.value_source(name) {
            Some(ValueSource::CommandLine | ValueSource::EnvVariable) => self
                .matches
                .get_many::<String>(name)
                .map(|v| v.cloned().collect()),
            _ => None,
        }
    }

    fn raw(&self, name: &str) -> Option<Raw> {
        self.text(name)
            .map(Raw::Text)
            .or_else(|| self.file.get(name).cloned().map(Raw::Toml))
    }

    /// Reads `name`, converting a text with `text` or a file value with `toml`; a value
    /// that does not convert is an error that says what was `expected`.
    fn get<T>(
        &mut self,
        name: &'static str,
        expected: &str,
        text: impl Fn(&str) -> Option<T>,
        toml: impl Fn(&toml::Value) -> Option<T>,
        show: impl Fn(&T) -> toml::Value,
    ) -> Option<T> {
        let raw = self.raw(name)?;
        let (parsed, given) = match &raw {
            Raw::Text(v) => {
                let s = v.join(",");
                (text(s.trim()), format!("'{s}'"))
            }
            Raw::Toml(v) => (toml(v), v.to_string()),
        };
        match parsed {
            Some(v) => {
                self.record(name, show(&v));
                Some(v)
            }
            None => {
                let from = self.source(name).unwrap_or_default();
                self.errors.push(format!(
                    "{name}: invalid value {given} (from {from}): expected {expected}"
                ));
                None
            }
        }
    }

    fn record(&mut self, name: &'static str, v: toml::Value) {
        let from = self.source(name).unwrap_or_else(|| "default".to_owned());
        self.effective.insert(name, (v, from));
    }

    /// Shows `v` as the effective value of `name` (a default, or a value derived from
    /// other options), unless a value was read for it.
    pub fn default(&mut self, name: &'static str, v: impl Into<toml::Value>) {
        self.effective
            .entry(name)
            .or_insert_with(|| (v.into(), "default".to_owned()));
    }

    /// Replaces the shown value of `name` by the one the node will really use.
    pub fn derived(&mut self, name: &'static str, v: impl Into<toml::Value>, why: &str) {
        let from = match self.source(name) {
            Some(from) => format!("{from}; {why}"),
            None => why.to_owned(),
        };
        self.effective.insert(name, (v.into(), from));
    }

    /// Records an error about `name` (`msg` starts with the option's name), with where
    /// the value came from.
    pub fn error(&mut self, name: &str, msg: impl std::fmt::Display) {
        match self.source(name) {
            Some(from) => self.errors.push(format!("{msg} (from {from})")),
            None => self.errors.push(msg.to_string()),
        }
    }

    pub fn string(&mut self, name: &'static str) -> Option<String> {
        self.get(
            name,
            "a string",
            |s| Some(s.to_owned()),
            |v| v.as_str().map(str::to_owned),
            |v| toml::Value::String(v.clone()),
        )
    }

    pub fn path(&mut self, name: &'static str) -> Option<PathBuf> {
        self.string(name).map(PathBuf::from)
    }

    /// A whole number from 0 to `max`.
    fn int(&mut self, name: &'static str, max: u64) -> Option<u64> {
        let expected = if max >= i64::MAX as u64 {
            "a whole number".to_owned()
        } else {
            format!("a whole number from 0 to {max}")
        };
        self.get(
            name,
            &expected,
            |s| s.parse::<u64>().ok().filter(|v| *v <= max),
            |v| {
                v.as_integer()
                    .and_then(|i| u64::try_from(i).ok())
                    .filter(|v| *v <= max)
            },
            |v| toml::Value::Integer(i64::try_from(*v).unwrap_or(i64::MAX)),
        )
    }

    pub fn u16(&mut self, name: &'static str) -> Option<u16> {
        self.int(name, u16::MAX.into()).map(|v| v as u16)
    }

    pub fn u64(&mut self, name: &'static str) -> Option<u64> {
        self.int(name, i64::MAX as u64)
    }

    pub fn usize(&mut self, name: &'static str) -> Option<usize> {
        self.int(name, u32::MAX.into()).map(|v| v as usize)
    }

    pub fn bool(&mut self, name: &'static str) -> Option<bool> {
        self.get(
            name,
            "true or false",
            |s| match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            },
            toml::Value::as_bool,
            |v| toml::Value::Boolean(*v),
        )
    }

    pub fn list(&mut self, name: &'static str) -> Option<Vec<String>> {
        let raw = self.raw(name)?;
        let v = match raw {
            Raw::Text(v) => Some(v),
            Raw::Toml(v) => v.as_array().and_then(|a| {
                a.iter()
                    .map(|x| x.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            }),
        };
        let v = v.map(|v| {
            v.into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        });
        match v {
            Some(v) => {
                let shown = v.iter().cloned().map(toml::Value::String).collect();
                self.record(name, toml::Value::Array(shown));
                Some(v)
            }
            None => {
                let from = self.source(name).unwrap_or_default();
                self.errors.push(format!(
                    "{name}: invalid value (from {from}): expected an array of strings"
                ));
                None
            }
        }
    }

    /// The errors, or the effective configuration as TOML, secrets redacted.
    pub fn finish(self) -> Result<String, Vec<String>> {
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        let mut out = String::from(
            "# skein --check-config: the configuration is valid.\n\
             # Effective values; each comment says where the value comes from.\n",
        );
        for o in OPTIONS {
            match self.effective.get(o.name) {
                Some((v, from)) => {
                    let v = if o.secret { redact(o, v) } else { v.clone() };
                    out.push_str(&format!("{} = {v}  # {from}\n", o.name));
                }
                None => match self.source(o.name) {
                    Some(from) => out.push_str(&format!(
                        "# {}: given ({from}) but not used with the other options\n",
                        o.name
                    )),
                    None => out.push_str(&format!("# {}: not set\n", o.name)),
                },
            }
        }
        Ok(out)
    }
}

/// Secrets as `--check-config` shows them: tokens hidden one by one (their count
/// stays visible), and only the password of a URL.
fn redact(o: &Opt, v: &toml::Value) -> toml::Value {
    const HIDDEN: &str = "<redacted>";
    match v {
        toml::Value::Array(a) if o.name == "nats_url" => toml::Value::Array(
            a.iter()
                .map(|u| redact_url_password(u.as_str().unwrap_or_default()).into())
                .collect(),
        ),
        toml::Value::Array(a) => {
            toml::Value::Array(a.iter().map(|_| HIDDEN.to_owned().into()).collect())
        }
        toml::Value::String(s) if o.name == "redis_url" => redact_url_password(s).into(),
        _ => HIDDEN.to_owned().into(),
    }
}

fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => format!("{scheme}://<redacted>@{host}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_password_of_a_url_is_hidden() {
        assert_eq!(
            super::redact_url_password("redis://:s3cret@redis:6379/0"),
            "redis://:<redacted>@redis:6379/0"
        );
        assert_eq!(
            super::redact_url_password("rediss://app:pw@a@host:6380"),
            "rediss://app:<redacted>@host:6380"
        );
        assert_eq!(
            super::redact_url_password("redis://redis:6379"),
            "redis://redis:6379"
        );
    }
}
