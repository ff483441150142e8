//! Stream sources (written next).
