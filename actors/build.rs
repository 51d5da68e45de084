//! Compiles proto/wasup/v1/events.proto with protox (pure Rust, no system protoc).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let file = format!("{proto_dir}/wasup/v1/events.proto");
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([&file], [proto_dir])?;
    prost_build::Config::new()
        // Their Debug hides the QR text and the message body (src/events.rs).
        .skip_debug([".wasup.v1.QrRotated", ".wasup.v1.MessageData"])
        .compile_fds(descriptors)?;
    Ok(())
}
