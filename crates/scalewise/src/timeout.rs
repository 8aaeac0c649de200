//! Timeouts. (Being built: see issue 3.)
