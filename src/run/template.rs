//! The `{var}` template grammar, used by config validation (which names
//! are allowed) and by execution (substitution), so both read a template
//! the same way.
//!
//! A placeholder is `{`, then one or more ASCII letters, digits or `_`,
//! then `}`. Every other brace is literal text: JSON (`{"a": 1}`), a lone
//! `{`, `}{`; in `{{x}}` the placeholder is the inner `{x}`. Substitution
//! is one pass per argument, so a value that itself contains `{...}` is
//! never expanded again, and never re-split into several arguments.

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

/// Why a template cannot be completed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A known variable has no value (e.g. `{to_version}` with unknown history).
    #[error("template variable {{{0}}} has no value")]
    MissingVar(String),
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
/// value is an error naming it.
pub fn substitute(argv: &[String], vars: &Vars) -> Result<Vec<String>, TemplateError> {
    argv.iter()
        .map(|arg| substitute_with(arg, vars, str::to_string))
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
/// without a value.
fn lookup<'a>(name: &str, vars: &'a Vars) -> Option<Result<&'a str, TemplateError>> {
    let value = match name {
        "target" => Some(vars.target.as_str()),
        "incident" => Some(vars.incident.as_str()),
        "from_version" => vars.from_version.as_deref(),
        "to_version" => vars.to_version.as_deref(),
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
            let got = substitute(&argv(&[input]), &vars());
            match want {
                Ok(w) => assert_eq!(got, Ok(vec![w.to_string()]), "input {input:?}"),
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
            from_version: Some("{target}".into()),
            to_version: Some("v1".into()),
            incident: String::new(),
            lease: None,
        };
        let got = substitute(&argv(&["echo", "{target}", "{from_version}"]), &v).unwrap();
        assert_eq!(got, argv(&["echo", "a b; rm -rf /", "{target}"]));
        assert_eq!(substitute(&argv(&["{incident}"]), &v).unwrap(), argv(&[""]));
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
            to_version: Some("a\"b".into()),
            ..vars()
        };
        assert_eq!(
            substitute_json(r#"{"v": "{to_version}", "t": "{target}"}"#, &v).unwrap(),
            r#"{"v": "a\"b", "t": "web"}"#
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
