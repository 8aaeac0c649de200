//! Bulkhead: a concurrency limit with a bounded wait queue. (Being built: see issue 3.)
