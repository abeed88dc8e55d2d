//! Wiring: one worker per target (poll sources, evaluate rules, step the
//! machine, journal, carry out actions), ticks, and graceful shutdown.
