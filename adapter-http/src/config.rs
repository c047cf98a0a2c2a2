//! Settings in layers: the command line over `PREFIX_*` environment variables over a TOML file
//! (`--config FILE`) over the built-in defaults, for `otkv-server` and `harness proxy` alike.
//!
//! Every option has a key in the file, named as the option without its dashes (`max-memory = "512MiB"`,
//! `bind = "0.0.0.0"`), and an environment variable (`OTKV_MAX_MEMORY`). The file's values become the
//! options' defaults, and clap's own `env` and command line sit above them, so one precedence holds
//! everywhere and every value is checked by the option's own parser: a value that would be refused on the
//! command line is refused in the file, with the file, line and key.
//!
//! Why not a `serde` struct for the file: it would repeat every option's name, type, default and parser,
//! and drift from the command line. Here the command line is the schema.
//!
//! On SIGHUP the server calls `reload`: the file is read again, what can change live is applied (the log
//! filter, `log-level`; the token file is re-read by the front door itself) and every other change is
//! logged as waiting for a restart.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// Options that are not settings: they have no key in the file and no environment variable.
const NOT_SETTINGS: [&str; 4] = ["help", "version", "config", "print-config"];

/// Options whose change takes effect on SIGHUP; every other change waits for a restart.
const LIVE: [&str; 1] = ["log-level"];

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}: not valid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where.
        line: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// A key that names no option.
    #[error("{}:{line}: unknown key `{key}`{hint}", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// Where.
        line: usize,
        /// The key.
        key: String,
        /// A suggestion, when one option's name is close.
        hint: String,
    },
    /// A value of the wrong type, or one the option's parser refuses.
    #[error("{}:{line}: `{key}`: {message}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// Where.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// One key of a configuration file.
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    /// As the option's parser reads them from a command line (an array gives several).
    values: Vec<String>,
}

/// A configuration file, read and checked against a command's options.
#[derive(Debug, Clone)]
struct ConfigFile {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
}

impl ConfigFile {
    /// Reads `path` (TOML: `key = value` lines, no sections).
    fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let table = toml::de::DeTable::parse(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: e.span().map_or(1, |s| line_of(s.start)),
            message: e.message().trim().to_string(),
        })?;
        let mut entries = BTreeMap::new();
        for (key, value) in table.get_ref() {
            let line = line_of(key.span().start);
            let bad = |message: String| ConfigError::BadValue {
                path: path.to_path_buf(),
                line,
                key: key.get_ref().to_string(),
                message,
            };
            let values = match value.get_ref().as_array() {
                Some(items) => {
                    items.iter().map(|v| scalar(v.get_ref()).map_err(&bad)).collect::<Result<_, _>>()?
                }
                None => vec![scalar(value.get_ref()).map_err(&bad)?],
            };
            entries.insert(key.get_ref().to_string(), Entry { line, values });
        }
        Ok(ConfigFile { path: path.to_path_buf(), entries })
    }
}

/// A TOML value as command-line text: strings as they are, numbers in decimal, booleans as `true` or
/// `false`. Tables and dates name no option's value.
fn scalar(value: &toml::de::DeValue<'_>) -> Result<String, String> {
    if let Some(s) = value.as_str() {
        return Ok(s.to_string());
    }
    if let Some(n) = value.as_integer() {
        let text = n.as_str().replace('_', "");
        let digits = ["0x", "0o", "0b"].iter().find_map(|p| text.strip_prefix(p)).unwrap_or(&text);
        return i64::from_str_radix(digits, n.radix()).map(|n| n.to_string()).map_err(|e| format!("{e}"));
    }
    if let Some(b) = value.as_bool() {
        return Ok(b.to_string());
    }
    if let Some(f) = value.as_float() {
        return Ok(f.as_str().to_string());
    }
    Err(format!(
        "a {} is not a value of any option (write a string, a number or true/false)",
        value.type_str()
    ))
}

/// The environment variable of option `long` under `prefix` (`OTKV_` + `max-memory` = `OTKV_MAX_MEMORY`).
fn env_name(prefix: &str, long: &str) -> String {
    format!("{prefix}{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// `cmd` with `--config FILE` and `--print-config`, an environment variable for every option, and the
/// file's values as the options' defaults. Refuses a key that names no option and a value the option's
/// own parser refuses.
fn layer(cmd: Command, prefix: &str, file: Option<&ConfigFile>) -> Result<Command, ConfigError> {
    let mut cmd = cmd;
    if let Some(file) = file {
        cmd = with_file(cmd, file)?;
    }
    Ok(cmd
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .env(env_name(prefix, "config"))
                .help("Read settings from this TOML file: one key per option, named as the option (`max-memory = \"512MiB\"`); options and environment variables override it"),
        )
        .arg(
            Arg::new("print-config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .help("Print the settings in force, each with where it came from, and exit"),
        )
        .mut_args(|arg| match arg.get_long().map(str::to_string) {
            Some(long) if !NOT_SETTINGS.contains(&long.as_str()) => arg.env(env_name(prefix, &long)),
            _ => arg,
        }))
}

/// `cmd` with `file`'s values as its options' defaults, once they pass the options' own checks: each
/// value its parser, and together the rules between options (one that requires another, two that
/// conflict), exactly as the same values on a command line would.
fn with_file(mut cmd: Command, file: &ConfigFile) -> Result<Command, ConfigError> {
    // Checked on a built copy; the defaults go on the unbuilt command, to which more options are added.
    let mut probe = cmd.clone();
    probe.build();
    let mut trial: Vec<OsString> = vec![probe.get_name().into()];
    let mut defaults = Vec::new();
    for (key, entry) in &file.entries {
        let bad = |message: String| ConfigError::BadValue {
            path: file.path.clone(),
            line: entry.line,
            key: key.clone(),
            message,
        };
        let arg = probe
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !NOT_SETTINGS.contains(&key.as_str()))
            .ok_or_else(|| ConfigError::UnknownKey {
                path: file.path.clone(),
                line: entry.line,
                key: key.clone(),
                hint: closest(&probe, key).map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default(),
            })?;
        let flag = matches!(arg.get_action(), ArgAction::SetTrue);
        if entry.values.len() != 1 && !matches!(arg.get_action(), ArgAction::Append) {
            return Err(bad("takes one value, not a list".into()));
        }
        if flag && !matches!(entry.values[0].as_str(), "true" | "false") {
            return Err(bad(format!("`{}`: write true or false", entry.values[0])));
        }
        for value in &entry.values {
            if flag {
                if value == "true" {
                    trial.push(format!("--{key}").into());
                }
            } else {
                trial.push(format!("--{key}={value}").into());
            }
        }
        defaults.push((arg.get_id().clone(), entry.values.clone()));
    }
    if let Err(e) = probe.clone().try_get_matches_from(trial) {
        let key = e
            .get(clap::error::ContextKind::InvalidArg)
            .map(ToString::to_string)
            .and_then(|arg| {
                arg.strip_prefix("--").map(|a| a.split([' ', '=']).next().unwrap_or(a).to_string())
            })
            .filter(|k| file.entries.contains_key(k))
            // A rule between options (`tls-cert` requires `tls-key`) names the missing one: point at
            // the file's key it mentions instead.
            .or_else(|| {
                let said = e.render().to_string();
                file.entries.keys().find(|k| said.contains(&format!("--{k} "))).cloned()
            })
            .or_else(|| file.entries.keys().next().cloned());
        let line = key.as_ref().and_then(|k| file.entries.get(k)).map_or(1, |e| e.line);
        return Err(ConfigError::BadValue {
            path: file.path.clone(),
            line,
            key: key.unwrap_or_default(),
            message: clap_reason(&e),
        });
    }
    for (id, values) in defaults {
        cmd = cmd.mut_arg(id, |a| a.default_values(values));
    }
    Ok(cmd)
}

/// What clap says is wrong, on one line, without its `error:` prefix and usage lines.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let said: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    said.join(" ").trim_start_matches("error: ").to_string()
}

/// The option name closest to `key`, if one is close (a typo, or underscores for dashes).
fn closest(cmd: &Command, key: &str) -> Option<String> {
    let wanted = key.replace('_', "-");
    cmd.get_arguments()
        .filter_map(Arg::get_long)
        .filter(|l| !NOT_SETTINGS.contains(l))
        .map(|l| (distance(&wanted, l), l))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, l)| l.to_string())
}

/// Levenshtein distance, for suggestions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// The path given by `--config FILE`, `--config=FILE` or the environment, from raw arguments (before the
/// options are parsed: the file's values are needed to parse them).
fn config_path(args: &[OsString], prefix: &str) -> Option<PathBuf> {
    let mut given = None;
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == "--config" {
            given = it.next().map(PathBuf::from);
        } else if let Some(path) = text.strip_prefix("--config=") {
            given = Some(PathBuf::from(path));
        }
    }
    given.or_else(|| std::env::var_os(env_name(prefix, "config")).map(PathBuf::from))
}

/// Parses `args` with `cmd` layered over the file `--config` names (or, for `harness proxy`, over the file
/// its subcommand's `--config` names). Returns the matches of the layered command or subcommand, which
/// [`Parsed::remember`] and [`Parsed::describe`] take.
fn parse(cmd: Command, sub: Option<&str>, prefix: &str, args: Vec<OsString>) -> Result<Parsed, ParseError> {
    let base = cmd.clone();
    let in_sub = sub.is_none_or(|s| args.get(1).is_some_and(|a| a == s));
    let file = match config_path(&args, prefix).filter(|_| in_sub) {
        Some(path) => Some(ConfigFile::read(&path)?),
        None => None,
    };
    let cmd = match sub {
        None => layer(cmd, prefix, file.as_ref())?,
        Some(name) => match cmd.find_subcommand(name).cloned() {
            Some(sc) => {
                let layered = layer(sc, prefix, file.as_ref())?;
                cmd.mut_subcommand(name, |_| layered)
            }
            None => cmd,
        },
    };
    let matches = cmd.clone().try_get_matches_from(args.clone()).map_err(ParseError::Clap)?;
    Ok(Parsed { base, args, cmd, matches, file, sub: sub.map(str::to_string), prefix: prefix.to_string() })
}

/// A program's own command line, layered over its environment and file; on `--print-config` prints the
/// settings and returns `Err(0)`; on a bad configuration prints the reason as `PROGRAM: ...` and returns
/// `Err(2)`; on a bad command line lets clap print and exit, as it always does.
pub fn parse_command_line(
    cmd: Command,
    sub: Option<&str>,
    prefix: &str,
    program: &str,
) -> Result<Parsed, u8> {
    let parsed = match parse(cmd, sub, prefix, std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(ParseError::Clap(e)) => e.exit(),
        Err(ParseError::Config(e)) => {
            eprintln!("{program}: {e}");
            return Err(2);
        }
    };
    if parsed.print_config() {
        print!("{}", parsed.describe());
        return Err(0);
    }
    Ok(parsed)
}

/// Why a command line could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line or the environment (clap prints and exits with its own status).
    #[error(transparent)]
    Clap(clap::Error),
}

/// A command line parsed over its environment and configuration file.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The command before layering, and the arguments, to parse again on SIGHUP.
    base: Command,
    args: Vec<OsString>,
    cmd: Command,
    /// All of the matches (the subcommand's are inside).
    pub matches: ArgMatches,
    file: Option<ConfigFile>,
    sub: Option<String>,
    prefix: String,
}

impl Parsed {
    /// The layered command's own matches (the subcommand's, for `harness proxy`).
    fn own(&self) -> Option<(&Command, &ArgMatches)> {
        match &self.sub {
            None => Some((&self.cmd, &self.matches)),
            Some(name) => {
                let (sub, matches) = self.matches.subcommand()?;
                (sub == name).then_some(())?;
                Some((self.cmd.find_subcommand(name)?, matches))
            }
        }
    }

    /// Whether `--print-config` was given.
    pub fn print_config(&self) -> bool {
        self.own().is_some_and(|(_, m)| m.get_flag("print-config"))
    }

    /// The settings in force, as a configuration file with where each came from (`--print-config`).
    pub fn describe(&self) -> String {
        let Some((cmd, matches)) = self.own() else { return String::new() };
        let mut out = format!(
            "# {}: the settings in force. Precedence: command line, then {}* environment variables, then {}, then defaults.\n",
            cmd.get_name(),
            self.prefix,
            self.file.as_ref().map_or_else(|| "--config FILE (none given)".to_string(), |f| f.path.display().to_string()),
        );
        for (long, values, source) in settings(cmd, matches, self.file.as_ref(), &self.prefix) {
            match values {
                None => {
                    let _ = writeln!(out, "# {long} = (not set)");
                }
                Some(values) => {
                    let _ = writeln!(out, "{long} = {}  # {source}", toml_value(&values));
                }
            }
        }
        out
    }

    /// Keeps what is in force, so that a SIGHUP can tell what a re-read file changes.
    pub fn remember(&self) {
        let Some((cmd, matches)) = self.own() else { return };
        let in_force = settings(cmd, matches, self.file.as_ref(), &self.prefix);
        let _ = RELOAD.set(Mutex::new(Remembered { parsed: self.clone(), in_force }));
    }
}

/// One setting: its option, its values (`None`: not set), and where they came from.
type Setting = (String, Option<Vec<String>>, String);

fn settings(cmd: &Command, matches: &ArgMatches, file: Option<&ConfigFile>, prefix: &str) -> Vec<Setting> {
    let mut out = Vec::new();
    // In the order the options are declared (giving an option a default moves it last in `cmd`).
    let mut args: Vec<&Arg> = cmd.get_arguments().collect();
    args.sort_by_key(|a| a.get_display_order());
    for arg in args {
        let Some(long) = arg.get_long() else { continue };
        if NOT_SETTINGS.contains(&long) || arg.is_hide_set() {
            continue;
        }
        let id = arg.get_id().as_str();
        let values: Option<Vec<String>> =
            matches.get_raw(id).map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect());
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => format!("--{long}"),
            Some(ValueSource::EnvVariable) => env_name(prefix, long),
            Some(ValueSource::DefaultValue) => match file.and_then(|f| f.entries.get(long).map(|e| (f, e))) {
                Some((f, e)) => format!("{}:{}", f.path.display(), e.line),
                None => "default".to_string(),
            },
            _ => "default".to_string(),
        };
        out.push((long.to_string(), values, source));
    }
    out
}

/// A TOML rendering of an option's values: numbers and booleans bare, the rest quoted.
fn toml_value(values: &[String]) -> String {
    let one = |v: &String| {
        if v == "true" || v == "false" || (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())) {
            v.clone()
        } else {
            toml::Value::String(v.clone()).to_string()
        }
    };
    match values {
        [v] => one(v),
        many => format!("[{}]", many.iter().map(one).collect::<Vec<_>>().join(", ")),
    }
}

struct Remembered {
    parsed: Parsed,
    in_force: Vec<Setting>,
}

static RELOAD: OnceLock<Mutex<Remembered>> = OnceLock::new();

/// On SIGHUP: reads the configuration file again and applies what can change live; logs every other
/// change as waiting for a restart. A file that does not read or check changes nothing.
pub(crate) fn reload() {
    let Some(remembered) = RELOAD.get() else { return };
    let mut remembered = remembered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let old = &remembered.parsed;
    if old.file.is_none() {
        tracing::info!("SIGHUP: no --config file to re-read");
        return;
    }
    // The same arguments and environment over the file as it is now.
    let parsed = match parse(old.base.clone(), old.sub.as_deref(), &old.prefix, old.args.clone()) {
        Ok(parsed) => parsed,
        Err(e) => {
            let e = match e {
                ParseError::Config(e) => e.to_string(),
                ParseError::Clap(e) => clap_reason(&e),
            };
            tracing::error!(error = %e, "SIGHUP: configuration not re-read; the settings in force stay");
            return;
        }
    };
    let Some((cmd, matches)) = parsed.own() else { return };
    let now = settings(cmd, matches, parsed.file.as_ref(), &parsed.prefix);
    let mut in_force = remembered.in_force.clone();
    let shown = |v: &Option<Vec<String>>| v.as_deref().map_or_else(|| "(not set)".to_string(), toml_value);
    for (setting, new) in in_force.iter_mut().zip(&now) {
        if setting.1 == new.1 {
            continue;
        }
        let key = setting.0.clone();
        if !LIVE.contains(&key.as_str()) {
            tracing::warn!(
                key,
                in_force = %shown(&setting.1),
                in_file = %shown(&new.1),
                "SIGHUP: this setting changes only on a restart"
            );
            continue;
        }
        let applied = match new.1.as_deref() {
            Some([filter]) => crate::logging::set_filter(filter),
            _ => Err("one value expected".to_string()),
        };
        match applied {
            Ok(()) => {
                tracing::info!(key, value = %shown(&new.1), "SIGHUP: setting applied");
                *setting = new.clone();
            }
            Err(e) => tracing::error!(key, error = %e, "SIGHUP: setting not applied"),
        }
    }
    remembered.in_force = in_force;
}
