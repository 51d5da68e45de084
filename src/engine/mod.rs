//! whatsapp-rust adapter behind the Engine port.

pub mod store;
