//! Retries with backoff and a retry budget. (Being built: see issue 3.)
