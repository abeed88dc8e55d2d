//! `[notify]` as a whole: [`NotifyConfig`], with one field per outlet
//! holding that outlet's [`Section`] and the keys every outlet shares
//! (`give_up_after`, the rate limits, the shared outbox), generated from
//! the one registration list (`outlets!` in `notify/mod.rs`), together with
//! every place `[notify]` asks its outlets something: the raw layer's key
//! check, validation, the "nobody is notified" warning, a target's routes,
//! secret files and the runtime outlets. No `_ =>` arm gives a new outlet a
//! default.
//!
//! Below `config/mod.rs` (which re-exports [`NotifyConfig`]): this file and
//! the outlet files import `config::{cx, error, route}` only.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::cx::Cx;
use crate::config::route::TargetNotify;

use super::outlet::{Outlet, Section};

/// Generates [`NotifyConfig`] and its dispatch from the registration list.
macro_rules! define_notify_config {
    ($($field:ident: $module:ident,)*) => {
        /// `[notify]`.
        #[derive(Debug, Clone)]
        pub struct NotifyConfig {
            $(
                #[doc = concat!("The `", stringify!($module), "` outlet's section: see [`super::", stringify!($module), "`].")]
                pub $field: super::$module::Section,
            )*
            /// A notification still undelivered this long after it was written is
            /// moved to `failed/` (kept, counted), so a dead channel does not retry forever.
            pub give_up_after: Duration,
            /// Per channel, at most this many notifications about one target per
            /// hour are delivered; more wait in the outbox (no storms).
            pub max_per_target_per_hour: NonZeroU32,
            /// Per channel, at most this many notifications per hour in all.
            pub max_per_hour: NonZeroU32,
            /// Where webhook notifications are queued (`outbox_dir/webhook-*`):
            /// `notify.email.outbox_dir`, else `state_dir/outbox`.
            pub outbox_dir: PathBuf,
            /// `[target.notify]` of each target that has one, by target name.
            pub routes: BTreeMap<String, TargetNotify>,
        }

        impl Default for NotifyConfig {
            fn default() -> NotifyConfig {
                NotifyConfig {
                    $($field: Default::default(),)*
                    give_up_after: Duration::from_secs(24 * 3600),
                    max_per_target_per_hour: NonZeroU32::new(20).expect("nonzero"),
                    max_per_hour: NonZeroU32::new(60).expect("nonzero"),
                    outbox_dir: PathBuf::from("/var/lib/rollbackd/outbox"),
                    routes: BTreeMap::new(),
                }
            }
        }

        /// Every outlet's key in `[notify]` and whether it is an array of
        /// tables, in registration order.
        pub const KEYS: &[(&str, bool)] = &[
            $((
                <super::$module::Section as Section>::KEY,
                <super::$module::Section as Section>::ARRAY,
            ),)*
        ];

        /// Whether `key = value` is read by one table of outlet `outlet`
        /// (a key of [`KEYS`]): serde's message when it is unknown or has
        /// the wrong type.
        pub fn check_key(outlet: &str, key: &str, value: &toml::Value) -> Result<(), String> {
            let mut one = toml::Table::new();
            one.insert(key.to_string(), value.clone());
            $(
                if outlet == <super::$module::Section as Section>::KEY {
                    return toml::Value::Table(one)
                        .try_into::<<super::$module::Section as Section>::Raw>()
                        .map(drop)
                        .map_err(|e| e.message().to_string());
                }
            )*
            Err(format!("unknown field `{key}`"))
        }

        impl NotifyConfig {
            /// Every outlet's section validated from its tables as the raw
            /// layer left them (by key, bad keys already reported and left
            /// out), and the shared outbox; the shared keys at their
            /// defaults (set by the caller). `None` when one fails.
            pub fn build(
                cx: &mut Cx,
                mut tables: BTreeMap<String, Vec<toml::Table>>,
                state_dir: Option<&Path>,
            ) -> Option<NotifyConfig> {
                $(
                    let $field = {
                        let key = <super::$module::Section as Section>::KEY;
                        let raw = read(cx, key, <super::$module::Section as Section>::ARRAY, tables.remove(key).unwrap_or_default());
                        <super::$module::Section as Section>::build(cx, raw, state_dir)
                    };
                )*
                let mut outbox_dir: Option<PathBuf> = None;
                $(
                    if let (None, Some(s)) = (&outbox_dir, &$field) {
                        outbox_dir = s.outbox_dir().map(Path::to_path_buf);
                    }
                )*
                let outbox_dir = outbox_dir.or_else(|| state_dir.map(|s| s.join("outbox")));
                Some(NotifyConfig {
                    $($field: $field?,)*
                    outbox_dir: outbox_dir?,
                    ..NotifyConfig::default()
                })
            }

            /// The "nobody is notified" warning when no outlet tells anyone.
            pub fn nobody_notified(&self) -> Option<String> {
                if [$(self.$field.notifies_anyone(),)*].contains(&true) {
                    return None;
                }
                let sections: Vec<String> = KEYS
                    .iter()
                    .map(|&(key, array)| match array {
                        true => format!("a [[notify.{key}]]"),
                        false => format!("[notify.{key}]"),
                    })
                    .collect();
                Some(format!(
                    "no notification channel configured: nobody is told about rollbacks, escalations \
                     or confirmations; add {}",
                    or_list(&sections)
                ))
            }

            /// Check a target's `[target.notify]` (key path `p`) against
            /// every outlet.
            pub fn check_route(&self, cx: &mut Cx, p: &str, route: &TargetNotify) {
                $(self.$field.check_route(cx, p, route);)*
            }

            /// Every outlet's secret files, as (key path, file).
            pub fn secret_files(&self) -> Vec<(String, PathBuf)> {
                let mut files = Vec::new();
                $(files.extend(self.$field.secret_files());)*
                files
            }

            /// Every configured outlet, in registration order (the first
            /// written item's path is what `notify` returns).
            pub fn outlets(&self) -> Vec<Box<dyn Outlet>> {
                let mut all: Vec<Box<dyn Outlet>> = Vec::new();
                $(all.extend(self.$field.outlets(&self.outbox_dir));)*
                all
            }
        }
    };
}

outlets!(define_notify_config);

/// One outlet's tables read into its raw type, each under its key path
/// (`notify.KEY`, or `notify.KEY[i]` in an array); a table serde still
/// refuses (not expected once every key passed on its own) is reported and
/// read as the default.
fn read<T: serde::de::DeserializeOwned + Default>(
    cx: &mut Cx,
    key: &str,
    array: bool,
    tables: Vec<toml::Table>,
) -> Vec<T> {
    tables
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            toml::Value::Table(t).try_into().unwrap_or_else(|e| {
                let path = match array {
                    true => format!("notify.{key}[{i}]"),
                    false => format!("notify.{key}"),
                };
                cx.err(path, e.message().to_string());
                T::default()
            })
        })
        .collect()
}

/// `a`, `a or b`, `a, b or c`.
fn or_list(items: &[String]) -> String {
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}
