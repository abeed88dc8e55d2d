//! Validation of `[[target.rule]]`: the keys every rule has (`name`,
//! `source`, `for`, `mode`, `no_data`); the source kind validates its own
//! keys and `above` in its file (`sources/KIND.rs`, [`crate::sources::Kind`]).

use super::*;

pub(super) fn rule(cx: &mut Cx, p: &str, raw: &RawRule) -> Option<RuleConfig> {
    let name = cx
        .required(p, "name", raw.name.as_deref())
        .and_then(|n| cx.non_empty(&join(p, "name"), n));
    let for_ = cx.duration(p, "for", raw.for_.as_deref(), DEFAULT_FOR, false);
    let shadow = cx.choice(
        p,
        "mode",
        raw.mode.as_deref(),
        &[("act", false), ("shadow", true)],
    );
    let word = cx.required(p, "source", raw.source.as_deref())?;
    if !crate::sources::NAMES.contains(&word) {
        cx.err(
            join(p, "source"),
            format!("invalid source {word:?} (use {})", source_list()),
        );
        return None;
    }
    let no_data = match raw.no_data.as_deref() {
        None => Some(None),
        Some(word) => cx
            .choice(
                p,
                "no_data",
                Some(word),
                &[
                    ("hold", NoData::Hold),
                    ("ok", NoData::Ok),
                    ("breach", NoData::Breach),
                ],
            )
            .map(Some),
    };
    let input = crate::sources::RuleInput {
        above: raw.above,
        for_,
        for_written: raw.for_.is_some(),
    };
    let (source, above) = SourceSpec::validate(word, cx, p, &input, &raw.keys).flatten()?;
    Some(RuleConfig {
        name: name?,
        source,
        above,
        for_: for_?,
        no_data: no_data?,
        shadow: shadow?,
    })
}

/// `"prometheus", "probe", "host" or "alertmanager"`.
fn source_list() -> String {
    let words: Vec<String> = crate::sources::NAMES
        .iter()
        .map(|w| format!("{w:?}"))
        .collect();
    match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => words.join(""),
    }
}

/// The checks of a rule that need the daemon's poll interval (a probe
/// rule's window must be able to hold `min_samples` probes).
pub(super) fn reachable_min_samples(
    cx: &mut Cx,
    p: &str,
    rule: &RuleConfig,
    poll_interval: Duration,
) {
    rule.source.check_poll(cx, p, poll_interval);
}
