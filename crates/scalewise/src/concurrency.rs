//! Adaptive concurrency limits. (Being built: see issue 3.)
