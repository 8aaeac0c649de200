//! Load shedding. (Being built: see issue 3.)
