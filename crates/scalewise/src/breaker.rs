//! Circuit breakers. (Being built: see issue 3.)
