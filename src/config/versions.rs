//! Plans that need a version nobody can tell them: a `{to_version}` or
//! `{from_version}` in a plan whose target has no version source is never
//! known, so every automatic rollback of it would be refused before its
//! first step. `check` prints these as warnings (exit 0); pure.

use super::Config;

/// One warning per target whose plan needs a version without a source, as
/// `target[i].rollback: warning: ...`.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (i, t) in config.targets.iter().enumerate() {
        if t.version.is_some() {
            continue;
        }
        for (var, at) in t.rollback.needs_vars() {
            let what = match var.as_str() {
                "to_version" => "the version to go back to is never known",
                _ => "the live version is never known",
            };
            out.push(format!(
                "target[{i}].rollback: warning: the plan needs {{{var}}} ({}) but target {:?} has \
                 no version source, so {what} and every automatic rollback is refused before its \
                 first step; set version_command (or version_url, version_query) or use trigger \
                 --to-version",
                at.join(", "),
                t.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: &str =
        "[[target.rule]]\nname = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\nfor = \"1m\"\n";

    fn config(target: &str) -> Config {
        let text = format!(
            "[daemon]\nstate_dir = \"/tmp/x\"\n[notify.email]\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]\n\
             [[target]]\nname = \"web\"\n{target}\n{RULE}"
        );
        super::super::load_str("t.toml", &text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn warns_only_without_a_version_source() {
        // (name, target keys, expected warnings containing)
        let cases: Vec<(&str, &str, Vec<&str>)> = vec![
            (
                "command with to_version, no source",
                "[target.rollback]\nkind = \"command\"\nsteps = [[\"git\", \"checkout\", \"{to_version}\"]]",
                vec!["target[0].rollback: warning: the plan needs {to_version} (rollback.steps[0]) but target \"web\" has no version source"],
            ),
            (
                "docker, no source",
                "[target.rollback]\nkind = \"docker\"\ncontainer = \"web\"\nimage = \"registry/web\"",
                vec!["the plan needs {to_version} (rollback.kind)"],
            ),
            (
                "git reads its own version (git describe)",
                "[target.rollback]\nkind = \"git\"\nrepo = \"/srv/app\"",
                vec![],
            ),
            (
                "pre with from_version, no source",
                "[target.rollback]\nkind = \"command\"\npre = [[\"cp\", \"db\", \"/b/{from_version}\"]]\nsteps = [[\"true\"]]",
                vec!["the plan needs {from_version} (rollback.pre[0])"],
            ),
            (
                "with a version source",
                "version_command = [\"cat\", \"/srv/VERSION\"]\n[target.rollback]\nkind = \"command\"\nsteps = [[\"git\", \"checkout\", \"{to_version}\"]]",
                vec![],
            ),
            (
                "no variables",
                "[target.rollback]\nkind = \"command\"\nsteps = [[\"systemctl\", \"restart\", \"web\"]]",
                vec![],
            ),
            (
                "symlink finds its own",
                "[target.rollback]\nkind = \"symlink\"\ncurrent = \"/srv/current\"\nreleases = \"/srv/releases\"",
                vec![],
            ),
        ];
        for (name, target, want) in cases {
            let got = warnings(&config(target));
            assert_eq!(got.len(), want.len(), "{name}: {got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(g.contains(w), "{name}: {g}");
                assert!(g.ends_with("set version_command (or version_url, version_query) or use trigger --to-version"), "{name}: {g}");
            }
        }
    }
}
