//! One type per balancing algorithm; each implements [`Balancer`](super::Balancer).
mod ketama;
mod least_conn;
mod maglev;
mod p2c;
mod peak_ewma;
mod random;
mod round_robin;
mod wrr;

pub use ketama::Ketama;
pub use least_conn::LeastConn;
pub use maglev::Maglev;
pub use p2c::PowerOfTwo;
pub use peak_ewma::PeakEwma;
pub use random::WeightedRandom;
pub use round_robin::RoundRobin;
pub use wrr::WeightedRoundRobin;
