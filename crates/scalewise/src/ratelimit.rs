//! Rate limiting. (Being built: see issue 3.)
