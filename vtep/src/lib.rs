//! vtep
