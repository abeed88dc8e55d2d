//! The floor under the executors: what every rollback, verification and
//! confirmation step is carried out with, and nothing that knows an
//! executor kind.
//!
//! - [`process`]: running one argv (no shell), in its own process group,
//!   output tails kept, killed with its group at the deadline;
//! - [`escaped`]: the processes that leave a step's group, found, killed
//!   and reported;
//! - [`template`]: the `{var}` grammar, shared by config validation and
//!   substitution;
//! - [`script`]: where a `{var}` may stand in a step (never in a shell's
//!   script text, never as the program), shared the same way;
//! - [`http`]: the small HTTP client under the `webhook` executor;
//! - [`plan`]: a plan's time budget, the changes an executor decided on
//!   ([`plan::Act`]) and the runner that carries them out and records them.

pub mod escaped;
pub mod http;
pub mod plan;
pub mod process;
pub mod script;
pub mod step;
pub mod template;
