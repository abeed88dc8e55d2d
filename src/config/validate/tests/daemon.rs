//! The `[daemon]` section.

use super::*;

#[test]
fn a_for_shorter_than_the_blast_radius_window_warns_unless_settle_covers_it() {
    let mail = "[notify.email]\nfrom = \"r@h\"\nto = [\"a@example.com\"]";
    let rule =
        "name = \"p\"\nsource = \"probe\"\nurl = \"http://127.0.0.1/\"\nabove = 0.5\nfor = \"1s\"";
    let more = |n: usize| -> String {
        (1..n)
            .map(|i| {
                format!("[[target]]\nname = \"web{i}\"\n[[target.rule]]\n{rule}\n[target.rollback]\n{ROLLBACK}\n")
            })
            .collect()
    };
    let guard = "max_simultaneous_breaches = { targets = 3, fraction = 0.5, within = \"4s\" }";
    let warned = |daemon: &str, targets: usize| -> Vec<String> {
        let text = config(&[
            ("top", mail),
            ("daemon", daemon),
            ("rule", rule),
            ("after", &more(targets)),
        ]);
        let c = load_str("rollbackd.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        c.warnings
            .iter()
            .filter(|w| w.path == "daemon.max_simultaneous_breaches.within")
            .map(|w| w.message.clone())
            .collect()
    };
    let w = warned(guard, 4);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("web/p (for = \"1s\"), web1/p (for = \"1s\")"),
        "{}",
        w[0]
    );
    assert!(w[0].contains("set [daemon] settle = \"3s\""), "{}", w[0]);
    assert_eq!(warned(&format!("{guard}\nsettle = \"2s\""), 4).len(), 1);
    assert_eq!(
        warned(&format!("{guard}\nsettle = \"3s\""), 4),
        Vec::<String>::new()
    );
    // Two targets never trip a guard of three; the guard off never trips.
    assert_eq!(warned(guard, 2), Vec::<String>::new());
    assert_eq!(
        warned("max_simultaneous_breaches = 0", 4),
        Vec::<String>::new()
    );
    // The default guard is on (within 1m).
    let w = warned("", 3);
    assert!(w.len() == 1 && w[0].contains("settle = \"59s\""), "{w:?}");

    let c = load_str(
        "rollbackd.toml",
        &config(&[("daemon", "settle = \"1500ms\"")]),
    )
    .unwrap();
    assert_eq!(c.daemon.settle, Duration::from_millis(1500));
    let c = load_str("rollbackd.toml", &config(&[])).unwrap();
    assert_eq!(c.daemon.settle, Duration::ZERO, "default");
    for (value, message) in [
        (
            "\"11m\"",
            "settle = \"11m\" is too long: it delays every automatic rollback; at most \"10m\"",
        ),
        ("\"soon\"", "invalid duration \"soon\""),
    ] {
        let errs = errors(&config(&[("daemon", &format!("settle = {value}"))]));
        assert!(
            errs.iter()
                .any(|e| e.path == "daemon.settle" && e.message.contains(message)),
            "{errs:?}"
        );
    }
}
