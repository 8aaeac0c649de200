//! Health checks and outlier detection. (Being built: see issue 2.)
