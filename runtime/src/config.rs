//! Settings of a predictor: code beats environment, environment beats defaults.
//!
//! Every field of [`Config`] left `None` is taken from its `OUTPOST_*` environment
//! variable, and failing that from the default. `docs/configuration.md` lists them.

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::package::manifest::Precision;

/// Which backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// The best backend this build and device have, falling back to `cpu`.
    #[default]
    Auto,
    /// tract on the CPU.
    Cpu,
    /// wgpu compute shaders.
    Gpu,
    /// Rockchip NPU.
    Npu,
}

impl BackendKind {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Cpu => "cpu",
            BackendKind::Gpu => "gpu",
            BackendKind::Npu => "npu",
        }
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendKind::Auto),
            "cpu" => Ok(BackendKind::Cpu),
            "gpu" => Ok(BackendKind::Gpu),
            "npu" => Ok(BackendKind::Npu),
            _ => Err("expected auto, cpu, gpu or npu".into()),
        }
    }
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Only failures.
    Error,
    /// Failures and warnings.
    #[default]
    Warn,
    /// Plus one line per notable step (package opened, backend chosen).
    Info,
    /// Plus per-inference detail.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// Lowercase name, usable as a `tracing` filter.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err("expected error, warn, info, debug or trace".into()),
        }
    }
}

/// What the caller sets in code. `None` means "environment, then default".
///
/// Model-level settings (`threads`, `backend`, `threshold`, `top_k`, `serial`)
/// apply to the predictor built with this config; global settings (`license_dir`,
/// `log_level`, `trusted_keys`) describe the device and are usually the same for
/// every predictor of a process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// CPU threads for one inference (`OUTPOST_THREADS`; default: available cores, at most 8).
    pub threads: Option<usize>,
    /// Backend (`OUTPOST_BACKEND`: auto, cpu, gpu, npu; default auto).
    pub backend: Option<BackendKind>,
    /// Model precision to run: fp32, int8 (`OUTPOST_PRECISION`; default: the package's).
    pub precision: Option<Precision>,
    /// Score threshold 0..1 (`OUTPOST_THRESHOLD`; default: the package's recommendation).
    pub threshold: Option<f32>,
    /// Most results per image (`OUTPOST_TOP_K`; default: the package's decoder).
    pub top_k: Option<usize>,
    /// Serial number for activation (`OUTPOST_SERIAL`; default: empty, reuse a stored licence).
    pub serial: Option<String>,
    /// Where licences are stored (`OUTPOST_LICENSE_DIR`; default `~/.outpost/licenses`).
    pub license_dir: Option<PathBuf>,
    /// The app's Android package name or iOS bundle id, which product-line licences
    /// bind to (`OUTPOST_APP_ID`; default: none, as for a device that is not an app).
    pub app_id: Option<String>,
    /// Activation server URL (`OUTPOST_LICENSE_SERVER`; default: the package's own).
    pub license_server: Option<String>,
    /// Log level (`OUTPOST_LOG_LEVEL`; default warn).
    pub log_level: Option<LogLevel>,
    /// Public keys or key directories trusted to sign packages
    /// (`OUTPOST_TRUSTED_KEYS`, a `:`-separated path list; no default).
    pub trusted_keys: Option<Vec<PathBuf>>,
}

/// The settings in force after merging code, environment and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// CPU threads for one inference.
    pub threads: usize,
    /// Backend.
    pub backend: BackendKind,
    /// Precision, or the package's default when `None`.
    pub precision: Option<Precision>,
    /// Score threshold, or the package's own when `None`.
    pub threshold: Option<f32>,
    /// Most results per image, or the package's own when `None`.
    pub top_k: Option<usize>,
    /// Serial number; `None` reuses a stored licence.
    pub serial: Option<String>,
    /// Licence directory.
    pub license_dir: PathBuf,
    /// App package name or bundle id, for product-line licences.
    pub app_id: Option<String>,
    /// Activation server, or the package's own when `None`.
    pub license_server: Option<String>,
    /// Log level.
    pub log_level: LogLevel,
    /// Trusted signing keys.
    pub trusted_keys: Vec<PathBuf>,
}

/// Most threads accepted; more is always a mistake on the devices we target.
const MAX_THREADS: usize = 256;

impl Config {
    /// Merges with the process environment and the defaults.
    pub fn resolve(&self) -> Result<Settings> {
        self.resolve_with(|name| std::env::var(name).ok())
    }

    /// Merges with an explicit environment (for tests and embedders).
    pub fn resolve_with(&self, env: impl Fn(&str) -> Option<String>) -> Result<Settings> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let threads = pick(self.threads, &var, "OUTPOST_THREADS")?.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get().min(8))
                .unwrap_or(1)
        });
        if threads == 0 || threads > MAX_THREADS {
            return Err(Error::InvalidConfig(format!(
                "threads must be between 1 and {MAX_THREADS}, got {threads}"
            )));
        }
        let threshold = pick(self.threshold, &var, "OUTPOST_THRESHOLD")?;
        if let Some(t) = threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(Error::InvalidConfig(format!(
                    "threshold must be within 0..1, got {t}"
                )));
            }
        }
        let top_k = pick(self.top_k, &var, "OUTPOST_TOP_K")?;
        if top_k == Some(0) {
            return Err(Error::InvalidConfig("top_k must be at least 1".into()));
        }
        let license_dir = match self.license_dir.clone() {
            Some(dir) => dir,
            None => match var("OUTPOST_LICENSE_DIR") {
                Some(dir) => PathBuf::from(dir),
                None => env("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".outpost")
                    .join("licenses"),
            },
        };
        let trusted_keys = match self.trusted_keys.clone() {
            Some(keys) => keys,
            None => var("OUTPOST_TRUSTED_KEYS")
                .map(|v| std::env::split_paths(&v).collect())
                .unwrap_or_default(),
        };
        Ok(Settings {
            threads,
            backend: pick(self.backend, &var, "OUTPOST_BACKEND")?.unwrap_or_default(),
            precision: pick(self.precision, &var, "OUTPOST_PRECISION")?,
            threshold,
            top_k,
            serial: self
                .serial
                .clone()
                .or_else(|| var("OUTPOST_SERIAL"))
                .filter(|s| !s.trim().is_empty()),
            license_dir,
            app_id: self
                .app_id
                .clone()
                .or_else(|| var("OUTPOST_APP_ID"))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            license_server: self
                .license_server
                .clone()
                .or_else(|| var("OUTPOST_LICENSE_SERVER"))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            log_level: pick(self.log_level, &var, "OUTPOST_LOG_LEVEL")?.unwrap_or_default(),
            trusted_keys,
        })
    }
}

impl Config {
    /// The keys [`Config::set`] takes, one per field, as the bindings (C, Java,
    /// Swift) name them; each matches its `OUTPOST_*` variable without the prefix.
    pub const KEYS: [&'static str; 11] = [
        "threads",
        "backend",
        "precision",
        "threshold",
        "top_k",
        "serial",
        "license_dir",
        "app_id",
        "license_server",
        "log_level",
        "trusted_keys",
    ];

    /// Sets one field from its text form, as the bindings pass settings;
    /// `None` (or an empty value) unsets it, back to the environment and the
    /// default. `trusted_keys` is a path list split like `OUTPOST_TRUSTED_KEYS`.
    /// An unknown key or a value that does not parse is [`Error::InvalidConfig`].
    pub fn set(&mut self, key: &str, value: Option<&str>) -> Result<()> {
        let value = value.map(str::trim).filter(|v| !v.is_empty());
        fn parse<T: FromStr>(key: &str, value: Option<&str>) -> Result<Option<T>>
        where
            T::Err: std::fmt::Display,
        {
            value
                .map(|v| {
                    v.parse::<T>()
                        .map_err(|e| Error::InvalidConfig(format!("{key} = {v:?}: {e}")))
                })
                .transpose()
        }
        let text = value.map(str::to_string);
        match key {
            "threads" => self.threads = parse(key, value)?,
            "backend" => self.backend = parse(key, value)?,
            "precision" => self.precision = parse(key, value)?,
            "threshold" => self.threshold = parse(key, value)?,
            "top_k" => self.top_k = parse(key, value)?,
            "serial" => self.serial = text,
            "license_dir" => self.license_dir = text.map(PathBuf::from),
            "app_id" => self.app_id = text,
            "license_server" => self.license_server = text,
            "log_level" => self.log_level = parse(key, value)?,
            "trusted_keys" => self.trusted_keys = value.map(|v| std::env::split_paths(v).collect()),
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "unknown setting {key:?} (expected one of {})",
                    Config::KEYS.join(", ")
                )))
            }
        }
        Ok(())
    }
}

/// The code value if set, else the parsed environment variable, else `None`.
fn pick<T: FromStr>(
    code: Option<T>,
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    if code.is_some() {
        return Ok(code);
    }
    match var(name) {
        None => Ok(None),
        Some(raw) => raw
            .trim()
            .parse::<T>()
            .map(Some)
            .map_err(|e| Error::InvalidEnv {
                name: name.to_string(),
                reason: e.to_string(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_apply_without_code_or_environment() {
        let s = Config::default()
            .resolve_with(env(&[("HOME", "/home/u")]))
            .unwrap();
        assert!(s.threads >= 1);
        assert_eq!(s.backend, BackendKind::Auto);
        assert_eq!(s.threshold, None);
        assert_eq!(s.precision, None);
        assert_eq!(s.top_k, None);
        assert_eq!(s.serial, None);
        assert_eq!(s.app_id, None);
        assert_eq!(s.log_level, LogLevel::Warn);
        assert_eq!(s.license_dir, PathBuf::from("/home/u/.outpost/licenses"));
        assert!(s.trusted_keys.is_empty());
    }

    #[test]
    fn environment_beats_defaults_for_every_setting() {
        let s = Config::default()
            .resolve_with(env(&[
                ("OUTPOST_THREADS", "3"),
                ("OUTPOST_BACKEND", "CPU"),
                ("OUTPOST_PRECISION", "INT8"),
                ("OUTPOST_THRESHOLD", "0.4"),
                ("OUTPOST_TOP_K", "2"),
                ("OUTPOST_SERIAL", "ABCD-EFGH-JKLM-NPQR"),
                ("OUTPOST_LICENSE_DIR", "/var/lic"),
                ("OUTPOST_APP_ID", " com.acme.app "),
                ("OUTPOST_LICENSE_SERVER", "https://lic.acme.com"),
                ("OUTPOST_LOG_LEVEL", "debug"),
                ("OUTPOST_TRUSTED_KEYS", "/a/public.key:/b"),
            ]))
            .unwrap();
        assert_eq!(s.threads, 3);
        assert_eq!(s.backend, BackendKind::Cpu);
        assert_eq!(s.precision, Some(Precision::Int8));
        assert_eq!(s.threshold, Some(0.4));
        assert_eq!(s.top_k, Some(2));
        assert_eq!(s.serial.as_deref(), Some("ABCD-EFGH-JKLM-NPQR"));
        assert_eq!(s.app_id.as_deref(), Some("com.acme.app"));
        assert_eq!(s.license_server.as_deref(), Some("https://lic.acme.com"));
        assert_eq!(s.license_dir, PathBuf::from("/var/lic"));
        assert_eq!(s.log_level, LogLevel::Debug);
        assert_eq!(
            s.trusted_keys,
            vec![PathBuf::from("/a/public.key"), PathBuf::from("/b")]
        );
    }

    #[test]
    fn code_beats_environment() {
        let code = Config {
            threads: Some(1),
            backend: Some(BackendKind::Gpu),
            precision: Some(Precision::Fp32),
            threshold: Some(0.9),
            top_k: Some(7),
            serial: Some("code".into()),
            license_dir: Some("/code".into()),
            app_id: Some("com.code.app".into()),
            license_server: Some("http://code".into()),
            log_level: Some(LogLevel::Error),
            trusted_keys: Some(vec!["/code.key".into()]),
        };
        let s = code
            .resolve_with(env(&[
                ("OUTPOST_THREADS", "3"),
                ("OUTPOST_BACKEND", "cpu"),
                ("OUTPOST_PRECISION", "int8"),
                ("OUTPOST_THRESHOLD", "0.4"),
                ("OUTPOST_TOP_K", "2"),
                ("OUTPOST_SERIAL", "env"),
                ("OUTPOST_LICENSE_DIR", "/env"),
                ("OUTPOST_APP_ID", "com.env.app"),
                ("OUTPOST_LICENSE_SERVER", "http://env"),
                ("OUTPOST_LOG_LEVEL", "debug"),
                ("OUTPOST_TRUSTED_KEYS", "/env.key"),
            ]))
            .unwrap();
        assert_eq!(s.threads, 1);
        assert_eq!(s.backend, BackendKind::Gpu);
        assert_eq!(s.precision, Some(Precision::Fp32));
        assert_eq!(s.threshold, Some(0.9));
        assert_eq!(s.top_k, Some(7));
        assert_eq!(s.serial.as_deref(), Some("code"));
        assert_eq!(s.license_dir, PathBuf::from("/code"));
        assert_eq!(s.app_id.as_deref(), Some("com.code.app"));
        assert_eq!(s.license_server.as_deref(), Some("http://code"));
        assert_eq!(s.log_level, LogLevel::Error);
        assert_eq!(s.trusted_keys, vec![PathBuf::from("/code.key")]);
    }

    #[test]
    fn bad_values_are_config_errors_naming_the_variable() {
        for (k, v) in [
            ("OUTPOST_THREADS", "many"),
            ("OUTPOST_BACKEND", "tpu"),
            ("OUTPOST_PRECISION", "int4"),
            ("OUTPOST_THRESHOLD", "high"),
            ("OUTPOST_TOP_K", "-1"),
            ("OUTPOST_LOG_LEVEL", "loud"),
        ] {
            let err = Config::default().resolve_with(env(&[(k, v)])).unwrap_err();
            assert_eq!(err.code(), 1002, "{k}");
            assert!(err.to_string().contains(k), "{err}");
        }
        for (k, v) in [
            ("OUTPOST_THREADS", "0"),
            ("OUTPOST_THRESHOLD", "1.5"),
            ("OUTPOST_TOP_K", "0"),
        ] {
            let err = Config::default().resolve_with(env(&[(k, v)])).unwrap_err();
            assert_eq!(err.code(), 1001, "{k}");
        }
    }

    #[test]
    fn set_takes_every_key_and_refuses_bad_ones() {
        let mut c = Config::default();
        for (k, v) in [
            ("threads", "3"),
            ("backend", "cpu"),
            ("precision", "int8"),
            ("threshold", "0.5"),
            ("top_k", "4"),
            ("serial", "ABCD"),
            ("license_dir", "/lic"),
            ("app_id", "com.acme"),
            ("license_server", "http://s"),
            ("log_level", "debug"),
            ("trusted_keys", "/a.key:/b"),
        ] {
            c.set(k, Some(v)).unwrap();
        }
        assert_eq!(c.threads, Some(3));
        assert_eq!(c.backend, Some(BackendKind::Cpu));
        assert_eq!(c.precision, Some(Precision::Int8));
        assert_eq!(c.threshold, Some(0.5));
        assert_eq!(c.top_k, Some(4));
        assert_eq!(c.serial.as_deref(), Some("ABCD"));
        assert_eq!(c.license_dir, Some(PathBuf::from("/lic")));
        assert_eq!(c.app_id.as_deref(), Some("com.acme"));
        assert_eq!(c.license_server.as_deref(), Some("http://s"));
        assert_eq!(c.log_level, Some(LogLevel::Debug));
        assert_eq!(
            c.trusted_keys,
            Some(vec![PathBuf::from("/a.key"), PathBuf::from("/b")])
        );
        c.set("threads", None).unwrap();
        c.set("serial", Some("  ")).unwrap();
        assert_eq!((c.threads, c.serial.clone()), (None, None));
        for (k, v) in [("threads", "many"), ("backend", "tpu"), ("colour", "red")] {
            let err = c.set(k, Some(v)).unwrap_err();
            assert_eq!(err.code(), 1001, "{k}");
            assert!(err.to_string().contains(k), "{err}");
        }
        assert_eq!(Config::KEYS.len(), 11);
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let s = Config::default()
            .resolve_with(env(&[("OUTPOST_THREADS", ""), ("OUTPOST_SERIAL", " ")]))
            .unwrap();
        assert!(s.threads >= 1);
        assert_eq!(s.serial, None);
    }
}
