//! Prometheus metrics. (Being built: see issue 2.)
