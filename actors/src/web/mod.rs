//! The web side of the actors: one message per use case of the HTTP API
//! (`messages`), the validation of what callers send (`validation`), and the
//! WebActor that answers the messages (`actor`).

mod actor;
mod messages;
mod validation;

pub use actor::WebActor;
pub use messages::*;
pub use validation::*;
