//! Confirmation: how a human (or a team's own tool) answers an incident
//! that waits for approval. Every answer becomes an `Approve` or `Reject`
//! event for the decision machine; nothing here decides.
//!
//! - [`links`]: signed, single-use approve/reject links for confirmation
//!   emails (the API's `/v1/confirm/{token}` page checks them);
//! - [`command`]: `confirm_command`, run once when an incident starts
//!   waiting; its exit status is the answer.

pub mod command;
pub mod links;

pub use command::{answer, ask, BY};
pub use links::{Claim, LinkAction, LinkError, LinkKeys};
