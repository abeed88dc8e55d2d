//! Client commands.
