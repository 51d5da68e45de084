//! A local WhatsApp server and virtual phones (feature `simulator`).
