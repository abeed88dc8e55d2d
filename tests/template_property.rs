//! Issue 18, property: over the `{var}` templating and every version
//! source, for arbitrary strings, no value ever reaches a shell's or an
//! interpreter's script text, never chooses the program, and never becomes
//! an option (an argument that starts with `-` only because of a
//! substituted value). Pure: the same functions the daemon and `check` use.

use proptest::prelude::*;

use rollbackd::run::script::{roles, Role};
use rollbackd::run::template::{substitute, substitute_json, Vars};
use rollbackd::version::{self, name};

/// Arguments a step template is built from: shells, wrappers,
/// interpreters, options, scripts with and without variables, plain
/// values.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "sh", "bash", "/bin/sh", "/usr/bin/env", "env", "dash", "zsh", "fish", "sudo",
            "timeout", "10", "docker", "exec", "web", "python3", "perl", "node", "awk", "ssh",
            "-c", "-ec", "-e", "-o", "pipefail", "--", "-u", "app", "--norc", "-S", "FOO=1",
            "echo \"$1\"", "echo rolled back from {from_version}", "{to_version}",
            "{from_version}", "{target}", "{incident}", "{lease}", "x-{to_version}",
            "--v={to_version}", "{target}{to_version}", "/srv/r/{to_version}/bin/x", "script.sh",
            "print('{to_version}')", "git", "checkout",
        ])
        .prop_map(str::to_string),
        1 => "[-a-z{}_ $=/.]{0,16}",
    ]
}

fn template() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(word(), 1..8)
}

/// Any string, with hostile ones more likely than chance would make them.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        2 => prop::sample::select(vec![
            "v2$(touch /tmp/pwned)", "-rf", "--help", "~root", "v1; rm -rf /", "`id`",
            "a b", "sh", "-c", "v1\nv2", "", "v1.2.3", "release/v2", "{target}",
            "unknown version \"x\"",
        ])
        .prop_map(str::to_string),
        1 => "[-a-zA-Z0-9._+:@/~$;|&`' \"]{0,12}",
    ]
}

fn vars() -> impl Strategy<Value = Vars> {
    (
        value(),
        prop::option::of(value()),
        prop::option::of(value()),
        value(),
        prop::option::of(value()),
    )
        .prop_map(|(target, from_version, to_version, incident, lease)| Vars {
            target,
            from_version,
            to_version,
            incident,
            lease,
        })
}

fn mentions(argv: &[String], var: &str) -> bool {
    argv.iter()
        .any(|a| rollbackd::run::template::names(a).contains(&var))
}

/// The script text of `sh|bash|dash -c SCRIPT ...` by the shells' own
/// rule (the first operand after the options), independent of
/// `run::script`.
fn posix_script(argv: &[String]) -> Option<usize> {
    let program = argv.first()?.rsplit('/').next()?;
    if !matches!(program, "sh" | "bash" | "dash") {
        return None;
    }
    let mut c = false;
    for (i, a) in argv.iter().enumerate().skip(1) {
        if a == "--" {
            return c.then_some(i + 1).filter(|&j| j < argv.len());
        }
        if a.len() > 1 && (a.starts_with('-') || a.starts_with('+')) {
            if a.starts_with("--") {
                continue;
            }
            if a.ends_with('o') || a.ends_with('O') {
                // `-o NAME` takes a value: too involved for this oracle.
                return None;
            }
            c |= a.contains('c');
            continue;
        }
        return c.then_some(i);
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn no_value_reaches_script_text_the_program_or_an_option(argv in template(), vars in vars()) {
        let Ok(out) = substitute(&argv, &vars) else { return Ok(()) };
        prop_assert_eq!(out.len(), argv.len(), "never re-split");
        let roles = roles(&argv);
        for (i, (t, o)) in argv.iter().zip(&out).enumerate() {
            if roles[i] == Role::Code {
                prop_assert_eq!(o, t, "a value reached code at {}: {:?} -> {:?}", i, argv, out);
            }
            if roles[i] == Role::Program {
                prop_assert!(!t.starts_with("{target}") && !t.starts_with("{to_version}")
                    && !t.starts_with("{from_version}") && !t.starts_with("{incident}")
                    && !t.starts_with("{lease}"), "a value chose the program: {:?}", argv);
            }
            if o.starts_with('-') {
                prop_assert!(t.starts_with('-'), "a value became an option at {}: {:?} -> {:?}", i, argv, out);
            }
        }
        // The shells' own reading of the result agrees.
        if let Some(s) = posix_script(&out) {
            prop_assert_eq!(&out[s], &argv[s], "script text changed: {:?} -> {:?}", argv, out);
        }
        // A version that was substituted is a version name.
        for (var, v) in [("from_version", &vars.from_version), ("to_version", &vars.to_version)] {
            if mentions(&argv, var) {
                let v = v.as_deref().unwrap_or_default();
                prop_assert!(name::is_valid(v), "{} {:?} was substituted", var, v);
            }
        }
    }

    #[test]
    fn the_environment_holds_only_version_names(vars in vars()) {
        for (k, v) in vars.env() {
            if k.ends_with("_VERSION") {
                prop_assert!(v.is_empty() || name::is_valid(&v), "{}={:?}", k, v);
            }
        }
    }

    /// Every version source ends in `version::check`: `version_command`
    /// (stdout trimmed), `version_url` (body trimmed, or a JSON string or
    /// number), `version_query` (a label value), a symlink's release
    /// directory. Whatever they say is a version name or an unknown
    /// version that is never substituted.
    #[test]
    fn every_version_source_gives_a_name_or_an_unknown_version(raw in value()) {
        let mut said = vec![raw.trim().to_string()];
        if let Ok(v) = version::version_from_body(raw.as_bytes(), None) {
            said.push(v);
        }
        let json = serde_json::json!({ "build": { "version": raw } }).to_string();
        if let Ok(v) = version::version_from_body(json.as_bytes(), Some("/build/version")) {
            said.push(v);
        }
        let series = rollbackd::sources::prometheus::Series {
            labels: [("version".to_string(), raw.clone())].into(),
            value: 1.0,
        };
        if let Ok(v) = version::version_from_series(&[series], "version") {
            said.push(v);
        }
        // What an executor found (`git describe`, a release directory).
        said.push(raw.clone());
        for s in said {
            let live = match version::check(&s) {
                Ok(v) => {
                    prop_assert!(name::is_valid(&v));
                    prop_assert!(!v.starts_with('-'));
                    let shell = ['~', '$', '`', ';', ' ', '\'', '"', '\n', '(', '|', '&', '*', '{'];
                    prop_assert!(!v.contains(shell), "{:?}", v);
                    v
                }
                Err(e) => match e.shown() {
                    Some(shown) => shown.to_string(),
                    None => continue,
                },
            };
            let found = name::as_found(s.clone());
            for v in [live, found] {
                let vars = Vars { from_version: Some(v.clone()), to_version: Some(v.clone()), ..Vars::default() };
                let argv: Vec<String> = ["deploy", "{from_version}", "--to={to_version}"].map(String::from).to_vec();
                match substitute(&argv, &vars) {
                    Ok(out) => {
                        prop_assert!(name::is_valid(&v));
                        prop_assert_eq!(&out[1], &v);
                    }
                    Err(_) => prop_assert!(!name::is_valid(&v)),
                }
                prop_assert_eq!(substitute_json(r#"{"v": "{to_version}"}"#, &vars).is_ok(), name::is_valid(&v));
            }
        }
    }
}
