//! The environment a session's process starts with.
//!
//! The keeper starts every child with exactly the variables returned here
//! (nothing is inherited), so this module alone decides what a session sees.
//! The controller's own environment (its credentials, its tokens) does not
//! reach sessions, and through them their logs and crash dumps, unless the
//! operator passes a variable on purpose.
//!
//! In order, a later layer overriding an earlier one:
//!
//! 1. the base: `PATH`, `HOME`, `LANG`, `TZ` and `USER` from the controller's
//!    environment when set (`PATH` defaults to [`DEFAULT_PATH`]); when the
//!    session runs as another user (`spec.user`), that user's `HOME` and
//!    `USER`;
//! 2. the controller's variables named by `--pass-env` (names or `*` globs);
//! 3. each `spec.envFrom` file, read at every spawn (dotenv syntax, see
//!    [`parse_dotenv`]);
//! 4. `spec.env`;
//! 5. what sessionlet itself adds (an agent's settings).
//!
//! No value is ever put in an error message: problems name the file, the
//! line and the variable, never what it holds.

use std::collections::BTreeMap;
use std::path::Path;

use super::process::SpawnError;
use crate::api::SessionSpec;
use crate::core::Reason;

/// `PATH` of a session when the controller has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The controller's variables every session gets when set.
pub const BASE_VARS: &[&str] = &["PATH", "HOME", "LANG", "TZ", "USER"];

/// Largest `envFrom` file read (the manifest limit).
pub const MAX_ENV_FILE_BYTES: u64 = crate::manifest::codec::limits::MAX_FILE_BYTES as u64;

/// The whole environment of one attempt: the base, the operator's
/// `--pass-env` variables, `spec.envFrom` files, `spec.env`, then `extra`
/// (what sessionlet itself adds, such as an agent's settings).
///
/// `manifest_dir` is where relative `envFrom` paths resolve. A file that is
/// missing, unreadable, not a regular file or malformed fails the spawn with
/// a message naming the file (and the line), never a value.
pub fn build(
    spec: &SessionSpec,
    extra: Vec<(String, String)>,
    pass_env: &[String],
    manifest_dir: &Path,
) -> Result<Vec<(String, String)>, SpawnError> {
    let controller: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let mut env = base(&controller, spec.user.as_deref());
    env.extend(passed(&controller, pass_env));
    for (index, from) in spec.env_from.iter().enumerate() {
        let path = manifest_dir.join(&from.file);
        env.extend(read_env_file(&path, index)?);
    }
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(extra);
    Ok(env.into_iter().collect())
}

/// Layer 1: the base variables taken from `controller`, with `PATH`
/// defaulted, and `HOME`/`USER` of `user` when a session runs as another
/// user (only possible as root).
fn base(controller: &[(String, String)], user: Option<&str>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = controller
        .iter()
        .filter(|(k, _)| BASE_VARS.contains(&k.as_str()))
        .cloned()
        .collect();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    if let Some(name) = user.filter(|_| nix::unistd::geteuid().is_root()) {
        if let Ok(Some(u)) = nix::unistd::User::from_name(name) {
            env.insert("HOME".into(), u.dir.to_string_lossy().into_owned());
            env.insert("USER".into(), u.name);
        }
    }
    env
}

/// Layer 2: the controller's variables whose names match a `--pass-env`
/// pattern.
fn passed<'a>(
    controller: &'a [(String, String)],
    patterns: &'a [String],
) -> impl Iterator<Item = (String, String)> + 'a {
    controller
        .iter()
        .filter(|(k, _)| patterns.iter().any(|p| glob_match(p, k)))
        .cloned()
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters
/// (including none) and everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        // No `*`: an exact name.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Why a `--pass-env` pattern is refused, if it is.
pub fn check_pass_env_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("a --pass-env pattern cannot be empty".into());
    }
    if pattern.contains(['=', '\0']) {
        return Err(format!(
            "--pass-env takes a variable name or a glob such as 'AWS_*', not an assignment: {:?}",
            pattern.split('=').next().unwrap_or_default()
        ));
    }
    Ok(())
}

/// Reads one `envFrom` file (the `index`-th) into variables.
fn read_env_file(path: &Path, index: usize) -> Result<Vec<(String, String)>, SpawnError> {
    use crate::manifest::files::read_regular;
    let fail = |what: String| SpawnError {
        reason: Reason::SpawnFailed,
        message: format!("spec.envFrom[{index}]: {}: {what}", path.display()),
    };
    let bytes = read_regular(path, MAX_ENV_FILE_BYTES).map_err(|e| fail(e.to_string()))?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..valid]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            return Err(fail(format!("line {line}: not valid UTF-8 text")));
        }
    };
    parse_dotenv(&text).map_err(|e| fail(e.to_string()))
}

/// A malformed line of a dotenv file: its number and what is wrong, never
/// its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct DotenvError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, without the value.
    pub why: String,
}

/// Parses a dotenv file: one `NAME=VALUE` per line, an optional `export `
/// in front; blank lines and lines starting with `#` are skipped. A value is
/// taken as written (trimmed, a ` #` comment removed), or quoted: `'...'`
/// literally, `"..."` with the escapes `\n`, `\t`, `\\`, `\"` and `\$`. A
/// quoted value ends on its line. Names are letters, digits and `_`, not
/// starting with a digit.
pub fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>, DotenvError> {
    let mut vars = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |why: &str| DotenvError {
            line,
            why: why.to_string(),
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let body = trimmed
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(trimmed);
        let Some((name, value)) = body.split_once('=') else {
            return Err(err("expected NAME=VALUE"));
        };
        let name = name.trim_end();
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(err(
                "the variable name must be letters, digits and '_', not starting with a digit",
            ));
        }
        let value = parse_value(value.trim_start()).map_err(|why| DotenvError {
            line,
            why: format!("{name}: {why}"),
        })?;
        if value.contains('\0') {
            return Err(err(&format!("{name}: the value contains a NUL character")));
        }
        vars.push((name.to_string(), value));
    }
    Ok(vars)
}

/// The value part of a line (after `=`, leading blanks removed).
fn parse_value(v: &str) -> Result<String, &'static str> {
    let after_quote = |rest: &str| -> Result<(), &'static str> {
        let rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with('#') {
            Ok(())
        } else {
            Err("unexpected text after the closing quote")
        }
    };
    if let Some(inner) = v.strip_prefix('\'') {
        let end = inner
            .find('\'')
            .ok_or("the quoted value has no closing quote on its line")?;
        after_quote(&inner[end + 1..])?;
        return Ok(inner[..end].to_string());
    }
    if let Some(inner) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    after_quote(&inner[i + 1..])?;
                    return Ok(out);
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(c @ ('\\' | '"' | '$')) => out.push(c),
                    Some(_) => return Err("unknown escape; use \\n, \\t, \\\\, \\\" or \\$"),
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Err("the quoted value has no closing quote on its line");
    }
    let unquoted = match v.find(" #") {
        Some(i) => &v[..i],
        None => v,
    };
    Ok(unquoted.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_base_is_five_variables_with_a_default_path() {
        let controller = vars(&[
            ("HOME", "/home/op"),
            ("LANG", "C.UTF-8"),
            ("AWS_SECRET_ACCESS_KEY", "no"),
            ("TZ", "UTC"),
            ("USER", "op"),
            ("SHELL", "/bin/zsh"),
        ]);
        let env = base(&controller, None);
        assert_eq!(
            env.into_iter().collect::<Vec<_>>(),
            vars(&[
                ("HOME", "/home/op"),
                ("LANG", "C.UTF-8"),
                ("PATH", DEFAULT_PATH),
                ("TZ", "UTC"),
                ("USER", "op"),
            ])
        );
        let env = base(&vars(&[("PATH", "/opt/bin")]), None);
        assert_eq!(env["PATH"], "/opt/bin");
    }

    #[test]
    fn pass_env_takes_names_and_globs() {
        let controller = vars(&[
            ("AWS_REGION", "eu"),
            ("AWS_SECRET", "s"),
            ("MY_AWS", "m"),
            ("TOKEN", "t"),
            ("TOKENS", "ts"),
        ]);
        let names = |patterns: &[&str]| -> Vec<String> {
            let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
            passed(&controller, &patterns).map(|(k, _)| k).collect()
        };
        assert_eq!(names(&["TOKEN"]), ["TOKEN"]);
        assert_eq!(names(&["AWS_*"]), ["AWS_REGION", "AWS_SECRET"]);
        assert_eq!(names(&["*AWS*"]), ["AWS_REGION", "AWS_SECRET", "MY_AWS"]);
        assert_eq!(names(&["*S"]), ["MY_AWS", "TOKENS"]);
        assert!(names(&[]).is_empty());
        assert_eq!(names(&["*"]).len(), 5);
    }

    #[test]
    fn globs_match_like_a_shell_star() {
        for (p, n) in [
            ("A", "A"),
            ("A*", "A"),
            ("*", ""),
            ("A*B*C", "AxxBxxC"),
            ("A*B", "AB"),
            ("**", "x"),
        ] {
            assert!(glob_match(p, n), "{p} {n}");
        }
        for (p, n) in [
            ("A", "AB"),
            ("A*B", "A"),
            ("A*BA", "ABA_"),
            ("*AB*AB", "AB"),
        ] {
            assert!(!glob_match(p, n), "{p} {n}");
        }
        assert!(check_pass_env_pattern("AWS_*").is_ok());
        assert!(check_pass_env_pattern("").is_err());
        let e = check_pass_env_pattern("KEY=hunter2").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn dotenv_files_parse_the_common_forms() {
        let text = "# comment\n\nA=1\nexport B = two words  # note\nC='lit $X \\n'\n\
                    D=\"a\\nb \\\"q\\\" \\$\"\nE=\nF=x#y\n";
        assert_eq!(
            parse_dotenv(text).unwrap(),
            vars(&[
                ("A", "1"),
                ("B", "two words"),
                ("C", "lit $X \\n"),
                ("D", "a\nb \"q\" $"),
                ("E", ""),
                ("F", "x#y"),
            ])
        );
    }

    #[test]
    fn dotenv_errors_name_the_line_never_the_value() {
        for (text, line, why) in [
            ("A=1\nhunter2\n", 2, "expected NAME=VALUE"),
            ("1X=hunter2", 1, "the variable name must be"),
            ("A='hunter2", 1, "A: the quoted value has no closing quote"),
            ("A=\"hunter2", 1, "A: the quoted value has no closing quote"),
            (
                "A=\"hunter2\" x",
                1,
                "A: unexpected text after the closing quote",
            ),
            ("A=\"hunter2\\q\"", 1, "A: unknown escape"),
        ] {
            let e = parse_dotenv(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}");
            assert!(e.why.starts_with(why), "{text:?}: {e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn build_layers_env_files_then_spec_env_then_extra() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.env"), "X=from-a\nY=from-a\n").unwrap();
        std::fs::write(dir.path().join("b.env"), "Y=from-b\nZ=from-b\n").unwrap();
        let mut spec = SessionSpec {
            env_from: vec![
                crate::api::EnvFrom {
                    file: "a.env".into(),
                },
                crate::api::EnvFrom {
                    file: dir.path().join("b.env"),
                },
            ],
            ..SessionSpec::default()
        };
        spec.env.insert("Z".into(), "from-spec".into());
        spec.env.insert("W".into(), "from-spec".into());
        let extra = vars(&[("W", "from-sessionlet")]);
        let env: BTreeMap<String, String> = build(&spec, extra, &[], dir.path())
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(env["X"], "from-a");
        assert_eq!(env["Y"], "from-b");
        assert_eq!(env["Z"], "from-spec");
        assert_eq!(env["W"], "from-sessionlet");
        assert!(env.contains_key("PATH"));

        spec.env_from.push(crate::api::EnvFrom {
            file: "missing.env".into(),
        });
        let e = build(&spec, Vec::new(), &[], dir.path()).unwrap_err();
        assert_eq!(e.reason, Reason::SpawnFailed);
        assert!(
            e.message.starts_with("spec.envFrom[2]: ")
                && e.message.contains("missing.env: cannot read the file"),
            "{e}"
        );
        std::fs::write(dir.path().join("missing.env"), "OK=1\nsecret-value\n").unwrap();
        let e = build(&spec, Vec::new(), &[], dir.path()).unwrap_err();
        assert!(e.message.ends_with(": line 2: expected NAME=VALUE"), "{e}");
        assert!(!e.message.contains("secret-value"), "{e}");
    }
}
