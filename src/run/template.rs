//! The `{var}` template grammar, used by config validation (which names
//! are allowed) and by execution (substitution), so both read a template
//! the same way.
//!
//! A placeholder is `{`, then one or more ASCII letters, digits or `_`,
//! then `}`. Every other brace is literal text: JSON (`{"a": 1}`), a lone
//! `{`, `}{`; in `{{x}}` the placeholder is the inner `{x}`. Substitution
//! is one pass per argument, so a value that itself contains `{...}` is
//! never expanded again, and never re-split into several arguments.
//!
//! What substitution refuses (the step does not run, nothing of the plan
//! does): a `{var}` inside a shell's or interpreter's script text or
//! choosing the program ([`super::script`], also refused by `check`); a
//! `{from_version}`/`{to_version}` outside the version charset
//! ([`crate::version::name`]): an unknown version is never substituted; an
//! argument that substitution makes start with `-` (a value never becomes
//! an option). Every step also gets the values in its environment
//! ([`Vars::env`]), the safe way to hand them to a script.

use super::script;

/// The variables a template may use: `{target}`, `{from_version}`,
/// `{to_version}`, `{incident}`, `{lease}` (the cluster's fencing token;
/// config validation allows it only with `[cluster]`).
pub const VARIABLES: [&str; 5] = ["target", "from_version", "to_version", "incident", "lease"];

/// Template variables substituted per argument: `{target}`, `{from_version}`,
/// `{to_version}`, `{incident}`, `{lease}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vars {
    /// Target name.
    pub target: String,
    /// Live version, if known.
    pub from_version: Option<String>,
    /// Version to go back to, if known.
    pub to_version: Option<String>,
    /// Incident ID.
    pub incident: String,
    /// With `[cluster]`: the etcd lease under which this node owns the
    /// target, in hex (`ROLLBACKD_LEASE`), so that a deploy system can
    /// refuse a stale owner. `None` (substituted as empty) when the node
    /// acts without a lock (`on_etcd_down = "act_alone"`) or in a drill.
    pub lease: Option<String>,
}

impl Vars {
    /// The values as the environment of every step: `ROLLBACKD_TARGET`,
    /// `ROLLBACKD_INCIDENT`, `ROLLBACKD_FROM_VERSION`,
    /// `ROLLBACKD_TO_VERSION` (empty when unknown, or when the value is not
    /// a version name), and `ROLLBACKD_LEASE` when there is a lease. A
    /// script reads them as `"$ROLLBACKD_TO_VERSION"`, never as code.
    pub fn env(&self) -> Vec<(String, String)> {
        let version = |v: &Option<String>| {
            v.as_deref()
                .filter(|v| crate::version::name::is_valid(v))
                .unwrap_or("")
                .to_string()
        };
        let mut env = vec![
            ("ROLLBACKD_TARGET".to_string(), self.target.clone()),
            ("ROLLBACKD_INCIDENT".to_string(), self.incident.clone()),
            (
                "ROLLBACKD_FROM_VERSION".to_string(),
                version(&self.from_version),
            ),
            (
                "ROLLBACKD_TO_VERSION".to_string(),
                version(&self.to_version),
            ),
        ];
        if let Some(lease) = &self.lease {
            env.push(("ROLLBACKD_LEASE".to_string(), lease.clone()));
        }
        env
    }
}

/// Why a template cannot be completed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A known variable has no value (e.g. `{to_version}` with unknown history).
    #[error("template variable {{{0}}} has no value")]
    MissingVar(String),
    /// A value or a placement that is never substituted.
    #[error(transparent)]
    Refused(Box<Refused>),
}

impl From<Refused> for TemplateError {
    fn from(r: Refused) -> TemplateError {
        TemplateError::Refused(Box::new(r))
    }
}

impl From<Misplaced> for TemplateError {
    fn from(m: Misplaced) -> TemplateError {
        Refused::Misplaced(m).into()
    }
}

/// What substitution refuses, whatever the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A version outside the charset: never substituted.
    #[error(
        "template variable {{{var}}} is {shown}, not substituted: {why} (a version reported \
         outside the charset is never passed to a step)"
    )]
    UnknownVersion {
        /// `from_version` or `to_version`.
        var: String,
        /// The value as shown to people: `unknown version "RAW"`, escaped.
        shown: String,
        /// What is wrong with it.
        why: String,
    },
    /// Substitution would make an argument start with `-`.
    #[error(
        "template variable {{{var}}} would make argument {template:?} start with '-' \
         ({value}): a value never becomes an option"
    )]
    BecomesOption {
        /// The variable.
        var: String,
        /// The argument as written.
        template: String,
        /// The value, escaped.
        value: String,
    },
    /// A variable where a value would be code or the program.
    #[error(transparent)]
    Misplaced(#[from] Misplaced),
}

/// Why a step template may not be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misplaced {
    /// A variable inside code a shell or interpreter reads.
    #[error(
        "{{{var}}} is inside the script text of a {program} step (argument {arg:?}): a value \
         there would be read as code; pass it as an environment variable \
         (\"$ROLLBACKD_{upper}\") or as a positional argument after the script \
         ([\"sh\", \"-c\", \"echo \\\"$1\\\"\", \"sh\", \"{{{var}}}\"])",
        upper = var.to_uppercase()
    )]
    InCode {
        /// The variable.
        var: String,
        /// The shell or interpreter.
        program: String,
        /// The argument as written.
        arg: String,
    },
    /// A variable choosing the program.
    #[error(
        "{{{var}}} starts the program of the step (argument {arg:?}): a value must never choose \
         what is executed; name the program literally and pass the value as an argument"
    )]
    Program {
        /// The variable.
        var: String,
        /// The argument as written.
        arg: String,
    },
}

/// The first placement of a `{var}` (among `known` variable names) that a
/// step must not have.
pub fn misplaced(argv: &[String], known: &[&str]) -> Option<Misplaced> {
    let roles = script::roles(argv);
    let program_of = |i: usize| {
        (0..=i)
            .rev()
            .find(|&k| {
                roles[k] == script::Role::Program && script::is_shell_or_interpreter(&argv[k])
            })
            .or_else(|| (0..=i).rev().find(|&k| roles[k] == script::Role::Program))
            .map(|k| argv[k].clone())
            .unwrap_or_default()
    };
    for (i, (arg, role)) in argv.iter().zip(&roles).enumerate() {
        let pieces = pieces(arg);
        let is_known = |p: &Piece| match p {
            Piece::Var(name) => known.contains(name),
            Piece::Text(_) => false,
        };
        match role {
            script::Role::Code => {
                if let Some(Piece::Var(var)) = pieces.iter().find(|p| is_known(p)) {
                    return Some(Misplaced::InCode {
                        var: var.to_string(),
                        program: program_of(i),
                        arg: arg.clone(),
                    });
                }
            }
            script::Role::Program => {
                if let Some(first @ Piece::Var(var)) = pieces.first() {
                    if is_known(first) {
                        return Some(Misplaced::Program {
                            var: var.to_string(),
                            arg: arg.clone(),
                        });
                    }
                }
            }
            script::Role::Data => {}
        }
    }
    None
}

/// One piece of a template: literal text or a `{name}` placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Copied as is.
    Text(&'a str),
    /// The name between the braces (any name; whether it is known is the
    /// caller's business).
    Var(&'a str),
}

/// The pieces of `template`, in order. Concatenating them (a `Var` as
/// `{name}`) gives `template` back.
pub fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut at = 0;
    while let Some(open) = template[at..].find('{').map(|i| at + i) {
        let after = &template[open + 1..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if len > 0 && after[len..].starts_with('}') {
            if text_start < open {
                out.push(Piece::Text(&template[text_start..open]));
            }
            out.push(Piece::Var(&after[..len]));
            at = open + 1 + len + 1;
            text_start = at;
        } else {
            at = open + 1;
        }
    }
    if text_start < template.len() {
        out.push(Piece::Text(&template[text_start..]));
    }
    out
}

/// The placeholder names in `template`, in order (known or not).
pub fn names(template: &str) -> Vec<&str> {
    pieces(template)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(name) => Some(name),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Substitute the variables in each argument. An unknown `{name}` is left
/// as is (validation refuses it in config); a known variable without a
/// value is an error naming it, and so is every refusal of the module
/// documentation (script text, program, unknown version, option).
pub fn substitute(argv: &[String], vars: &Vars) -> Result<Vec<String>, TemplateError> {
    if let Some(m) = misplaced(argv, &VARIABLES) {
        return Err(m.into());
    }
    argv.iter()
        .map(|arg| {
            let out = substitute_with(arg, vars, str::to_string)?;
            if out.starts_with('-') && !arg.starts_with('-') {
                let var = names(arg)
                    .into_iter()
                    .find(|n| VARIABLES.contains(n))
                    .unwrap_or_default();
                return Err(Refused::BecomesOption {
                    var: var.to_string(),
                    template: arg.clone(),
                    value: crate::version::name::escaped(&out),
                }
                .into());
            }
            Ok(out)
        })
        .collect()
}

/// Substitute the variables in a JSON template, each value JSON-escaped (as
/// the content of a JSON string), so a version like `a"b` cannot break out
/// of its string.
pub fn substitute_json(template: &str, vars: &Vars) -> Result<String, TemplateError> {
    substitute_with(template, vars, |v| {
        let quoted = serde_json::Value::String(v.to_string()).to_string();
        quoted[1..quoted.len() - 1].to_string()
    })
}

/// One pass over one template, each value passed through `escape`.
fn substitute_with(
    template: &str,
    vars: &Vars,
    escape: impl Fn(&str) -> String,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template) {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var(name) => match lookup(name, vars) {
                Some(value) => out.push_str(&escape(value?)),
                None => {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
            },
        }
    }
    Ok(out)
}

/// `None` for an unknown name (left literal), an error for a known name
/// without a value or with a version outside the charset.
fn lookup<'a>(name: &str, vars: &'a Vars) -> Option<Result<&'a str, TemplateError>> {
    let version = |v: Option<&'a str>| match v {
        Some(v) if crate::version::name::is_valid(v) => Some(Ok(v)),
        Some(v) => Some(Err(Refused::UnknownVersion {
            var: name.to_string(),
            shown: crate::version::name::shown(v),
            why: crate::version::name::why_not(v),
        }
        .into())),
        None => Some(Err(TemplateError::MissingVar(name.to_string()))),
    };
    let value = match name {
        "target" => Some(vars.target.as_str()),
        "incident" => Some(vars.incident.as_str()),
        "from_version" => return version(vars.from_version.as_deref()),
        "to_version" => return version(vars.to_version.as_deref()),
        // Never an error: no lease means no lock to fence with (acting
        // alone, a drill), and validation refuses `{lease}` without
        // `[cluster]`.
        "lease" => Some(vars.lease.as_deref().unwrap_or("")),
        _ => return None,
    };
    Some(value.ok_or_else(|| TemplateError::MissingVar(name.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            target: "web".into(),
            from_version: Some("v2".into()),
            to_version: None,
            incident: "inc-7".into(),
            lease: None,
        }
    }

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn substitute_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("plain", Ok("plain")),
            ("{target}", Ok("web")),
            ("--name={target}-{incident}", Ok("--name=web-inc-7")),
            ("{from_version}{from_version}", Ok("v2v2")),
            ("{unknown}", Ok("{unknown}")),
            ("{", Ok("{")),
            ("}{", Ok("}{")),
            ("{{target}}", Ok("{web}")),
            ("{target", Ok("{target")),
            ("{x{target}}", Ok("{xweb}")),
            ("{to-version}", Ok("{to-version}")),
            ("a b {target}", Ok("a b web")),
            ("{to_version}", Err("to_version")),
            ("x-{to_version}-y", Err("to_version")),
            // No lease (no lock to fence with): empty, never an error.
            ("--lease={lease}", Ok("--lease=")),
        ];
        for (input, want) in cases {
            let got = substitute(&argv(&["prog", input]), &vars());
            match want {
                Ok(w) => assert_eq!(
                    got,
                    Ok(vec!["prog".to_string(), w.to_string()]),
                    "input {input:?}"
                ),
                Err(name) => assert_eq!(
                    got,
                    Err(TemplateError::MissingVar(name.to_string())),
                    "input {input:?}"
                ),
            }
        }
    }

    #[test]
    fn substitute_never_resplits_or_reexpands() {
        let v = Vars {
            target: "a b; rm -rf /".into(),
            from_version: Some("v2".into()),
            to_version: Some("v1".into()),
            incident: "{target}".into(),
            lease: None,
        };
        let got = substitute(&argv(&["echo", "{target}", "{incident}"]), &v).unwrap();
        assert_eq!(got, argv(&["echo", "a b; rm -rf /", "{target}"]));
        let v = Vars {
            incident: String::new(),
            ..v
        };
        assert_eq!(
            substitute(&argv(&["echo", "{incident}"]), &v).unwrap(),
            argv(&["echo", ""])
        );
    }

    #[test]
    fn unknown_versions_are_never_substituted() {
        // (from_version, argv template, error contains)
        let cases = [
            (
                "v2$(touch x)",
                vec!["echo", "{from_version}"],
                r#"template variable {from_version} is unknown version "v2$(touch x)", not substituted: '$' is not allowed"#,
            ),
            ("~root", vec!["ls", "{from_version}"], "'~' is not allowed"),
            (
                "-rf",
                vec!["rm", "{from_version}"],
                "must not start with '-'",
            ),
            ("a b", vec!["x", "--v={from_version}"], "' ' is not allowed"),
            (
                r#"unknown version "v2$(x)""#,
                vec!["echo", "{from_version}"],
                r#"is unknown version "v2$(x)", not substituted: it was refused when it was read"#,
            ),
        ];
        for (value, template, want) in cases {
            let v = Vars {
                from_version: Some(value.into()),
                ..vars()
            };
            let e = substitute(&argv(&template), &v).unwrap_err().to_string();
            assert!(e.contains(want), "{value:?}: {e}");
            let json = substitute_json(r#"{"v": "{from_version}"}"#, &v).unwrap_err();
            assert!(json.to_string().contains(want), "{value:?}: {json}");
        }
    }

    #[test]
    fn a_value_never_becomes_an_option() {
        let v = Vars {
            target: "-rf".into(),
            ..vars()
        };
        let e = substitute(&argv(&["rm", "{target}"]), &v).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"template variable {target} would make argument "{target}" start with '-' ("-rf"): a value never becomes an option"#
        );
        // A literal dash stays an option; a value after it is its value.
        assert_eq!(
            substitute(
                &argv(&["deploy", "--name={target}", "-n", "{target}x"]),
                &vars()
            )
            .unwrap(),
            argv(&["deploy", "--name=web", "-n", "webx"])
        );
        assert!(substitute(&argv(&["deploy", "--name={target}"]), &v).is_ok());
    }

    #[test]
    fn env_holds_the_values() {
        let v = Vars {
            to_version: Some("v1".into()),
            from_version: Some("v2$(x)".into()),
            lease: Some("ab".into()),
            ..vars()
        };
        assert_eq!(
            v.env(),
            [
                ("ROLLBACKD_TARGET", "web"),
                ("ROLLBACKD_INCIDENT", "inc-7"),
                ("ROLLBACKD_FROM_VERSION", ""),
                ("ROLLBACKD_TO_VERSION", "v1"),
                ("ROLLBACKD_LEASE", "ab"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn lease_is_substituted() {
        let v = Vars {
            lease: Some("694d7a0f5e2c4b1a".into()),
            ..vars()
        };
        assert_eq!(
            substitute(&argv(&["deploy", "--fence={lease}"]), &v).unwrap(),
            argv(&["deploy", "--fence=694d7a0f5e2c4b1a"])
        );
    }

    #[test]
    fn substitute_json_escapes_values() {
        let v = Vars {
            target: "a\"b".into(),
            to_version: Some("v1".into()),
            ..vars()
        };
        assert_eq!(
            substitute_json(r#"{"v": "{to_version}", "t": "{target}"}"#, &v).unwrap(),
            r#"{"v": "v1", "t": "a\"b"}"#
        );
    }

    #[test]
    fn missing_var_message_names_it() {
        let e = TemplateError::MissingVar("to_version".into());
        assert_eq!(e.to_string(), "template variable {to_version} has no value");
    }

    #[test]
    fn placeholder_names() {
        assert_eq!(names("{to_version}"), vec!["to_version"]);
        assert_eq!(names("a{target}-{incident}b"), vec!["target", "incident"]);
        assert_eq!(names(r#"{"a": 1}"#), Vec::<&str>::new());
        assert_eq!(names("{"), Vec::<&str>::new());
        assert_eq!(names("{{x}}"), vec!["x"]);
        assert_eq!(names("${HOME}"), vec!["HOME"]);
    }

    #[test]
    fn pieces_give_the_template_back() {
        for t in ["", "a", "{a}", "{{a}}", "x{a}y{b", "}{", "{\"k\": \"{v}\"}"] {
            let back: String = pieces(t)
                .into_iter()
                .map(|p| match p {
                    Piece::Text(s) => s.to_string(),
                    Piece::Var(n) => format!("{{{n}}}"),
                })
                .collect();
            assert_eq!(back, t);
        }
    }
}
