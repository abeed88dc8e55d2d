//! `rollbackd demo`: a demo service on loopback degrades after a release and
//! the real daemon code path detects it, rolls back, verifies and writes the mail.
