//! Records: sessions, API keys, events. Implements the Store port.
