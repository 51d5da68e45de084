//! whatsapp-rust adapter behind the Engine port.
