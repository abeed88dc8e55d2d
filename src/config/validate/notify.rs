//! Validation of `[notify]`: its shared keys (rate limits, `give_up_after`);
//! each outlet validates its own section in its file (`notify/OUTLET.rs`).

use super::*;

pub(super) fn notify(
    cx: &mut Cx,
    raw: RawNotify,
    state_dir: Option<PathBuf>,
) -> Option<NotifyConfig> {
    let p = "notify";
    let give_up_after = cx.duration(
        p,
        "give_up_after",
        raw.give_up_after.as_deref(),
        DEFAULT_GIVE_UP_AFTER,
        true,
    );
    let max_per_target_per_hour = per_hour(
        cx,
        "notify.max_per_target_per_hour",
        raw.max_per_target_per_hour,
        DEFAULT_MAX_PER_TARGET_PER_HOUR,
    );
    let max_per_hour = per_hour(
        cx,
        "notify.max_per_hour",
        raw.max_per_hour,
        DEFAULT_MAX_PER_HOUR,
    );
    let outlets = NotifyConfig::build(cx, raw.outlets, state_dir.as_deref());
    Some(NotifyConfig {
        give_up_after: give_up_after?,
        max_per_target_per_hour: max_per_target_per_hour?,
        max_per_hour: max_per_hour?,
        ..outlets?
    })
}

/// A positive count per hour.
pub(super) fn per_hour(
    cx: &mut Cx,
    path: &str,
    value: Option<i64>,
    default: u32,
) -> Option<NonZeroU32> {
    match value {
        None => NonZeroU32::new(default),
        Some(n) => match u32::try_from(n).ok().and_then(NonZeroU32::new) {
            Some(n) => Some(n),
            None => {
                cx.err(
                    path,
                    format!("{n} must be a positive number of notifications per hour"),
                );
                None
            }
        },
    }
}
