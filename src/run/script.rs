//! Where a `{var}` may stand in a step: never inside text that a shell or
//! another interpreter reads as code, and never as the program a step (or a
//! wrapper such as `env` or `sudo`) runs. Pure, and a leaf: this module
//! gives each argument its [`Role`]; [`super::template::misplaced`] applies
//! it to a template, for config validation (`check` refuses such
//! templates) and again for substitution (a template that got past it is
//! refused before anything runs), so both read a step the same way.
//!
//! Each argument of a step has a [`Role`]:
//!
//! - **Program**: `argv[0]`, and the program a known wrapper (`env`,
//!   `sudo`, `doas`, `nice`, `nohup`, `setsid`, `stdbuf`, `time`,
//!   `timeout`, `chroot`, `flock`, `ionice`, `chrt`, `taskset`, `xargs`,
//!   `busybox`, `su`, `runuser`) runs. It must not *start* with a `{var}`:
//!   a value never chooses what is executed (`/srv/releases/{to_version}/bin/x`
//!   is allowed, `{to_version}` is not).
//! - **Code**: for a shell (`sh`, `bash`, `dash`, `zsh`, `ksh`, `mksh`,
//!   `ash`, `yash`, `posh`, `fish`, `csh`, `tcsh`, ...) or interpreter
//!   (`python*`, `pypy*`, `perl`, `ruby`, `node`, `php`, `lua*`, `awk`
//!   family, `Rscript`, `osascript`), every argument up to and including
//!   the script: the options and their values, then the script text (`-c`
//!   for shells, `-c`/`-e`/`-r`/`--eval` values for interpreters) or the
//!   script file. No `{var}` may appear in them at all. `ssh` and `pwsh`
//!   are Code throughout (ssh hands its command to the remote shell as
//!   text). A shell may be found anywhere in the argv, behind a wrapper
//!   (`env sh -c`, `/bin/sh -c`, `sudo -u app bash -ec`, `docker exec web
//!   sh -c`): the first argument that names one starts such a region.
//! - **Data**: everything else, in particular the script's positional
//!   parameters: `sh -c 'echo "$1"' sh {to_version}` is the safe pattern.
//!
//! The parse is conservative: where it cannot tell whether an option takes
//! a value, it assumes it does, which can only make the Code region longer.

/// What an argument of a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The program to run: must not start with a `{var}`.
    Program,
    /// Read as code by a shell or interpreter: no `{var}` at all.
    Code,
    /// An ordinary argument.
    Data,
}

/// How a program reads its arguments, as far as this module cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// A shell: the first operand is the script (text with `-c`, else a file).
    Shell,
    /// An interpreter: inline code is an option's value; without one, the
    /// first operand is the script (file, or awk's program text).
    Interpreter,
    /// Runs another program: its first operand (after `leading` fixed
    /// operands) is a program.
    Wrapper,
    /// Every argument is code (`ssh`, `pwsh`).
    AllCode,
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    family: Family,
    /// Short option letters whose value (attached or the next argument) is
    /// code; for a wrapper, the rest of the argv is code.
    code_short: &'static str,
    /// Long options whose value is code.
    code_long: &'static [&'static str],
    /// Short option letters that take a value (the next argument when not
    /// attached).
    valued_short: &'static str,
    /// Long options that take a value.
    valued_long: &'static [&'static str],
    /// Long options known to take none (shells and interpreters: any other
    /// long option is assumed to take one).
    flag_long: &'static [&'static str],
    /// Short options whose value is data, not code (awk's `-v var=value`).
    data_short: &'static str,
    /// Wrappers: operands before the program (`timeout DURATION`).
    leading: usize,
    /// `+o`-style options (shells).
    plus: bool,
    /// `NAME=VALUE` words before the program (`env`).
    assignments: bool,
}

const NONE: Spec = Spec {
    family: Family::Wrapper,
    code_short: "",
    code_long: &[],
    valued_short: "",
    valued_long: &[],
    flag_long: &[],
    data_short: "",
    leading: 0,
    plus: false,
    assignments: false,
};

const BASH_FLAGS: &[&str] = &[
    "--login",
    "--norc",
    "--noprofile",
    "--posix",
    "--restricted",
    "--verbose",
    "--version",
    "--help",
    "--noediting",
    "--debugger",
    "--dump-strings",
    "--dump-po-strings",
    "--pretty-print",
];

/// The spec of a program, by its file name without directory (and, for
/// versioned interpreters, without the version: `python3.12`).
fn spec(program: &str) -> Option<Spec> {
    let name = program.rsplit('/').next().unwrap_or(program);
    let bare = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    let shell = Spec {
        family: Family::Shell,
        valued_short: "oO",
        valued_long: &["--rcfile", "--init-file"],
        flag_long: BASH_FLAGS,
        plus: true,
        ..NONE
    };
    let interp = |code_short, code_long, valued_short| Spec {
        family: Family::Interpreter,
        code_short,
        code_long,
        valued_short,
        ..NONE
    };
    let wrapper = |valued_short, valued_long, leading| Spec {
        valued_short,
        valued_long,
        leading,
        ..NONE
    };
    Some(match name {
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "ksh93" | "mksh" | "pdksh" | "oksh" | "loksh"
        | "ash" | "yash" | "posh" | "rbash" | "rksh" | "hush" | "lksh" => shell,
        // Their `-c` takes the script as its value.
        "csh" | "tcsh" => Spec {
            code_short: "c",
            ..shell
        },
        "fish" => Spec {
            code_short: "cC",
            code_long: &["--command", "--init-command"],
            valued_short: "dof",
            ..shell
        },
        "ssh" | "pwsh" | "powershell" => Spec {
            family: Family::AllCode,
            ..NONE
        },
        "perl" | "perl5" => interp("eE", &[], "IMm"),
        "ruby" => interp("e", &[], "ICEFr"),
        "node" | "nodejs" => interp("ep", &["--eval", "--print"], "r"),
        "php" => interp("rBREfF", &[], "cdzt"),
        "lua" | "luajit" => interp("e", &[], "l"),
        "Rscript" | "osascript" => interp("e", &["--expr"], ""),
        "awk" | "gawk" | "mawk" | "nawk" => Spec {
            data_short: "v",
            ..interp("fe", &["--file", "--source"], "vFW")
        },
        "env" => Spec {
            code_short: "S",
            code_long: &["--split-string"],
            assignments: true,
            ..wrapper("uC", &["--unset", "--chdir"], 0)
        },
        "sudo" => Spec {
            code_short: "si",
            code_long: &["--shell", "--login"],
            ..wrapper(
                "ugCDhprtUTc",
                &[
                    "--user",
                    "--group",
                    "--close-from",
                    "--chdir",
                    "--host",
                    "--prompt",
                    "--role",
                    "--type",
                    "--other-user",
                    "--command-timeout",
                ],
                0,
            )
        },
        "doas" => Spec {
            code_short: "s",
            ..wrapper("uC", &[], 0)
        },
        // `su [options] USER [-c CMD]`: what follows the user goes to a shell.
        "su" | "runuser" => Spec {
            code_short: "c",
            code_long: &["--command", "--session-command"],
            ..wrapper("ugGsw", &["--user", "--group", "--shell"], 1)
        },
        "flock" => Spec {
            code_short: "c",
            code_long: &["--command"],
            ..wrapper("wE", &["--timeout", "--conflict-exit-code"], 1)
        },
        "nice" => wrapper("n", &["--adjustment"], 0),
        "stdbuf" => wrapper("ioe", &["--input", "--output", "--error"], 0),
        "time" => wrapper("fo", &["--format", "--output"], 0),
        "timeout" => wrapper("sk", &["--signal", "--kill-after"], 1),
        "chroot" => wrapper("", &["--userspec", "--groups"], 1),
        "ionice" => wrapper("cnp", &["--class", "--classdata", "--pid"], 0),
        "chrt" | "taskset" => wrapper("", &[], 1),
        "xargs" => wrapper(
            "adEILnPs",
            &[
                "--arg-file",
                "--delimiter",
                "--max-lines",
                "--max-args",
                "--max-procs",
                "--max-chars",
                "--replace",
                "--eof",
                "--process-slot-var",
            ],
            0,
        ),
        "nohup" | "setsid" | "busybox" | "exec" | "command" => wrapper("", &[], 0),
        _ if matches!(bare, "python" | "pypy" | "pypy3") => interp("cm", &[], "WXQ"),
        _ => return None,
    })
}

/// Whether `program` is a shell or an interpreter (by its file name).
pub fn is_shell_or_interpreter(program: &str) -> bool {
    spec(program).is_some_and(|s| s.family != Family::Wrapper)
}

/// The role of each argument of `argv` (a template or a substituted argv).
pub fn roles(argv: &[String]) -> Vec<Role> {
    let mut roles = vec![Role::Data; argv.len()];
    if argv.is_empty() {
        return roles;
    }
    scan(argv, 0, &mut roles);
    // A shell behind something this module does not know (`docker exec C
    // sh -c`, `kubectl exec P -- bash -c`): the first argument naming one.
    if let Some(j) = argv.iter().position(|a| is_shell_or_interpreter(a)) {
        let mut more = vec![Role::Data; argv.len()];
        scan(argv, j, &mut more);
        for (r, m) in roles.iter_mut().zip(more) {
            if m == Role::Code || (m == Role::Program && *r == Role::Data) {
                *r = m;
            }
        }
    }
    roles
}

fn option_like(arg: &str, plus: bool) -> bool {
    arg.len() > 1 && (arg.starts_with('-') || (plus && arg.starts_with('+')))
}

/// Mark the roles of `argv[start..]`, `argv[start]` being a program.
fn scan(argv: &[String], start: usize, roles: &mut [Role]) {
    roles[start] = Role::Program;
    let Some(spec) = spec(&argv[start]) else {
        return;
    };
    let n = argv.len();
    let code_args = spec.family != Family::Wrapper;
    if spec.family == Family::AllCode {
        for r in roles.iter_mut().skip(start + 1) {
            *r = Role::Code;
        }
        return;
    }
    let mut i = start + 1;
    let mut code_seen = false;
    let mut operand = None;
    // A wrapper's fixed operands (`timeout DURATION`, `flock FILE`); options
    // may follow them (`flock FILE -c CMD`).
    let mut leading_left = spec.leading;
    while i < n {
        let a = argv[i].as_str();
        if a == "--" {
            mark(roles, i, code_args);
            operand = Some(i + 1);
            break;
        }
        if !option_like(a, spec.plus) {
            if spec.assignments && is_assignment(a) {
                i += 1;
                continue;
            }
            if spec.family == Family::Wrapper && leading_left > 0 {
                leading_left -= 1;
                i += 1;
                continue;
            }
            operand = Some(i);
            break;
        }
        mark(roles, i, code_args);
        match option(&spec, argv, i, roles) {
            Taken::RestIsCode => return,
            Taken::Args { n, code } => {
                code_seen |= code;
                i += n;
            }
        }
    }
    let Some(first) = operand.filter(|&o| o < n) else {
        return;
    };
    match spec.family {
        Family::Shell | Family::Interpreter => {
            // With inline code the operands are its arguments; without,
            // the first operand is the script (text or file).
            if !code_seen {
                roles[first] = Role::Code;
            }
        }
        Family::Wrapper => {
            let program = first + leading_left;
            if program < n {
                scan(argv, program, roles);
            }
        }
        Family::AllCode => {}
    }
}

/// Mark `roles[i]` (if there is such an argument) as code or data.
fn mark(roles: &mut [Role], i: usize, code: bool) {
    if i < roles.len() {
        roles[i] = if code { Role::Code } else { Role::Data };
    }
}

/// What an option took up, as [`option`] read it.
enum Taken {
    /// `n` arguments, the option and its value if it has one; `code`: the
    /// value is inline code (`-c`, `--eval`).
    Args { n: usize, code: bool },
    /// A wrapper's code option (`sudo -s`, `env -S`): the rest of the argv
    /// is code, and was marked so.
    RestIsCode,
}

/// Read the option `argv[i]` of a program with `spec` and mark its value:
/// code when the option takes code, or when a shell or interpreter's
/// option takes a value.
fn option(spec: &Spec, argv: &[String], i: usize, roles: &mut [Role]) -> Taken {
    let a = argv[i].as_str();
    let next_is_value = i + 1 < argv.len() && !option_like(&argv[i + 1], spec.plus);
    match a.strip_prefix("--") {
        Some(long) => long_option(spec, long, i, next_is_value, roles),
        None => short_cluster(spec, &a[1..], i, next_is_value, roles),
    }
}

/// `--name` or `--name=value` at `i` (`long`: without its dashes).
fn long_option(
    spec: &Spec,
    long: &str,
    i: usize,
    next_is_value: bool,
    roles: &mut [Role],
) -> Taken {
    let code_args = spec.family != Family::Wrapper;
    let (name, attached) = match long.split_once('=') {
        Some((name, _)) => (name, true),
        None => (long, false),
    };
    let name = format!("--{name}");
    if spec.code_long.contains(&name.as_str()) {
        mark(roles, i, true);
        if spec.family == Family::Wrapper {
            all_code(roles, i);
            return Taken::RestIsCode;
        }
        if !attached {
            mark(roles, i + 1, true);
            return Taken::Args { n: 2, code: true };
        }
        return Taken::Args { n: 1, code: true };
    }
    if !attached
        && next_is_value
        && (spec.valued_long.contains(&name.as_str())
            || (code_args && !spec.flag_long.contains(&name.as_str())))
    {
        mark(roles, i + 1, code_args);
        return Taken::Args { n: 2, code: false };
    }
    Taken::Args { n: 1, code: false }
}

/// A short cluster at `i` (`letters`: after its `-` or `+`): `-ec`, `+o`,
/// `-cprint(1)`, `-Wignore`.
fn short_cluster(
    spec: &Spec,
    letters: &str,
    i: usize,
    next_is_value: bool,
    roles: &mut [Role],
) -> Taken {
    let code_args = spec.family != Family::Wrapper;
    let letters: Vec<char> = letters.chars().collect();
    for (k, c) in letters.iter().enumerate() {
        let last = k + 1 == letters.len();
        if spec.code_short.contains(*c) {
            mark(roles, i, true);
            if spec.family == Family::Wrapper {
                all_code(roles, i);
                return Taken::RestIsCode;
            }
            if last {
                // The code is the next argument, whatever it looks like.
                mark(roles, i + 1, true);
                return Taken::Args { n: 2, code: true };
            }
            return Taken::Args { n: 1, code: true };
        }
        if spec.valued_short.contains(*c) {
            if last && next_is_value {
                let data = spec.data_short.contains(*c);
                mark(roles, i + 1, code_args && !data);
                return Taken::Args { n: 2, code: false };
            }
            // The rest of the cluster is the value.
            return Taken::Args { n: 1, code: false };
        }
    }
    Taken::Args { n: 1, code: false }
}

fn all_code(roles: &mut [Role], from: usize) {
    for r in roles.iter_mut().skip(from) {
        *r = Role::Code;
    }
}

/// `NAME=VALUE` with a literal name (`env`'s assignments).
fn is_assignment(arg: &str) -> bool {
    match arg.split_once('=') {
        Some((name, _)) => {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::template::misplaced;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    const VARS: &[&str] = &["target", "from_version", "to_version", "incident", "lease"];

    #[test]
    fn placements_table() {
        // (argv, refused)
        let cases: &[(&[&str], bool)] = &[
            // The issue's case and its variants.
            (&["sh", "-c", "echo rolled back from {from_version}"], true),
            (&["bash", "-c", "x {to_version}"], true),
            (&["/bin/sh", "-c", "x {to_version}"], true),
            (&["/usr/bin/env", "sh", "-c", "x {to_version}"], true),
            (&["env", "FOO=1", "dash", "-c", "x {to_version}"], true),
            (&["env", "-i", "zsh", "-c", "x {to_version}"], true),
            (&["sh", "-ec", "x {to_version}"], true),
            (&["sh", "-e", "-c", "x {to_version}"], true),
            (&["bash", "-c", "-e", "x {to_version}"], true),
            (&["bash", "-o", "pipefail", "-c", "x {to_version}"], true),
            (&["bash", "--norc", "-c", "x {to_version}"], true),
            (&["bash", "--rcfile", "/x", "-c", "x {to_version}"], true),
            (&["bash", "--unknown", "v", "-c", "x {to_version}"], true),
            (&["ksh", "+o", "x", "-c", "{target}"], true),
            (&["mksh", "-c", "{target}"], true),
            (&["sudo", "-u", "app", "bash", "-c", "x {to_version}"], true),
            (&["sudo", "-E", "sh", "-c", "x {to_version}"], true),
            (&["timeout", "10", "sh", "-c", "x {to_version}"], true),
            (
                &["docker", "exec", "web", "sh", "-c", "x {to_version}"],
                true,
            ),
            (
                &[
                    "kubectl",
                    "exec",
                    "p",
                    "--",
                    "bash",
                    "-lc",
                    "x {to_version}",
                ],
                true,
            ),
            (&["fish", "-c", "x {to_version}"], true),
            (&["tcsh", "-c", "x {to_version}"], true),
            (&["python3", "-c", "print('{to_version}')"], true),
            (&["python3.12", "-Bc", "print('{to_version}')"], true),
            (&["perl", "-e", "1", "-e", "print '{to_version}'"], true),
            (&["perl", "-lne", "print '{to_version}'"], true),
            (&["ruby", "-e", "p '{to_version}'"], true),
            (&["node", "--eval", "x('{to_version}')"], true),
            (&["php", "-r", "echo '{to_version}';"], true),
            (&["awk", "BEGIN{print \"{to_version}\"}"], true),
            (&["ssh", "host", "deploy", "{to_version}"], true),
            (&["env", "-S", "sh -c 'x {to_version}'"], true),
            (&["flock", "/run/x.lock", "-c", "x {to_version}"], true),
            (&["flock", "-c", "x {to_version}", "/run/x.lock"], true),
            (&["su", "app", "-c", "x {to_version}"], true),
            (&["sh", "{to_version}.sh"], true),
            (&["sh", "-s", "{to_version}"], true),
            // A value never chooses the program.
            (&["{to_version}"], true),
            (&["{to_version}/bin/restart"], true),
            (&["env", "{to_version}", "-c", "x"], true),
            (&["sudo", "-u", "app", "{to_version}"], true),
            (&["timeout", "5", "{to_version}"], true),
            // Safe: positional arguments, env, plain programs.
            (&["sh", "-c", "echo \"$1\"", "sh", "{to_version}"], false),
            (&["sh", "-c", "echo \"$0\"", "{target}"], false),
            (
                &[
                    "sh",
                    "-c",
                    "echo \"$0 -> $1\"",
                    "{from_version}",
                    "{to_version}",
                ],
                false,
            ),
            (&["sh", "-ec", "echo \"$1\"", "sh", "{to_version}"], false),
            (&["sh", "/srv/rollback.sh", "{to_version}"], false),
            (&["sh", "--", "/srv/rollback.sh", "{to_version}"], false),
            (&["env", "V={to_version}", "sh", "-c", "echo \"$V\""], false),
            (
                &["sudo", "-u", "app", "/srv/bin/rollback", "{to_version}"],
                false,
            ),
            (&["timeout", "300", "deploy", "{to_version}"], false),
            (
                &[
                    "python3",
                    "-c",
                    "import sys; print(sys.argv[1])",
                    "{to_version}",
                ],
                false,
            ),
            (&["python3", "/srv/x.py", "{to_version}"], false),
            (&["perl", "-e", "print @ARGV", "{to_version}"], false),
            (&["awk", "-v", "v={to_version}", "BEGIN{print v}"], false),
            (
                &["git", "-C", "/srv/app", "checkout", "{to_version}"],
                false,
            ),
            (&["/srv/releases/v1/bin/x", "{to_version}"], false),
            (&["/srv/releases/{to_version}/bin/restart"], false),
            (
                &["docker", "exec", "web", "/app/migrate", "{to_version}"],
                false,
            ),
            (
                &["curl", "-d", "{\"v\": \"x\"}", "https://ci/{target}"],
                false,
            ),
            (&["sh", "-c", "echo {not_a_var}"], false),
        ];
        for (argv_, refused) in cases {
            let got = misplaced(&argv(argv_), VARS);
            assert_eq!(got.is_some(), *refused, "{argv_:?}: {got:?}");
        }
    }

    #[test]
    fn message_names_the_fix() {
        let e = misplaced(
            &argv(&["sh", "-c", "echo rolled back from {from_version}"]),
            VARS,
        )
        .unwrap();
        assert_eq!(
            e.to_string(),
            "{from_version} is inside the script text of a sh step (argument \"echo rolled back \
             from {from_version}\"): a value there would be read as code; pass it as an \
             environment variable (\"$ROLLBACKD_FROM_VERSION\") or as a positional argument \
             after the script ([\"sh\", \"-c\", \"echo \\\"$1\\\"\", \"sh\", \"{from_version}\"])"
        );
    }

    #[test]
    fn roles_of_the_safe_pattern() {
        use Role::*;
        assert_eq!(
            roles(&argv(&["sh", "-c", "echo \"$1\"", "sh", "{to_version}"])),
            [Program, Code, Code, Data, Data]
        );
        assert_eq!(
            roles(&argv(&[
                "env", "A=1", "bash", "-o", "pipefail", "-c", "s", "x"
            ])),
            [Program, Data, Program, Code, Code, Code, Code, Data]
        );
    }
}
