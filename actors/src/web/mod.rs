//! The web side of the actors: one message per use case of the HTTP API
//! (`messages`), the validation of what callers send (`validation`), and the
//! WebActor that answers the messages (`actor`).

mod actor;
mod messages;
mod proxy_guard;
mod settings;
mod settings_actor;
mod validation;

pub use actor::WebActor;
pub use messages::*;
pub use proxy_guard::*;
pub use settings::*;
pub use validation::*;
